"""Forward and forward+backward time of the branch-mixing block against its floor and the naive K-conv loop.

Each group is one configuration (stage shape, batch, K, pass, memory format); within it every implementation of
:mod:`blocks` runs on the same input. ``python -m benchmarks.report`` turns the JSON into ratio tables.
"""
import pytest
import torch

from benchmarks.blocks import IMPLEMENTATIONS, INFERENCE_ONLY, pass_function, timed_rounds

# (C_in, C_out, H): the repeated block of every stage of dynconv_cifar and of dynconv_cifar_tiny
STAGE_SHAPES = {
    "cifar.s1": (64, 64, 32), "cifar.s2": (128, 128, 16), "cifar.s3": (256, 256, 8), "cifar.s4": (512, 512, 4),
    "tiny.s1": (32, 32, 16), "tiny.s2": (64, 64, 8), "tiny.s3": (128, 128, 4),
}
BATCHES = (1, 64, 256)
DISABLED_BATCH = 2  # when timing is off (the default test run) every benchmark runs once at this batch


def _configurations(device_type: str):
    for shape in STAGE_SHAPES:
        for batch in BATCHES:
            for k in (2, 4):
                for mode in ("forward", "forward_backward"):
                    formats = ("channels_last",) if device_type == "cuda" else (
                        ("contiguous", "channels_last") if batch == 64 else ("contiguous",))
                    for memory_format in formats:
                        yield shape, batch, k, mode, memory_format


def pytest_generate_tests(metafunc):
    if "configuration" in metafunc.fixturenames:
        device_type = metafunc.config.getoption("--device").split(":")[0]
        configurations = list(_configurations(device_type))
        options = metafunc.config.getoption
        if options("benchmark_disable") and not options("benchmark_enable"):
            # the default test run executes each distinct configuration once, at a small batch
            configurations = list(dict.fromkeys((shape, DISABLED_BATCH, *rest)
                                                for shape, _, *rest in configurations))
        metafunc.parametrize("configuration", configurations,
                             ids=["-".join(map(str, c)) for c in configurations])


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_block(benchmark, device, timing_enabled, time_budget, configuration, implementation):
    shape, batch, k, mode, memory_format = configuration
    if mode == "forward_backward" and implementation in INFERENCE_ONLY:
        pytest.skip(f"{implementation} is inference only")
    in_channels, out_channels, size = STAGE_SHAPES[shape]
    batch = batch if timing_enabled else DISABLED_BATCH
    benchmark.group = f"{shape} {in_channels}->{out_channels}@{size} B={batch} K={k} {mode} {memory_format}"
    benchmark.extra_info.update(shape=shape, batch=batch, k=k, mode=mode, memory_format=memory_format,
                                implementation=implementation, device=str(device), torch=torch.__version__,
                                gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    torch.manual_seed(0)
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    module = IMPLEMENTATIONS[implementation](in_channels, out_channels, k).to(device, memory_format=fmt)
    x = torch.randn(batch, in_channels, size, size, device=device).contiguous(memory_format=fmt)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    with autocast:
        run = pass_function(module, x, mode, device)
        if not timing_enabled:
            benchmark(run)
            return
        for _ in range(2):  # warm-up: allocator, cuDNN/oneDNN algorithm choice
            run()
        benchmark.pedantic(run, rounds=timed_rounds(run, time_budget), warmup_rounds=1)
