"""CondConv2d, DyConv2d and ODConv2d against the papers' formulas (tests/paper_reference.py, which shares no code
with the layers) and our CondConv against timm's CondConv2d given the same weights and routing."""
import pytest
import torch
from timm.layers import CondConv2d as TimmCondConv2d

from dynconv import CondConv2d, DyConv2d, ODConv2d
from tests import paper_reference

# (in_channels, out_channels, kernel_size, stride, groups, num_experts)
GEOMETRIES = [(4, 6, 3, 1, 1, 3), (6, 4, 3, 2, 2, 2), (8, 8, 5, 1, 4, 4), (3, 5, 1, 2, 1, 3), (4, 4, 3, 1, 1, 1),
              (6, 6, 3, 2, 6, 2)]  # the last one depthwise
MODES = ["grouped", "bmm", "outputs"]


def _randomise(layer: torch.nn.Module, seed: int) -> None:
    """Fresh random parameters (not the init scheme, so that every term of the formulas matters)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def _layer_and_input(layer_cls, geometry, mode: str, seed: int, **kwargs):
    """A layer of ``geometry`` with fresh random parameters, and a fresh random (3, C_in, 9, 9) input."""
    in_channels, out_channels, kernel_size, stride, groups, num_experts = geometry
    layer = layer_cls(in_channels, out_channels, kernel_size, stride, groups=groups, num_experts=num_experts,
                      mode=mode, **kwargs)
    _randomise(layer, seed)
    x = torch.randn(3, in_channels, 9, 9, generator=torch.Generator().manual_seed(seed + 100))
    return layer, x


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_condconv_matches_the_paper(geometry, mode):
    _, _, kernel_size, stride, groups, _ = geometry
    layer, x = _layer_and_input(CondConv2d, geometry, mode, seed=1, bias=True, temperature=1.5)
    expected = paper_reference.condconv(
        x, layer.experts, layer.bias, layer.routing.fc.weight, layer.routing.fc.bias, stride, kernel_size // 2, groups,
        temperature=1.5)
    torch.testing.assert_close(layer(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_dynamic_convolution_matches_the_paper(geometry, mode):
    _, _, kernel_size, stride, groups, _ = geometry
    layer, x = _layer_and_input(DyConv2d, geometry, mode, seed=2, bias=True, temperature=3.0)
    fc1, fc2 = layer.routing.hidden[0], layer.routing.fc
    expected = paper_reference.dynamic_convolution(
        x, layer.experts, layer.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias, stride, kernel_size // 2, groups,
        temperature=3.0)
    torch.testing.assert_close(layer(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("mode", ["grouped", "bmm"])
def test_odconv_matches_the_paper(geometry, mode):
    _, _, kernel_size, stride, groups, _ = geometry
    layer, x = _layer_and_input(ODConv2d, geometry, mode, seed=3, temperature=2.0)
    attention = layer.attention

    def head(linear):
        return None if linear is None else (linear.weight, linear.bias)

    expected = paper_reference.odconv(
        x, layer.experts, attention.fc[0].weight, attention.fc[0].bias, head(attention.channel),
        head(attention.filter), head(attention.spatial), head(attention.kernel), stride, kernel_size // 2, groups,
        temperature=2.0)
    torch.testing.assert_close(layer(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_condconv_equals_timm_condconv2d_with_the_same_weights(geometry, mode):
    in_channels, out_channels, kernel_size, stride, groups, num_experts = geometry
    ours, x = _layer_and_input(CondConv2d, geometry, mode, seed=4, bias=True)
    theirs = TimmCondConv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups,
                            bias=True, num_experts=num_experts)
    with torch.no_grad():
        # both store the experts flat, (K, C_out * C_in / groups * k * k), and one bias per expert
        theirs.weight.copy_(ours.weight)
        theirs.bias.copy_(ours.bias)
    # timm's layer takes the routing weights as an argument (its EfficientNet blocks compute them outside)
    routing = torch.sigmoid(x.mean(dim=(2, 3)) @ ours.routing.fc.weight.T + ours.routing.fc.bias)
    torch.testing.assert_close(ours(x), theirs(x, routing), atol=1e-4, rtol=1e-4)
