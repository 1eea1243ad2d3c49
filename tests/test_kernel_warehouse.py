"""KernelWarehouse (KWConv2d) against an oracle written from the paper's formulas (tests/kw_reference.py), in train and
eval mode, every computation mode, a warehouse shared by layers of different shapes, and the sharing itself."""
import copy

import pytest
import torch
from torch import nn

from dynconv import set_init_blend
from dynconv.layers import KWConv2d, KWLinear, SharingScope, create_block
from tests import kw_reference as ref

# layers of different shapes in one range: (C_in, C_out, k, stride)
SHARED = [(16, 32, 3, 1), (32, 32, 3, 2), (32, 64, 1, 1)]
# (cell_num_ratio, cell_inplane_ratio, cell_outplane_ratio, nonlocal_basis_ratio): the paper's 1x, 1/2x, 1/4x, 2x
# settings and the ResNet-50 1/2x config's basis
SETTINGS = [(1.0, 1.0, 1.0, 1.0), (0.5, 0.5, 0.5, 1.0), (0.25, 0.5, 0.5, 1.0), (2.0, 1.0, 1.0, 1.0),
            (0.5, 0.5, 0.5, 0.25)]


def _range(setting, dtype=torch.float64):
    cell_num, inplane, outplane, basis = setting
    scope = SharingScope()
    layers = [KWConv2d(c_in, c_out, k, stride, cell_num_ratio=cell_num, cell_inplane_ratio=inplane,
                       cell_outplane_ratio=outplane, nonlocal_basis_ratio=basis, sharing=scope, dtype=dtype)
              for c_in, c_out, k, stride in SHARED]
    scope.close()
    with torch.no_grad():  # non-trivial running statistics for eval mode
        for layer in layers:
            layer.attention.norm.running_mean.uniform_(-0.5, 0.5)
            layer.attention.norm.running_var.uniform_(0.5, 1.5)
            layer.attention.norm.weight.uniform_(0.5, 1.5)
            layer.attention.norm.bias.uniform_(-0.5, 0.5)
    return layers


def _oracle(layers, setting, index, x, train, blend):
    cell_num, inplane, outplane, _ = setting
    shapes = [(c_out, c_in, k) for c_in, c_out, k, _ in SHARED]
    cell_out, cell_in, mixtures, num_cells = ref.warehouse_layout(shapes, cell_num, inplane, outplane)
    start = 0
    for earlier in range(index):
        start = ref.assignment(mixtures[earlier], num_cells, start, cell_num)[1]
    fixed, _ = ref.assignment(mixtures[index], num_cells, start, cell_num)
    layer = layers[index]
    params = {name: value for name, value in layer.attention.state_dict().items()}
    alpha = ref.attention(x, params, train, num_cells, mixtures[index], blend, fixed,
                          local=(start, int(cell_num * mixtures[index])))
    cells = layers[0].warehouse.cells
    c_in, c_out, k, stride = SHARED[index]
    return ref.kw_conv(x, alpha, cells, c_out, k, stride, cell_out, cell_in)


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("mode", ["grouped", "bmm", "patches"])
def test_every_layer_of_a_shared_warehouse_matches_the_paper(setting, train, mode):
    torch.manual_seed(0)
    layers = _range(setting)
    for index, layer in enumerate(layers):
        layer.train(train)
        layer.set_mode(mode)
        blend = 0.3 if index == 1 else 0.0
        layer.attention.set_init_blend(blend)
        x = torch.randn(4, SHARED[index][0], 9, 9, dtype=torch.float64)
        torch.testing.assert_close(layer(x), _oracle(layers, setting, index, x, train, blend))


def test_the_oracle_is_sensitive_to_what_it_checks():
    torch.manual_seed(0)
    layers = _range(SETTINGS[1])
    layer = layers[1].eval()
    x = torch.randn(2, 32, 9, 9, dtype=torch.float64)
    expected = _oracle(layers, SETTINGS[1], 1, x, train=False, blend=0.0)
    with torch.no_grad():
        layers[0].warehouse.cells[5, 3] += 0.5  # one weight of one shared cell
    assert not torch.allclose(layer(x), expected)


def test_the_warehouse_is_shared_once_in_state_dict_copies_and_devices():
    scope = SharingScope()
    model = nn.Sequential(KWConv2d(8, 16, sharing=scope), nn.ReLU(), KWConv2d(16, 16, sharing=scope))
    scope.close()
    assert [k for k in model.state_dict() if "cells" in k] == ["0.warehouse.cells"]
    assert [name for name, _ in model.named_parameters() if "cells" in name] == ["0.warehouse.cells"]
    twin = copy.deepcopy(model)
    assert twin[2].shared_warehouse is twin[0].warehouse and twin[0].warehouse is not model[0].warehouse
    half = model.to(torch.float64)
    assert half[2].shared_warehouse.cells.dtype == torch.float64
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    model.eval()
    restored = nn.Sequential(KWConv2d(8, 16, sharing=(s := SharingScope())), nn.ReLU(), KWConv2d(16, 16, sharing=s))
    s.close()
    restored.to(torch.float64).load_state_dict(model.state_dict())
    torch.testing.assert_close(restored.eval()(x), model(x))


def test_channels_last_and_bf16_autocast_work_in_every_mode():
    torch.manual_seed(0)
    layer = KWConv2d(8, 16, cell_num_ratio=0.5, cell_inplane_ratio=0.5, cell_outplane_ratio=0.5).eval()
    x = torch.randn(3, 8, 7, 7)
    expected = layer(x)
    layer = layer.to(memory_format=torch.channels_last)
    for mode in ("grouped", "bmm", "patches"):
        layer.set_mode(mode)
        torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.isfinite(layer(x)).all()


def test_an_empty_batch_and_eval_batch_independence():
    torch.manual_seed(0)
    layer = KWConv2d(8, 8).eval()
    for mode in ("grouped", "bmm", "patches"):
        layer.set_mode(mode)
        assert layer(torch.randn(0, 8, 5, 5)).shape == (0, 8, 5, 5)
    x = torch.randn(5, 8, 5, 5)
    torch.testing.assert_close(layer(x)[2:3], layer(x[2:3]))


def test_init_blend_one_makes_each_layer_a_static_convolution_of_its_own_cells():
    torch.manual_seed(0)
    layers = _range(SETTINGS[0], dtype=torch.float32)
    assert set_init_blend(nn.ModuleList(layers), 1.0) == 3
    layer = layers[1].eval()
    x = torch.randn(2, 32, 8, 8)
    # every cell of the layer is exactly its own warehouse cell, whatever the input
    kernel = layer.kernels(layer.attention(x))
    torch.testing.assert_close(kernel[0], kernel[1])
    torch.testing.assert_close(layer(x), nn.functional.conv2d(x, kernel[0], stride=2, padding=1))


def test_batchnorm_folds_into_a_scale_beside_the_shared_cells():
    torch.manual_seed(0)
    block = create_block("kw", 8, 16, act_layer="relu").eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
        block.bn.weight.uniform_(-1, 1)
    x = torch.randn(2, 8, 6, 6)
    before = block(x)
    block.reparameterize()
    torch.testing.assert_close(block(x), before, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="folded"):
        block.train()


def test_training_with_a_batch_of_one_is_one_clear_message():
    layer = KWConv2d(8, 8)
    with pytest.raises(ValueError, match="batches of 2 or more"):
        layer(torch.randn(1, 8, 5, 5))
    free = KWConv2d(8, 8, attention_norm=None)
    free(torch.randn(1, 8, 5, 5)).sum().backward()
    assert all(p.grad is not None for p in free.parameters())


def test_kw_linear_is_a_one_by_one_kernel():
    torch.manual_seed(0)
    linear = KWLinear(32, 10, cell_inplane_ratio=0.5).eval()
    x = torch.randn(4, 32)
    kernel = linear.conv.kernels(linear.conv.attention(x[:, :, None, None]))
    expected = torch.einsum("boi,bi->bo", kernel[:, :, :, 0, 0], x) + linear.conv.bias
    torch.testing.assert_close(linear(x), expected)


@pytest.mark.parametrize("kwargs, message", [
    (dict(cell_inplane_ratio=0.3), "does not divide"),
    (dict(cell_num_ratio=0.0), "cell_num_ratio"),
    (dict(mode="patches", groups=2), "mode must be one of"),
    (dict(nonlocal_basis_ratio=-1.0), "nonlocal_basis_ratio"),
])
def test_impossible_cell_geometries_and_bad_arguments_are_clear_errors(kwargs, message):
    mode = kwargs.pop("mode", None)
    with pytest.raises(ValueError, match=message):
        layer = KWConv2d(20, 20, **kwargs)
        if mode:
            layer.set_mode(mode)


def test_layers_of_one_range_must_agree_on_the_warehouse_and_close_before_use():
    scope = SharingScope()
    first = KWConv2d(8, 8, sharing=scope)
    with pytest.raises(ValueError, match="share one warehouse"):
        KWConv2d(8, 8, cell_num_ratio=2.0, sharing=scope)
    with pytest.raises(RuntimeError, match="close the SharingScope"):
        first(torch.randn(2, 8, 4, 4))


def test_cells_spanning_whole_kernels_give_the_same_output_in_every_mode():
    torch.manual_seed(0)
    scope = SharingScope()
    layers = [KWConv2d(8, 16, spatial_partition=False, sharing=scope, dtype=torch.float64),
              KWConv2d(16, 16, stride=2, spatial_partition=False, sharing=scope, dtype=torch.float64)]
    scope.close()
    assert layers[0].warehouse.cell_shape == (16, 8, 3, 3)
    x = torch.randn(3, 16, 9, 9, dtype=torch.float64)
    outputs = []
    for mode in ("grouped", "bmm", "patches"):
        layers[1].set_mode(mode)
        outputs.append(layers[1](x))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0])
