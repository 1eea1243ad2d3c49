"""Every validation rule raises ValueError naming the argument and the value."""
import pytest
import timm
import torch

from dynconv import (
    CondConv2d,
    DyConv2d,
    DynamicBlock,
    DynConvNetCfg,
    ODConv2d,
    RoutingHead,
    create_block,
    mix_branches,
    temperature_schedule,
)
from dynconv.models import MlpClassifierHead


@pytest.mark.parametrize("kwargs,words", [
    (dict(num_experts=0), ["num_experts", "0"]),
    (dict(num_experts=-2), ["num_experts", "-2"]),
    (dict(kernel_size=2), ["kernel_size", "odd", "2"]),
    (dict(kernel_size=0), ["kernel_size", "0"]),
    (dict(kernel_size=3.0), ["kernel_size", "3.0"]),
    (dict(num_experts=3, kernel_size=(3, 5)), ["kernel_size", "num_experts=3", "(3, 5)"]),
    (dict(num_experts=2, kernel_size=(1, 3), padding=1), ["padding", "None", "(1, 3)"]),
    (dict(padding=-1), ["padding", "-1"]),
    (dict(stride=0), ["stride", "0"]),
    (dict(in_channels=0), ["in_channels", "0"]),
    (dict(out_channels=-4), ["out_channels", "-4"]),
    (dict(temperature=0.0), ["temperature", "0.0"]),
])
def test_dynamic_block_rejects_bad_arguments(kwargs, words):
    arguments = dict(in_channels=4, out_channels=8, num_experts=2) | kwargs
    with pytest.raises(ValueError) as error:
        DynamicBlock(**arguments)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("kwargs,words", [
    (dict(gate="relu"), ["gate", "relu", "softmax"]),
    (dict(rd_channels=0), ["rd_channels", "0"]),
    (dict(rd_ratio=0.0), ["rd_ratio", "0.0"]),
    (dict(rd_ratio=0.25, rd_divisor=0), ["rd_divisor", "0"]),
    (dict(temperature=float("inf")), ["temperature", "inf"]),
])
def test_routing_head_rejects_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as error:
        RoutingHead(4, 2, **kwargs)
    for word in words:
        assert word in str(error.value)


def test_set_temperature_rejects_non_positive():
    with pytest.raises(ValueError, match="temperature"):
        RoutingHead(4, 2).set_temperature(-1.0)


@pytest.mark.parametrize("kwargs,words", [
    (dict(widths=(32, 0)), ["widths", "0"]),
    (dict(widths=(32, -8)), ["widths", "-8"]),
    (dict(widths=()), ["widths"]),
    (dict(depths=(1, 0)), ["depths", "0"]),
    (dict(widths=(8, 16, 32), depths=(1, 1)), ["per-segment", "widths", "depths"]),
    (dict(widths=(8, 16), depths=(1, 1), num_experts=(2, 2, 2)), ["per-segment", "num_experts"]),
    (dict(num_experts=0), ["num_experts", "0"]),
    (dict(kernel_size=4), ["kernel_size", "4"]),
    (dict(num_experts=2, kernel_size=(3, 5, 7)), ["kernel_size", "(3, 5, 7)"]),
    (dict(block="dense"), ["block", "dense"]),
    (dict(downsample="avgpool"), ["downsample", "avgpool"]),
    (dict(head="transformer"), ["head", "transformer"]),
    (dict(stem_width=-1), ["stem_width", "-1"]),
])
def test_model_config_rejects_bad_values(kwargs, words):
    arguments = dict(widths=(8, 16), depths=(1, 1), num_experts=2) | kwargs
    with pytest.raises(ValueError) as error:
        DynConvNetCfg(**arguments)
    for word in words:
        assert word in str(error.value)


def test_create_model_reports_bad_overrides():
    with pytest.raises(ValueError, match="num_experts must be a positive integer, got 0"):
        timm.create_model("dynconv_cifar_tiny", num_experts=0)
    with pytest.raises(ValueError, match="drop_rate"):
        timm.create_model("dynconv_cifar_tiny", drop_rate=1.5)


def test_create_block_rejects_unknown_kind_and_multi_size_static():
    with pytest.raises(ValueError, match="block kind must be one of .* got 'mlp'"):
        create_block("mlp", 3, 4)
    with pytest.raises(ValueError, match="static block has one kernel"):
        create_block("static", 3, 4, kernel_size=(1, 3))


def test_mlp_head_without_pooling_needs_no_classes():
    with pytest.raises(ValueError, match="pool_type=''"):
        MlpClassifierHead(8, 10, hidden_features=16, pool_type="")


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 3, 32, 32), (2, 4, 32, 32), (2, 1, 32, 32)])
def test_model_rejects_wrong_input_shape(shape):
    model = timm.create_model("dynconv_cifar_tiny")
    with pytest.raises(ValueError) as error:
        model(torch.randn(*shape))
    assert "(B, 3, H, W)" in str(error.value) and str(tuple(shape)) in str(error.value)


@pytest.mark.parametrize("shape", [(4, 8, 8), (2, 5, 8, 8)])
def test_block_rejects_wrong_input_shape(shape):
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        DynamicBlock(4, 8)(torch.randn(*shape))


@pytest.mark.parametrize("layer", [CondConv2d, DyConv2d, ODConv2d])
@pytest.mark.parametrize("kwargs,words", [
    (dict(kernel_size=4), ["kernel_size", "odd", "4"]),
    (dict(kernel_size=0), ["kernel_size", "0"]),
    (dict(num_experts=0), ["num_experts", "0"]),
    (dict(groups=3), ["groups=3", "in_channels=4"]),
    (dict(stride=0), ["stride", "0"]),
    (dict(dilation=0), ["dilation", "0"]),
    (dict(padding=-1), ["padding", "-1"]),
    (dict(mode="fast"), ["mode", "fast"]),
    (dict(temperature=-1.0), ["temperature", "-1.0"]),
    (dict(rd_ratio=float("nan")), ["rd_ratio", "nan"]),
    (dict(rd_channels=0), ["rd_channels", "0"]),
    (dict(rd_ratio=0.5, rd_divisor=-8), ["rd_divisor", "-8"]),
])
def test_kernel_mixing_layers_reject_bad_arguments(layer, kwargs, words):
    with pytest.raises(ValueError) as error:
        layer(4, 8, **kwargs)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("kwargs,words", [
    (dict(num_classes=-1), ["num_classes", "-1"]),
    (dict(num_classes=2.5), ["num_classes", "2.5"]),
    (dict(num_classes="10"), ["num_classes", "'10'"]),
    (dict(global_pool="median"), ["global_pool", "median"]),
    (dict(in_chans=0), ["in_chans", "0"]),
    (dict(drop_rate=-0.1), ["drop_rate", "-0.1"]),
])
@pytest.mark.parametrize("name", ["dynconv_cifar", "dynconv_cifar_tiny"])  # both head kinds
def test_model_arguments_are_rejected_by_name(name, kwargs, words):
    with pytest.raises(ValueError) as error:
        timm.create_model(name, **kwargs)
    for word in words:
        assert word in str(error.value)


LAYERS = {
    "branch": lambda: DynamicBlock(4, 6, num_experts=2),
    "condconv": lambda: CondConv2d(4, 6),
    "dyconv": lambda: DyConv2d(4, 6),
    "odconv": lambda: ODConv2d(4, 6),
    "odconv_grouped_k1": lambda: ODConv2d(4, 6, kernel_size=1, groups=2, num_experts=1),
    "condconv_block": lambda: create_block("condconv", 4, 6),
}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("mode", ["auto", "grouped", "bmm", "outputs"])
def test_every_layer_takes_an_empty_batch_as_torch_layers_do(layer, mode):
    module = LAYERS[layer]()
    if hasattr(module, "mode"):
        if mode == "outputs" and isinstance(module, ODConv2d):
            pytest.skip("ODConv has no output mixing")
        module.mode = mode
    elif mode != "auto":
        pytest.skip("one mode only")
    for train in (True, False):
        x = torch.randn(0, 4, 8, 8, requires_grad=True)
        out = module.train(train)(x)
        assert out.shape == (0, 6, 8, 8)
        out.sum().backward()


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_names_the_dtype_it_expects(layer):
    module = LAYERS[layer]().eval()
    with pytest.raises(ValueError, match=r"dtype torch.float32.*got torch.float64"):
        module(torch.randn(2, 4, 8, 8, dtype=torch.float64))
    assert module.double()(torch.randn(2, 4, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("name", ["dynconv_cifar_fast", "dynconv_cifar_tiny", "dynconv_cifar"])
def test_an_image_below_the_networks_minimum_is_one_clear_message(name):
    model = timm.create_model(name).eval()
    size = model.min_input_size
    assert model(torch.randn(1, 3, size, size)).shape == (1, 10)  # the minimum itself works
    for shape in ((1, 1), (size - 1, size), (size, size - 1)):
        with pytest.raises(ValueError, match=f"{name} needs images of at least {size}x{size} pixels"):
            model(torch.randn(1, 3, *shape))
    with pytest.raises(ValueError, match="at least"):
        model.forward_intermediates(torch.randn(1, 3, 1, 1))


def test_an_unknown_activation_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"act_layer must be .* timm's activation names \(.*gelu.*\), got 'gelo'"):
        timm.create_model("dynconv_cifar_tiny", act_layer="gelo")
    with pytest.raises(ValueError, match="got 'gelo'"):
        create_block("dcd", 4, 8, act_layer="gelo")


def test_mix_branches_with_mismatched_shapes_is_one_clear_message():
    with pytest.raises(ValueError, match=r"K dividing the channels, got branches \(2, 7, 3, 3\) and weights \(2, 2\)"):
        mix_branches(torch.randn(2, 7, 3, 3), torch.rand(2, 2))
    with pytest.raises(ValueError, match="the same B"):
        mix_branches(torch.randn(3, 8, 3, 3), torch.rand(2, 2))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -1.0])
def test_temperature_schedules_reject_non_finite_and_non_positive_values(value):
    for kwargs in ({"start": value}, {"end": value}, {"anneal_epochs": value}):
        with pytest.raises(ValueError, match="finite numbers > 0"):
            temperature_schedule(**kwargs)
