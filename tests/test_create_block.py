"""create_block's registry of block kinds and the routing widths (timm's rd_* convention)."""
import importlib

import pytest
import timm
import torch
from timm.layers import ConvNormAct
from torch import nn

from dynconv import DyConv2d, ODConv2d, RoutingHead, create_block
from dynconv.layers import DynamicBlock, KernelMixingBlock, block_kinds, make_rd_channels, register_block


def test_builtin_kinds_build_their_blocks():
    assert {"static", "branch", "condconv", "dyconv", "odconv", "dcd"} <= set(block_kinds())
    assert isinstance(create_block("branch", 4, 8, num_experts=2), DynamicBlock)
    assert isinstance(create_block("branch", 4, 8, num_experts=1), ConvNormAct)
    assert isinstance(create_block("static", 4, 8, rd_ratio=0.5, temperature=2.0), ConvNormAct)
    for kind in ("condconv", "dyconv", "odconv"):
        block = create_block(kind, 4, 8, num_experts=3)
        assert isinstance(block, KernelMixingBlock) and block.conv.num_experts == 3


def test_a_registered_kind_joins_create_block_and_the_models(monkeypatch):
    # the package exports the function under the module's name, so reach the module itself
    create_block_module = importlib.import_module("dynconv.layers.create_block")
    monkeypatch.setattr(create_block_module, "_BLOCK_KINDS", dict(create_block_module._BLOCK_KINDS))

    @register_block("plain_conv")
    def plain_conv(in_channels, out_channels, *, stride, device=None, dtype=None, **kwargs):
        return nn.Conv2d(in_channels, out_channels, 3, stride, 1, device=device, dtype=dtype)

    assert "plain_conv" in block_kinds()
    assert isinstance(create_block("plain_conv", 3, 5), nn.Conv2d)
    model = timm.create_model("dynconv_cifar_tiny", block="plain_conv")
    assert sum(isinstance(m, nn.Conv2d) and not isinstance(m, ConvNormAct) for m in model.stages.modules()) == 6
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="'plain_conv' is registered already"):
        register_block("plain_conv")(plain_conv)


def test_unknown_kind_and_misplaced_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"block kind must be one of \('static', 'branch'.*got 'dense'"):
        create_block("dense", 4, 8)
    with pytest.raises(ValueError, match=r"unexpected arguments for a branch block: \['mode'\]"):
        create_block("branch", 4, 8, num_experts=2, mode="bmm")
    with pytest.raises(ValueError, match=r"unexpected arguments for a dcd block: \['mode'\]"):
        create_block("dcd", 4, 8, mode="bmm")
    with pytest.raises(ValueError, match=r"'dyconv' block with num_experts=2 cannot pool between"):
        create_block("dyconv", 4, 8, num_experts=2, pool_before_norm=True)
    with pytest.raises(ValueError, match="one kernel size"):
        create_block("odconv", 4, 8, num_experts=2, kernel_size=(3, 5))
    with pytest.raises(ValueError, match=r"unexpected arguments for a static block: \['dilation'\]"):
        create_block("static", 4, 8, dilation=2)
    with pytest.raises(ValueError, match="non-empty string"):
        register_block("")


def test_rd_channels_follow_the_papers_and_timm():
    assert make_rd_channels(64) is None
    assert make_rd_channels(64, rd_ratio=0.25) == 16
    assert make_rd_channels(64, rd_ratio=0.25, rd_channels=7) == 7
    assert make_rd_channels(100, rd_ratio=0.25, rd_divisor=8) == 24  # timm's make_divisible: 25 -> 24
    # the papers' widths: Dynamic Convolution C/4 (at least 4), ODConv C/16 (at least 16)
    assert DyConv2d(512, 8).routing.hidden[0].out_features == 128
    assert DyConv2d(3, 8).routing.hidden[0].out_features == 4
    assert ODConv2d(512, 8).attention.fc[0].out_features == 32
    assert ODConv2d(64, 8).attention.fc[0].out_features == 16
    assert ODConv2d(64, 8, rd_channels=5).attention.fc[0].out_features == 5
    assert isinstance(RoutingHead(64, 4).hidden, nn.Identity)
    assert RoutingHead(64, 4, rd_ratio=0.5).hidden[0].out_features == 32


def test_model_config_routes_rd_ratio_to_every_dynamic_block():
    for name in ("dynconv_cifar_tiny", "dynconv_cifar_odconv"):
        model = timm.create_model(name, rd_ratio=0.5)
        firsts = [m for n, m in model.named_modules() if n.endswith(("routing.hidden.0", "attention.fc.0"))]
        assert len(firsts) == (6 if name == "dynconv_cifar_tiny" else 8)
        floor = 16 if name == "dynconv_cifar_odconv" else 1
        assert [m.out_features for m in firsts] == [max(m.in_features // 2, floor) for m in firsts]
