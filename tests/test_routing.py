import pytest
import timm
import torch

from dynconv import RoutingHead, RoutingRecorder


def test_softmax_weights_are_a_distribution_per_sample():
    weights = RoutingHead(6, 4)(torch.randn(5, 6, 3, 3))
    assert weights.shape == (5, 4)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))


def test_sigmoid_gate_gives_independent_weights_in_unit_interval():
    weights = RoutingHead(6, 4, gate="sigmoid", hidden_channels=8)(torch.randn(5, 6, 3, 3))
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
    with pytest.raises(ValueError, match="no RoutingHead"):
        RoutingRecorder(torch.nn.Conv2d(3, 3, 3))
