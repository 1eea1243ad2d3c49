"""Where and how a run computes: the device, the precision, threads, determinism and the C heap."""
import ctypes
import ctypes.util
import os
from contextlib import nullcontext
from typing import ContextManager

import torch

from .config import TrainConfig

# glibc's mallopt parameters (malloc.h) and the size below which blocks come from the heap and freed memory stays
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_REUSE_BYTES = 2 ** 30


def reuse_freed_memory() -> bool:
    """Make the C allocator serve blocks under 1 GiB from its heap and keep freed memory there, and say whether it
    could (glibc's ``mallopt``; elsewhere nothing changes and the answer is False).

    By default glibc maps every block over its mmap threshold (at most 32 MiB) afresh and unmaps it when it is freed,
    so each training step's large activations are new pages that the kernel faults in and zeroes; with the heap kept
    a freed block's pages are reused (``tests/test_heap_reuse.py``). The process then holds its peak memory between
    steps. The recorded effect on the recipe's speed is in the docs' lab notebook
    (``docs/notebook/recipe_2026-12-01.md``: the ``cpu`` preset's seeds before and after ``--reuse-memory``, and the
    anchor with and without it).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_REUSE_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_REUSE_BYTES))


def resolve_device(name: str) -> torch.device:
    """The device ``--device`` names; ``ValueError`` if it is malformed or not on this machine.

    ``auto`` is CUDA when available, else the CPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} asked for CUDA, but torch.cuda.is_available() is False")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: the recipe runs on cpu or cuda")
    return device


def uses_bf16(config: TrainConfig, device: torch.device) -> bool:
    """Whether the run computes in bf16: ``--amp auto`` picks it on CUDA and on CPUs with native bf16 (AVX-512 BF16
    or AMX); elsewhere bf16 is emulated and, measured on a 2-core AVX2 EPYC, 8-11x slower than float32
    (``benchmarks/results/cpu_precision.json``)."""
    if config.amp != "auto":
        return config.amp == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_context(config: TrainConfig, device: torch.device) -> ContextManager:
    """The autocast context of the run's forward passes (a no-op in float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(config, device) else nullcontext()


def configure_execution(config: TrainConfig, device: torch.device) -> None:
    """Threads, the C heap's reuse of freed memory (``--reuse-memory``), deterministic algorithms, and on CUDA cuDNN
    autotuning and TF32 (when not deterministic)."""
    if config.reuse_memory:
        reuse_freed_memory()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
