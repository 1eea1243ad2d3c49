"""The anchor: airbench94's own training code (the ``airbench`` package's ``train94``) on the local CIFAR-10 copy.

Anchor code, not library code: the network, optimizer, schedule, augmentation, weight averaging and TTA are the
package's, unchanged. Only the device plumbing is patched, and only off CUDA:

- the package loads ``cifar10/{train,test}.pt`` relative to the working directory (downloading with torchvision when
  missing): this script writes them there from the local copy, in the package's format, and runs in that folder;
- ``CifarLoader(..., gpu=0)`` maps the data to ``cuda:0``: off CUDA it maps to the CPU, and the images it stores in
  fp16 are widened to float32 (same values) because CPU convolutions take float32 or bf16;
- ``make_net94`` calls ``net.half().cuda()``: off CUDA both are no-ops, so the weights stay float32, and the whole
  run is under bf16 autocast when ``--precision bf16`` (on CUDA the package's fp16 weights are used as they are),
  except the whitening initialisation, which computes its covariance in float32 as on CUDA. That autocast does not
  cache its bf16 weight casts (``cache_enabled=False``): the cache lives as long as the context, so over a whole run
  every forward would use the first step's weights (the anchor trained at chance that way);
- ``torch.cuda.Event`` / ``torch.cuda.synchronize`` time the run: off CUDA a wall clock replaces them.

    python -m benchmarks.airbench_anchor --runs 1 --out benchmarks/results/airbench94_cpu.json
    python -m benchmarks.airbench_anchor --device cuda --runs 5 --out "$OUT/airbench94_cuda.json"
    python -m benchmarks.airbench_anchor --epochs 8.7 --out runs/airbench94_cut.json   # the anchor cut to a budget

The record holds accuracy without and with airbench's TTA (level 2), training time (the package's own measure:
whitening initialisation and training epochs, no evaluation) and provenance.
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from torch import nn

from cifar10_recipe.data import CLASSES, load_cifar10
from cifar10_recipe.execution import reuse_freed_memory
from dynconv.records import provenance

HERE = Path(__file__).resolve().parent


class WallClockEvent:
    """``torch.cuda.Event(enable_timing=True)`` for the CPU: ``record()`` and ``elapsed_time()`` in milliseconds."""

    def __init__(self, enable_timing: bool = True):
        self.time = 0.0

    def record(self, stream=None) -> None:
        self.time = time.perf_counter()

    def elapsed_time(self, end: "WallClockEvent") -> float:
        return 1000 * (end.time - self.time)


@contextlib.contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def write_package_data(folder: Path, data_dir: Optional[str], subset: int, test_subset: int) -> None:
    """``folder/cifar10/{train,test}.pt`` in airbench's format (uint8 NHWC images, int64 labels, class names)."""
    data = load_cifar10(data_dir).subset(subset, test_subset)
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for name, images, labels in (("train", data.train_images, data.train_labels),
                                 ("test", data.test_images, data.test_labels)):
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels, "classes": list(CLASSES)},
                   folder / "cifar10" / f"{name}.pt")


@contextlib.contextmanager
def device_plumbing(device: torch.device, precision: str) -> Iterator[None]:
    """The package's CUDA-only plumbing, redirected to ``device`` (nothing is patched on CUDA)."""
    import airbench.utils as utils

    if device.type == "cuda":
        yield
        return

    class CpuCifarLoader(utils.CifarLoader):
        def __init__(self, *args, gpu=None, **kwargs):
            super().__init__(*args, gpu="cpu", **kwargs)
            self.images = self.images.float()  # the package's fp16 values, widened

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(utils, "CifarLoader", CpuCifarLoader))
        stack.enter_context(patched(torch.cuda, "Event", WallClockEvent))
        stack.enter_context(patched(torch.cuda, "synchronize", lambda *args, **kwargs: None))
        stack.enter_context(patched(nn.Module, "cuda", lambda self, *args, **kwargs: self))
        stack.enter_context(patched(nn.Module, "half", lambda self: self))
        if precision == "bf16":
            stack.enter_context(patched(utils, "init_whitening_conv", float32_whitening(utils.init_whitening_conv)))
            stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False))
        yield


def float32_whitening(init_whitening_conv: Callable[..., None]) -> Callable[..., None]:
    """The package's whitening initialisation with autocast off, as it runs on CUDA: it takes the patches'
    covariance in float32; under bf16 autocast that matmul rounds it to bf16, which changes the filters (by up to 4 on
    random images) and made a whole-run-autocast anchor train at 10% on an AMX Xeon."""
    return torch.autocast("cpu", enabled=False)(init_whitening_conv)


def run_once(device: torch.device, precision: str, epochs: Optional[float]) -> Dict[str, float]:
    """One ``train94`` run; accuracy with airbench's own ``evaluate`` at TTA levels 0 and 2."""
    import airbench
    import airbench.utils as utils

    with device_plumbing(device, precision):
        loader = utils.CifarLoader("cifar10", train=True, batch_size=1024,
                                   aug=airbench.lib_airbench94.hyp["aug"], altflip=True)
        test_loader = utils.CifarLoader("cifar10", train=False, batch_size=2000)
        kwargs = {} if epochs is None else {"epochs": epochs}
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model = airbench.train94(loader, verbose=False, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        accuracy = utils.evaluate(model, test_loader, tta_level=0)
        accuracy_tta = utils.evaluate(model, test_loader, tta_level=2)
        eval_s = time.perf_counter() - start
    return {"test_acc": accuracy, "test_acc_tta": accuracy_tta, "train_s": train_s, "eval_s": eval_s}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--precision", choices=("auto", "float32", "bf16"), default="auto",
                        help="off CUDA: float32, or the whole run under bf16 autocast; auto picks bf16 only where the "
                             "CPU computes it natively (on CUDA the package's fp16 is used as it is)")
    parser.add_argument("--runs", type=int, default=1, help="runs (seeds drawn by the package, as in its own main)")
    parser.add_argument("--epochs", type=float,
                        help="override train94's 9.9 epochs: a dry run, or the anchor cut to another budget (its "
                             "schedule scales with the length)")
    parser.add_argument("--subset", type=int, default=0, help="training images (0: all; for a dry run only)")
    parser.add_argument("--test-subset", type=int, default=0, help="test images (0: all; for a dry run only)")
    parser.add_argument("--data-dir", help="CIFAR-10 root (default: $CIFAR10_ROOT, else ./data)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/airbench-anchor"),
                        help="where the package's cifar10/*.pt files are written and the runs happen")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--reuse-memory", action="store_true",
                        help="keep freed memory in the C heap, as our recipe does by default (--reuse-memory there): "
                             "environment, not training code, so that both are timed alike")
    parser.add_argument("--out", type=Path, required=True, help="the JSON record to write")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    reused = reuse_freed_memory() if args.reuse_memory else False
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    if device.type == "cuda":
        precision = "fp16 (the package's own)"
    origin = provenance(device, None if argv is None else ["-m", "benchmarks.airbench_anchor", *argv])
    write_package_data(args.work_dir, args.data_dir, args.subset, args.test_subset)
    results = []
    cwd = os.getcwd()
    os.chdir(args.work_dir)
    try:
        for run in range(args.runs):
            results.append(run_once(device, precision, args.epochs))
            print(json.dumps({"run": run, **results[-1]}), flush=True)
    finally:
        os.chdir(cwd)
    record = {
        "anchor": "airbench94 (the airbench package's train94, unchanged; device plumbing patched off CUDA)",
        "airbench": version("airbench"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision, "threads": torch.get_num_threads(), "epochs": args.epochs or 9.9,
        "reuse_memory": reused,
        "subset": args.subset, "test_subset": args.test_subset, "runs": results,
        "test_acc_mean": statistics.mean(r["test_acc"] for r in results),
        "test_acc_tta_mean": statistics.mean(r["test_acc_tta"] for r in results),
        "train_s_median": statistics.median(r["train_s"] for r in results),
        "provenance": {**origin, "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"airbench94 on {record['device']} ({precision}): {100 * record['test_acc_mean']:.2f}% "
          f"(TTA {100 * record['test_acc_tta_mean']:.2f}%), training {record['train_s_median']:.1f}s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
