"""The block benchmarks under ``torch.compile`` (inductor): the fused branch block, its floor, the static
Conv-BN-ReLU and each kernel-mixing family, compiled, beside their eager times, so that the fused/floor and
family/static ratios are also known with launch overhead and small-op costs fused away.

Fewer configurations than the eager suite (every compilation costs 10-50 s on a 2-core CPU): the repeated block of
three stages, batch 64 (also 256 on CUDA), K as each backbone uses it (2 in ``dynconv_cifar_tiny``, 4 in
``dynconv_cifar``), channels-last. Each group holds one configuration and one path, named ``... eager`` or ``...
compiled``; ``python -m benchmarks.report`` makes the same ratio tables. The default test run compiles one
configuration of two implementations at batch 2, so the path cannot rot.
"""
import torch

from benchmarks.blocks import IMPLEMENTATIONS, pass_function, timed_rounds
from benchmarks.test_block_speed import STAGE_SHAPES

FAMILIES = ("fused", "floor", "static", "condconv", "dyconv", "odconv")
# (stage, K): the backbone's own K
CONFIGURATIONS = [("tiny.s1", 2), ("tiny.s2", 2), ("cifar.s2", 4)]
MODES = ("forward", "forward_backward")
PATHS = ("eager", "compiled")
DISABLED = (("tiny.s3", 2), "forward_backward", ("fused", "floor"))  # what the default test run executes, batch 2


def _cases(device_type: str, timing: bool):
    if not timing:
        configuration, mode, families = DISABLED
        for family in families:
            for path in PATHS:
                yield (*configuration, 2, mode, family, path)
        return
    for shape, k in CONFIGURATIONS:
        for batch in (64, 256) if device_type == "cuda" else (64,):
            for mode in MODES:
                for family in FAMILIES:
                    for path in PATHS:
                        yield shape, k, batch, mode, family, path


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        options = metafunc.config.getoption
        timing = not (options("benchmark_disable") and not options("benchmark_enable"))
        cases = list(_cases(options("--device").split(":")[0], timing))
        metafunc.parametrize("case", cases, ids=["-".join(map(str, c)) for c in cases])


def test_block_compiled(benchmark, device, timing_enabled, time_budget, case):
    shape, k, batch, mode, family, path = case
    in_channels, out_channels, size = STAGE_SHAPES[shape]
    benchmark.group = f"{shape} {in_channels}->{out_channels}@{size} B={batch} K={k} {mode} channels_last {path}"
    benchmark.extra_info.update(shape=shape, batch=batch, k=k, mode=mode, memory_format="channels_last",
                                implementation=family, path=path, device=str(device), torch=torch.__version__,
                                gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    torch.manual_seed(0)
    module = IMPLEMENTATIONS[family](in_channels, out_channels, k).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, in_channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    forward = torch.compile(module) if path == "compiled" else module
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    with autocast:
        run = pass_function(forward, x, mode, device)  # forward_backward compiles here, forward at the first call
        for _ in range(2 if timing_enabled else 0):  # compilation, allocator and algorithm choice
            run()
        rounds = timed_rounds(run, time_budget) if timing_enabled else 1
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=1 if timing_enabled else 0)
