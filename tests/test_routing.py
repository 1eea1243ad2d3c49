import math

import pytest
import timm
import torch

from dynconv import ODConv2d, RoutingHead, RoutingRecorder, routing_modules, set_temperature
from dynconv.layers import Router
from dynconv.routing_stats import routing_statistics


def test_softmax_weights_are_a_distribution_per_sample():
    weights = RoutingHead(6, 4)(torch.randn(5, 6, 3, 3))
    assert weights.shape == (5, 4)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))


def test_sigmoid_gate_gives_independent_weights_in_unit_interval():
    weights = RoutingHead(6, 4, gate="sigmoid", rd_channels=8)(torch.randn(5, 6, 3, 3))
    assert ((weights > 0) & (weights < 1)).all()
    assert not torch.allclose(weights.sum(dim=1), torch.ones(5))


def test_high_temperature_flattens_the_softmax():
    torch.manual_seed(0)
    head = RoutingHead(6, 4)
    with torch.no_grad():
        head.fc.weight.mul_(10)
    x = torch.randn(5, 6, 3, 3)
    sharp = head(x)
    head.set_temperature(1000.0)
    flat = head(x)
    assert (flat - 0.25).abs().max() < 1e-2 < (sharp - 0.25).abs().max()


def test_temperature_is_not_saved_in_the_state_dict():
    head = RoutingHead(6, 4, temperature=30.0)
    assert "temperature" not in head.state_dict()
    assert head.temperature.item() == 30.0


def test_recorder_collects_every_block_over_several_calls():
    model = timm.create_model("dynconv_cifar_tiny").eval()
    blocks = [name for name, m in model.named_modules() if hasattr(m, "routing")]
    with RoutingRecorder(model) as recorder:
        model(torch.randn(2, 3, 32, 32))
        model(torch.randn(3, 3, 32, 32))
    assert sorted(recorder.weights) == sorted(blocks)
    for weights in recorder.weights.values():
        assert weights.shape == (5, 2) and not weights.requires_grad
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))
    recorder.clear()
    assert recorder.weights == {}


def test_recorder_leaves_no_hooks_behind():
    model = timm.create_model("dynconv_cifar_tiny").eval()
    with RoutingRecorder(model):
        assert any(m._forward_hooks for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())


def test_recorder_rejects_a_model_without_routing():
    with pytest.raises(ValueError, match="no Router modules"):
        RoutingRecorder(torch.nn.Conv2d(3, 3, 3))


@pytest.mark.parametrize("block", ["branch", "condconv", "dyconv", "odconv"])
def test_recorder_records_every_family(block):
    model = timm.create_model("dynconv_cifar_tiny", block=block).eval()
    with RoutingRecorder(model) as recorder:
        model(torch.randn(3, 3, 32, 32))
    assert len(recorder.weights) == 6  # one per dynamic block of the tiny model
    for name, weights in recorder.weights.items():
        assert weights.shape == (3, 2), name
        assert name.startswith("stages.") and not name.endswith(("routing", "attention"))


def test_every_family_has_routers_that_anneal():
    for block in ("branch", "condconv", "dyconv", "odconv"):
        model = timm.create_model("dynconv_cifar_tiny", block=block)
        routers = routing_modules(model)
        assert len(routers) == 6 and all(isinstance(r, Router) for r in routers), block
        assert set_temperature(model, 5.0) == 6
        assert all(r.temperature.item() == 5.0 for r in routers)


def test_odconv_recorder_returns_its_kernel_attention():
    conv = ODConv2d(8, 8, num_experts=3).eval()
    x = torch.randn(4, 8, 6, 6)
    with RoutingRecorder(conv) as recorder:
        conv(x)
    torch.testing.assert_close(recorder.weights[""], conv.attention(x)[3])


def test_statistics_of_uniform_routing():
    stats = routing_statistics(torch.full((10, 4), 0.25))
    assert stats.mean_weight == pytest.approx([0.25] * 4)
    assert stats.normalised_entropy == pytest.approx(1.0)
    assert stats.variation == pytest.approx(0.0)
    assert stats.top_branch_share == 1.0


def test_statistics_of_one_hot_routing_spread_over_branches():
    weights = torch.eye(4).repeat(3, 1)  # 12 samples, each branch on for 3 of them
    stats = routing_statistics(weights)
    assert stats.normalised_entropy == pytest.approx(0.0, abs=1e-9)
    assert stats.variation == pytest.approx(0.75)  # 1 - 1/K
    assert stats.top_branch_share == pytest.approx(0.25)
    assert stats.mean_weight == pytest.approx([0.25] * 4)


def test_statistics_of_class_dependent_routing():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    weights = torch.nn.functional.one_hot(labels, 3).float() * 0.7 + 0.1  # class c puts 0.8 on branch c
    stats = routing_statistics(weights, labels, num_classes=4)
    assert stats.class_mean_weight[:3] == [pytest.approx([0.8 if k == c else 0.1 for k in range(3)]) for c in range(3)]
    assert all(math.isnan(v) for v in stats.class_mean_weight[3])  # a class without samples
    assert 0 < stats.normalised_entropy < 1 and stats.variation == pytest.approx(2 / 3 * 0.7, abs=1e-9)


def test_statistics_normalise_sigmoid_gates():
    stats = routing_statistics(torch.tensor([[0.2, 0.2], [0.9, 0.9]]))  # same mix, different scale
    assert stats.variation == pytest.approx(0.0) and stats.normalised_entropy == pytest.approx(1.0)
    assert stats.mean_weight == pytest.approx([0.55, 0.55])


@pytest.mark.parametrize("weights, labels, match", [
    (torch.ones(4), None, r"\(N, K\)"),
    (torch.ones(4, 1), None, "K >= 2"),
    (-torch.ones(4, 2), None, "non-negative"),
    (torch.ones(4, 2), torch.zeros(3), "one entry per sample"),
])
def test_statistics_reject_bad_input(weights, labels, match):
    with pytest.raises(ValueError, match=match):
        routing_statistics(weights, labels)
