"""Kernel-mixing layers (CondConv2d, DyConv2d, ODConv2d) against a per-sample loop oracle, in every mode."""
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from timm.utils import reparameterize_model
from torch import nn

from dynconv import CondConv2d, DyConv2d, DynamicBlock, ODConv2d, create_block, set_temperature, temperature_schedule
from dynconv.layers import KernelMixingBlock, MixedKernelConv2d
from dynconv.layers.kernel_mixing import GROUPED_MIN_PIXELS_CPU, select_mode, unfold_channels_last
from tests.reference import randomize_batchnorms

# (in_channels, out_channels, kernel_size, stride, groups, batch, size)
SHAPES = [
    (4, 6, 3, 1, 1, 3, 9),
    (6, 4, 3, 2, 2, 2, 11),
    (8, 8, 5, 1, 4, 1, 7),
    (3, 5, 1, 1, 1, 4, 6),
]
LINEAR_MODES = ["grouped", "outputs", "bmm"]


def _reference(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Each sample convolved on its own with the kernel its attentions give it."""
    outputs = []
    for sample in x.split(1):
        if isinstance(layer, ODConv2d):
            channel, filters, spatial, kernel = layer.attention(sample)
            weight = (kernel[0, :, None, None, None, None] * layer.experts).sum(0) if kernel is not None else (
                layer.experts[0])
            if spatial is not None:
                weight = weight * spatial.view(1, 1, *layer.kernel_size)
            out = F.conv2d(sample * channel[:, :, None, None], weight, None, layer.stride, layer.padding,
                           layer.dilation, layer.groups) * filters[:, :, None, None]
        else:
            routing = layer.routing(sample)[0]
            weight = (routing[:, None, None, None, None] * layer.experts).sum(0)
            bias = None if layer.bias is None else (routing[:, None] * layer.bias).sum(0)
            out = F.conv2d(sample, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        outputs.append(out)
    return torch.cat(outputs)


def _layers(shape, mode):
    in_channels, out_channels, kernel_size, stride, groups, _, _ = shape
    common = dict(kernel_size=kernel_size, stride=stride, groups=groups, num_experts=3, mode=mode)
    layers = [CondConv2d(in_channels, out_channels, bias=True, **common),
              DyConv2d(in_channels, out_channels, temperature=2.0, **common)]
    if mode != "outputs" or groups == 1:  # ODConv's output mixing is for ungrouped layers
        layers.append(ODConv2d(in_channels, out_channels, **common))
        layers.append(ODConv2d(in_channels, out_channels, **{**common, "num_experts": 1}))
    return layers


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mode", LINEAR_MODES)
@pytest.mark.parametrize("train", [True, False])
def test_every_mode_matches_the_per_sample_loop(shape, mode, train):
    torch.manual_seed(0)
    for layer in _layers(shape, mode):
        layer.train(train)
        *_, batch, size = shape
        x = torch.randn(batch, shape[0], size, size, requires_grad=True)
        out = layer(x)
        reference = _reference(layer, x)
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5, msg=f"{type(layer).__name__} {mode}")
        grad = torch.randn_like(out)
        (input_grad,) = torch.autograd.grad(out, x, grad)
        (reference_grad,) = torch.autograd.grad(reference, x, grad)
        torch.testing.assert_close(input_grad, reference_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer_cls", [CondConv2d, DyConv2d, ODConv2d])
def test_eval_output_of_a_sample_ignores_the_rest_of_the_batch(layer_cls):
    torch.manual_seed(0)
    block = create_block(layer_cls.__name__.lower().replace("2d", ""), 4, 6, num_experts=3).eval()
    x = torch.randn(5, 4, 8, 8)
    alone = torch.cat([block(x[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(block(x), alone, atol=1e-5, rtol=1e-5)


def test_single_kernel_dyconv_equals_a_static_conv():
    torch.manual_seed(0)
    layer = DyConv2d(4, 6, num_experts=1, stride=2)
    static = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
    static.weight.data.copy_(layer.experts[0])
    x = torch.randn(3, 4, 9, 9)
    torch.testing.assert_close(layer(x), static(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["condconv", "dyconv", "odconv"])
def test_batch_size_one_trains_and_reaches_every_parameter(kind):
    torch.manual_seed(0)
    block = create_block(kind, 3, 4, num_experts=2).train()
    block(torch.randn(1, 3, 6, 6)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_channels_last_input_works_in_every_mode():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8)
    for mode in LINEAR_MODES:
        for layer in _layers((4, 6, 3, 1, 1, 3, 8), mode):
            expected = layer(x)
            out = layer(x.contiguous(memory_format=torch.channels_last))
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("geometry", [((3, 3), (1, 1), (1, 1), (1, 1)), ((3, 1), (2, 1), (1, 0), (1, 1)),
                                      ((3, 3), (2, 2), (2, 2), (2, 2)), ((1, 1), (1, 1), (0, 0), (1, 1))], ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_patches_are_unfolds_patches_reordered(geometry, channels_last):
    kernel, stride, padding, dilation = geometry
    x = torch.randn(2, 5, 9, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C * kh * kw, L)
    expected = expected.view(2, 5, kernel[0] * kernel[1], -1).permute(0, 3, 2, 1).reshape(2, expected.shape[-1], -1)
    torch.testing.assert_close(unfold_channels_last(x, kernel, stride, padding, dilation), expected, rtol=0, atol=0)
    # its own gradient (each tap's slice added back) against autograd's through F.unfold
    x = x.double().requires_grad_()
    grad = torch.randn(expected.shape, dtype=torch.float64)
    ours, = torch.autograd.grad(unfold_channels_last(x, kernel, stride, padding, dilation), x, grad)
    reference = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    reference = reference.view(2, 5, kernel[0] * kernel[1], -1).permute(0, 3, 2, 1).reshape(grad.shape)
    torch.testing.assert_close(ours, torch.autograd.grad(reference, x, grad)[0])


@pytest.mark.parametrize("mode", LINEAR_MODES)
def test_odconv_runs_on_the_meta_device(mode):
    # the multiply-add counts of the docs run models on meta tensors, where autocast does not exist
    layer = ODConv2d(4, 6, num_experts=2, mode=mode).to("meta")
    assert layer(torch.empty(2, 4, 8, 8, device="meta")).shape == (2, 6, 8, 8)


@pytest.mark.parametrize("mode", LINEAR_MODES)
def test_odconv_under_autocast_matches_the_float32_oracle(mode):
    # every form builds its patches or per-sample kernels in the autocast dtype: the result must stay the bf16
    # rounding of the exact one
    torch.manual_seed(0)
    layer = ODConv2d(8, 6, num_experts=3, mode=mode).train()
    x = torch.randn(4, 8, 7, 7).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _reference(layer, x), atol=0.05, rtol=0.02)
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("mode", ["grouped", "outputs", "bmm"])
def test_compiled_layer_does_not_recompile_for_every_batch_size(mode):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    layer = DyConv2d(4, 6, num_experts=2, mode=mode)
    compiled = torch.compile(layer, backend=counter)
    for batch in (2, 3, 4, 5, 7):
        x = torch.randn(batch, 4, 8, 8)
        torch.testing.assert_close(compiled(x), layer(x), atol=1e-5, rtol=1e-5)
    # one static compile, at most one dynamic recompile, none after
    assert counter.frame_count <= 2


def test_auto_mode_follows_the_cost_model_per_device():
    cpu, accelerator = torch.empty(1), torch.empty(1, device="meta")  # meta stands in for any non-CPU device
    pixels = GROUPED_MIN_PIXELS_CPU

    def choose(x, dense="outputs", kernel=590_000, extra=65_000, pixels=pixels, mode="auto", macs=0, per_group=64):
        return select_mode(mode, x, dense=dense, kernel_numel=kernel, dense_numel=extra, output_pixels=pixels,
                           dense_extra_macs=macs, in_channels_per_group=per_group)

    # per-sample kernels that outweigh the dense form's extra activations: the dense form
    assert choose(cpu) == "outputs"
    assert choose(cpu, dense="patches") == "patches"
    # small kernels: a per-sample form, grouped over enough pixels, else the batched matmul
    assert choose(cpu, kernel=37_000, extra=262_000) == "grouped"
    assert choose(cpu, kernel=37_000, extra=262_000, pixels=pixels - 1) == "bmm"
    assert choose(cpu, dense=None, pixels=pixels - 1) == "bmm"
    # the dense form's extra MACs count too: output mixing of 256->256 3x3 (K = 4) pays at 7x7 maps, not at 14x14
    kernel = 256 * 256 * 9
    assert choose(cpu, kernel=kernel, extra=4 * 256 * 49, pixels=49, macs=3 * kernel * 49) == "outputs"
    assert choose(cpu, kernel=kernel, extra=4 * 256 * 196, pixels=196, macs=3 * kernel * 196) == "grouped"
    # depthwise layers convolve grouped at any map size
    assert choose(cpu, dense=None, pixels=pixels - 1, per_group=1) == "grouped"
    # a GPU: the dense form wherever a family has one, else the grouped convolution
    assert choose(accelerator, kernel=37_000, extra=262_000) == "outputs"
    assert choose(accelerator, dense=None) == "grouped"
    assert choose(accelerator, mode="bmm") == "bmm"


def test_temperature_schedule_and_setter():
    schedule = temperature_schedule(30.0, 1.0, anneal_epochs=10)
    assert schedule(0) == 30.0 and schedule(10) == 1.0 and schedule(25) == 1.0
    assert schedule(2.5) == pytest.approx(30.0 - 29.0 * 0.25)
    model = nn.Sequential(DyConv2d(4, 4), ODConv2d(4, 4), CondConv2d(4, 4))
    assert set_temperature(model, 7.0) == 3
    assert model[0].routing.temperature.item() == model[1].attention.temperature.item() == 7.0
    with pytest.raises(ValueError, match="anneal_epochs"):
        temperature_schedule(30.0, 1.0, anneal_epochs=0)


def test_layers_reject_bad_arguments():
    with pytest.raises(ValueError, match="groups=3 must divide in_channels=4"):
        DyConv2d(4, 6, groups=3)
    with pytest.raises(ValueError, match="CondConv2d mode must be one of"):
        CondConv2d(4, 6, mode="fast")
    with pytest.raises(ValueError, match="output mixing of a grouped ODConv is not implemented"):
        ODConv2d(4, 6, groups=2, mode="outputs")
    with pytest.raises(ValueError, match="num_experts must be a positive integer, got 0"):
        MixedKernelConv2d(4, 6, 3, 1, None, 1, 1, False, 0, None, "auto")
    with pytest.raises(ValueError, match="one kernel size"):
        create_block("dyconv", 4, 6, kernel_size=(1, 3))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 4, H, W\)"):
        DyConv2d(4, 6)(torch.randn(2, 5, 8, 8))


@pytest.mark.parametrize("kind", ["condconv", "dyconv", "odconv"])
@pytest.mark.parametrize("stride, groups", [(1, 1), (2, 2)])
def test_kernel_mixing_blocks_fold_their_batchnorm_exactly(kind, stride, groups):
    torch.manual_seed(0)
    kwargs = {} if kind == "odconv" else {"bias": True}
    conv = {"condconv": CondConv2d, "dyconv": DyConv2d, "odconv": ODConv2d}[kind](
        8, 12, 3, stride, groups=groups, num_experts=3, **kwargs)
    block = randomize_batchnorms(KernelMixingBlock(conv, BatchNormAct2d(12, act_layer="gelu")), seed=1)
    x = torch.randn(5, 8, 9, 9)
    with torch.no_grad():
        before = block(x)
        block.reparameterize()
        block.reparameterize()  # a second call changes nothing
        after = block(x)
    assert block.is_fused and not any(isinstance(m, torch.nn.BatchNorm2d) for m in block.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["branch", "condconv", "dyconv", "odconv"])
def test_reparameterize_model_folds_every_family_and_the_folded_model_refuses_to_train(kind):
    model = randomize_batchnorms(timm.create_model("dynconv_cifar_tiny", block=kind), seed=1)
    x = torch.randn(3, 3, 32, 32)
    folded = reparameterize_model(model)
    assert all(block.is_fused for block in folded.modules() if isinstance(block, (KernelMixingBlock, DynamicBlock)))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="cannot train"):
        folded.train()


def test_fold_affine_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        CondConv2d(2, 4).fold_affine(torch.ones(3), torch.zeros(4))


@pytest.mark.parametrize("layer", [CondConv2d, DyConv2d, ODConv2d])
def test_default_padding_keeps_the_size_with_dilation(layer):
    conv = layer(4, 6, 3, dilation=2, num_experts=2)
    assert conv.padding == (2, 2)
    assert conv(torch.randn(2, 4, 9, 9)).shape == (2, 6, 9, 9)


def test_a_block_with_another_norm_trains_and_refuses_to_fold():
    block = KernelMixingBlock(CondConv2d(4, 8, num_experts=2), nn.GroupNorm(2, 8)).train()
    block(torch.randn(2, 4, 5, 5)).sum().backward()
    with pytest.raises(ValueError, match="needs a BatchNorm"):
        block.reparameterize()

