"""benchmarks/airbench_anchor.py's device plumbing: what it patches off CUDA must keep the package's computation."""

import pytest
import torch
from torch import nn

from benchmarks.airbench_anchor import device_plumbing, float32_whitening


def test_whitening_under_bf16_autocast_is_the_float32_whitening():
    """Under the anchor's whole-run bf16 autocast the package's whitening takes its patch covariance in float32, as
    on CUDA: bit for bit the weights it gets with autocast off (bf16 rounding changes them by up to 4 here)."""
    utils = pytest.importorskip("airbench.utils")
    images = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected, patched = nn.Conv2d(3, 24, 2, bias=False), nn.Conv2d(3, 24, 2, bias=False)
    utils.init_whitening_conv(expected, images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        float32_whitening(utils.init_whitening_conv)(patched, images)
    assert torch.isfinite(patched.weight).all()
    torch.testing.assert_close(patched.weight, expected.weight, rtol=0, atol=0)


def test_the_whole_run_autocast_sees_every_weight_update():
    """The anchor's bf16 autocast spans the whole run, where torch's default would cast each weight to bf16 once and
    reuse that copy until the context ends: the forward passes would keep the first step's weights while the
    optimizer updates the float32 ones (the anchor trained at chance that way on an AMX Xeon). After an update, the
    next forward must use the updated weight."""
    pytest.importorskip("airbench.utils")
    layer = nn.Linear(8, 4)
    inputs = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    with device_plumbing(torch.device("cpu"), "bf16"):
        before = layer(inputs)
        with torch.no_grad():
            layer.weight.add_(1.0)
        after = layer(inputs)
    assert before.dtype == torch.bfloat16  # autocast is on
    expected = nn.functional.linear(inputs.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16())
    torch.testing.assert_close(after, expected)
