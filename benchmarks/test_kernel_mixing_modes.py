"""The three exact ways to run a per-sample kernel (grouped conv, output mixing, batched matmul), to justify the
``mode="auto"`` choice of :mod:`dynconv.layers.kernel_mixing` per device."""
import pytest
import torch

from benchmarks.blocks import synchronize
from dynconv.layers import DyConv2d, ODConv2d

SHAPES = {"s1": (64, 64, 32), "s2": (128, 128, 16), "s3": (256, 256, 8), "tiny.s1": (32, 32, 16)}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("layer,mode", [("dyconv", "grouped"), ("dyconv", "outputs"), ("dyconv", "bmm"),
                                        ("odconv", "grouped"), ("odconv", "bmm")])
@pytest.mark.parametrize("pass_", ["forward", "forward_backward"])
def test_mode(benchmark, device, timing_enabled, shape, layer, mode, pass_):
    in_channels, out_channels, size = SHAPES[shape]
    batch = 64 if timing_enabled else 2
    benchmark.group = f"modes {shape} {in_channels}->{out_channels}@{size} B={batch} K=4 {pass_}"
    benchmark.extra_info.update(implementation=f"{layer}_{mode}", device=str(device), torch=torch.__version__)
    torch.manual_seed(0)
    cls = DyConv2d if layer == "dyconv" else ODConv2d
    module = cls(in_channels, out_channels, num_experts=4, mode=mode).to(device)
    x = torch.randn(batch, in_channels, size, size, device=device, requires_grad=pass_ != "forward")

    def run():
        if pass_ == "forward":
            with torch.inference_mode():
                module(x)
        else:
            module(x).sum().backward()
        synchronize(device)

    benchmark.pedantic(run, rounds=5 if timing_enabled else 1, warmup_rounds=1 if timing_enabled else 0)
