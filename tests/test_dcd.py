"""DCDConv2d against the paper's formula (materialised per-sample kernels, tests/dcd_reference.py), its BatchNorm
folding, and the checks every dynamic family passes."""
import pytest
import timm
import torch
from timm.layers import BatchNormAct2d
from timm.utils import reparameterize_model

from dynconv import DCDConv2d, RoutingRecorder, attention_statistics, create_block, set_temperature
from dynconv.layers import KernelMixingBlock
from tests.dcd_reference import dcd_conv, dcd_params
from tests.reference import randomize_batchnorms

# (in_channels, out_channels, kernel_size, stride, groups, dilation, pool_size, batch, size)
GEOMETRIES = [
    (8, 12, 3, 1, 1, 1, 1, 3, 9),
    (12, 8, 3, 2, 2, 1, 2, 2, 11),
    (16, 16, 5, 1, 4, 1, 1, 2, 7),
    (6, 10, 1, 1, 1, 1, 1, 4, 6),
    (8, 8, 3, 1, 1, 2, 1, 3, 10),
    (16, 16, 3, 2, 16, 1, 2, 2, 8),
]


def _layer(geometry, **kwargs) -> DCDConv2d:
    in_channels, out_channels, kernel_size, stride, groups, dilation, pool_size, *_ = geometry
    layer = DCDConv2d(in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups,
                      pool_size=pool_size, temperature=2.0, **kwargs)
    with torch.no_grad():  # heads large enough that Lambda and Phi really vary between samples
        for head in (layer.attention.scale, layer.attention.phi):
            head.weight.mul_(4.0)
    return randomize_batchnorms(layer, seed=1)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("train", [True, False])
def test_matches_the_per_sample_kernels_of_the_formula(geometry, train):
    torch.manual_seed(0)
    layer = _layer(geometry, bias=True).train(train)
    *_, batch, size = geometry
    x = torch.randn(batch, geometry[0], size, size, requires_grad=True)
    out = layer(x)
    reference = dcd_conv(x, dcd_params(layer), stride=geometry[3], dilation=geometry[5], groups=geometry[4],
                         pool_size=geometry[6], temperature=2.0, training=train)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    grad = torch.randn_like(out)
    (input_grad,) = torch.autograd.grad(out, x, grad)
    (reference_grad,) = torch.autograd.grad(reference, x, grad)
    torch.testing.assert_close(input_grad, reference_grad, atol=1e-4, rtol=1e-4)


def test_the_oracle_is_sensitive_to_what_it_checks():
    # a guard on the oracle itself: dropping the low-rank path or the channel scale changes its answer
    torch.manual_seed(0)
    layer = _layer(GEOMETRIES[0]).eval()
    x = torch.randn(3, 8, 9, 9)
    params = dcd_params(layer)
    kwargs = dict(stride=1, dilation=1, groups=1, pool_size=1, temperature=2.0, training=False)
    full = dcd_conv(x, params, **kwargs)
    assert not torch.allclose(full, dcd_conv(x, {**params, "p": torch.zeros_like(params["p"])}, **kwargs), atol=1e-3)
    assert not torch.allclose(full, dcd_conv(x, {**params, "scale": torch.zeros_like(params["scale"])}, **kwargs),
                              atol=1e-3)
    torch.testing.assert_close(layer(x), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES[:3], ids=str)
def test_reparameterize_folds_every_batchnorm_exactly(geometry):
    torch.manual_seed(0)
    block = randomize_batchnorms(KernelMixingBlock(_layer(geometry, bias=True), BatchNormAct2d(geometry[1])), seed=2)
    x = torch.randn(4, geometry[0], 9, 9)
    # timm folds the children of what it is given
    block, folded = torch.nn.Sequential(block), reparameterize_model(torch.nn.Sequential(block))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), block(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError, match="cannot train"):
        folded[0].conv.train()


def test_eval_output_of_a_sample_ignores_the_rest_of_the_batch():
    torch.manual_seed(0)
    block = randomize_batchnorms(create_block("dcd", 8, 12), seed=0)
    x = torch.randn(5, 8, 7, 7)
    torch.testing.assert_close(block(x), torch.cat([block(x[i:i + 1]) for i in range(5)]), atol=1e-5, rtol=1e-5)


def test_batch_size_one_trains_and_reaches_every_parameter():
    torch.manual_seed(0)
    block = create_block("dcd", 8, 12).train()
    block(torch.randn(1, 8, 6, 6)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_empty_batch_channels_last_and_bf16():
    torch.manual_seed(0)
    block = create_block("dcd", 8, 12).eval()
    assert block(torch.randn(0, 8, 6, 6)).shape == (0, 12, 6, 6)
    x = torch.randn(3, 8, 6, 6)
    torch.testing.assert_close(block(x.contiguous(memory_format=torch.channels_last)), block(x), atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = block(x)
    torch.testing.assert_close(low.float(), block(x), atol=0.1, rtol=0.1)
    block_bf16 = create_block("dcd", 8, 12, dtype=torch.bfloat16)
    assert block_bf16(x.bfloat16()).dtype == torch.bfloat16


def test_a_large_temperature_makes_the_layer_static():
    torch.manual_seed(0)
    layer = _layer(GEOMETRIES[0]).eval()
    set_temperature(layer, 1e6)
    x = torch.randn(4, 8, 9, 9)
    scale, phi = layer.attention(x)
    torch.testing.assert_close(scale, torch.ones_like(scale), atol=1e-4, rtol=0)
    assert phi.abs().max() < 1e-4


def test_routing_recorder_and_attention_statistics_summarise_lambda_and_phi():
    torch.manual_seed(0)
    model = timm.create_model("dynconv_cifar_fast_dcd").eval()
    with RoutingRecorder(model) as recorder:
        model(torch.randn(6, 3, 32, 32))
    assert recorder.weights == {}
    attentions = recorder.attentions
    assert set(attentions) == {"stages.0.1.conv", "stages.1.1.conv", "stages.2.1.conv"}
    scale, phi = attentions["stages.2.1.conv"]["scale"], attentions["stages.2.1.conv"]["phi"]
    assert scale.shape == (6, 256) and phi.shape == (6, 16 * 16)
    stats = attention_statistics(scale)
    assert stats.num_samples == 6 and stats.size == 256 and 0 < stats.mean < 2 and stats.spread > 0
    constant = attention_statistics(torch.ones(6, 4))
    assert constant.spread == 0 and constant.relative_spread == 0


def test_bad_arguments_are_rejected_with_a_message():
    with pytest.raises(ValueError, match="'same' padding"):
        DCDConv2d(4, 6, 3, padding=0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DCDConv2d(4, 6, 2)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        DCDConv2d(4, 6, groups=3)
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        DCDConv2d(4, 6, rank=0)
    with pytest.raises(ValueError, match=r"unexpected arguments for a dcd block: \[.mode.\]"):
        create_block("dcd", 4, 6, mode="bmm")
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 4, H, W\)"):
        DCDConv2d(4, 6)(torch.randn(2, 5, 8, 8))
