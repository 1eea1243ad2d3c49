"""Every validation rule raises ValueError naming the argument and the value."""
import pytest
import timm
import torch

from dynconv import DynamicBlock, DynConvNetCfg, RoutingHead, create_block
from dynconv.models import MlpClassifierHead


@pytest.mark.parametrize("kwargs,words", [
    (dict(num_convs=0), ["num_convs", "0"]),
    (dict(num_convs=-2), ["num_convs", "-2"]),
    (dict(kernel_size=2), ["kernel_size", "odd", "2"]),
    (dict(kernel_size=0), ["kernel_size", "0"]),
    (dict(kernel_size=3.0), ["kernel_size", "3.0"]),
    (dict(num_convs=3, kernel_size=(3, 5)), ["kernel_size", "num_convs=3", "(3, 5)"]),
    (dict(num_convs=2, kernel_size=(1, 3), padding=1), ["padding", "None", "(1, 3)"]),
    (dict(padding=-1), ["padding", "-1"]),
    (dict(stride=0), ["stride", "0"]),
    (dict(in_channels=0), ["in_channels", "0"]),
    (dict(out_channels=-4), ["out_channels", "-4"]),
    (dict(temperature=0.0), ["temperature", "0.0"]),
])
def test_dynamic_block_rejects_bad_arguments(kwargs, words):
    arguments = dict(in_channels=4, out_channels=8, num_convs=2) | kwargs
    with pytest.raises(ValueError) as error:
        DynamicBlock(**arguments)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("kwargs,words", [
    (dict(gate="relu"), ["gate", "relu", "softmax"]),
    (dict(hidden_channels=0), ["hidden_channels", "0"]),
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
    (dict(widths=(8, 16), depths=(1, 1), num_convs=(2, 2, 2)), ["per-segment", "num_convs"]),
    (dict(num_convs=0), ["num_convs", "0"]),
    (dict(kernel_size=4), ["kernel_size", "4"]),
    (dict(num_convs=2, kernel_size=(3, 5, 7)), ["kernel_size", "(3, 5, 7)"]),
    (dict(block="dense"), ["block", "dense"]),
    (dict(downsample="avgpool"), ["downsample", "avgpool"]),
    (dict(head="transformer"), ["head", "transformer"]),
    (dict(stem_width=-1), ["stem_width", "-1"]),
])
def test_model_config_rejects_bad_values(kwargs, words):
    arguments = dict(widths=(8, 16), depths=(1, 1), num_convs=2) | kwargs
    with pytest.raises(ValueError) as error:
        DynConvNetCfg(**arguments)
    for word in words:
        assert word in str(error.value)


def test_create_model_reports_bad_overrides():
    with pytest.raises(ValueError, match="num_convs must be a positive integer, got 0"):
        timm.create_model("dynconv_cifar_tiny", num_convs=0)
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
