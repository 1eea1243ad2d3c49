"""The recipe's parameter groups: every trainable parameter in exactly one group, and the routing heads' own lr and
weight decay when ``--routing-lr-scale`` / ``--routing-decay-scale`` ask for them."""
import pytest
import timm
import torch

import dynconv  # noqa: F401  (registers the models)
from cifar10_recipe.config import TrainConfig
from cifar10_recipe.optimization import build_optimizer
from dynconv.layers import Router


def _routing_ids(model):
    return {id(p) for m in model.modules() if isinstance(m, Router) for p in m.parameters()}


@pytest.mark.parametrize("block", ["branch", "condconv", "dyconv", "odconv", "static"])
@pytest.mark.parametrize("scales", [(1.0, 1.0), (0.1, 1.0), (2.0, 0.0)])
def test_every_parameter_is_in_exactly_one_group(block, scales):
    model = timm.create_model("dynconv_cifar_tiny", block=block)
    config = TrainConfig(optimizer="sgd", lr=0.2, weight_decay=5e-4, routing_lr_scale=scales[0],
                         routing_decay_scale=scales[1])
    grouped = [id(p) for group in build_optimizer(config, model).param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())


def test_default_scales_keep_the_three_groups_of_older_checkpoints():
    model = timm.create_model("dynconv_cifar_tiny", block="branch")
    assert len(build_optimizer(TrainConfig(optimizer="sgd"), model).param_groups) == 3


def test_routing_heads_get_their_lr_and_per_step_decay():
    model = timm.create_model("dynconv_cifar_tiny", block="dyconv")
    config = TrainConfig(optimizer="sgd", lr=0.2, weight_decay=5e-4, decay_all=False, routing_lr_scale=0.25,
                         routing_decay_scale=2.0)
    groups = build_optimizer(config, model).param_groups
    routing = _routing_ids(model)
    assert routing, "dyconv has routing heads"
    for group in groups:
        ids = {id(p) for p in group["params"]}
        if ids and ids <= routing:
            assert group["lr"] == pytest.approx(0.05)
            matrices = all(p.ndim > 1 for p in group["params"])
            # per step, SGD decays by lr * weight_decay: the routing matrices decay 2x the others, vectors not at all
            assert group["lr"] * group["weight_decay"] == pytest.approx(2.0 * 0.2 * 5e-4 if matrices else 0.0)
        else:
            assert not ids & routing
    assert sum(1 for group in groups if {id(p) for p in group["params"]} & routing) == 2


def test_a_routing_lr_scale_changes_only_the_routing_heads_update():
    torch.manual_seed(0)
    model = timm.create_model("dynconv_cifar_tiny", block="branch")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    routing = _routing_ids(model)
    optimizer = build_optimizer(TrainConfig(optimizer="sgd", lr=0.1, weight_decay=0.0, momentum=0.0,
                                            routing_lr_scale=3.0), model)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        expected = 0.3 if id(p) in routing else 0.1
        torch.testing.assert_close(before[name] - p.detach(), torch.full_like(p, expected), msg=name)


@pytest.mark.parametrize("flag, value", [("routing_lr_scale", 0.0), ("routing_lr_scale", -1.0),
                                         ("routing_decay_scale", -0.5)])
def test_bad_routing_scales_are_refused(flag, value):
    with pytest.raises(ValueError, match=flag.replace("_", "-")):
        TrainConfig(**{flag: value})


@pytest.mark.parametrize("block", ["branch", "dyconv", "static"])
def test_muon_takes_the_filters_outside_the_routing_heads_and_sgd_the_rest(block):
    model = timm.create_model("dynconv_cifar_tiny", block=block)
    groups = build_optimizer(TrainConfig(optimizer="muon", lr=0.2, muon_lr=0.1), model).param_groups
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    muon_groups = [group for group in groups if group["muon"]]
    assert len(muon_groups) == 1 and muon_groups[0]["lr"] == 0.1 and muon_groups[0]["weight_decay"] == 0.0
    filters = {id(p) for p in model.parameters() if p.ndim == 4} - _routing_ids(model)
    assert {id(p) for p in muon_groups[0]["params"]} == filters
