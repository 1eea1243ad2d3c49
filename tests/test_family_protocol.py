"""The protocol every block family offers models and the recipe (dynconv.layers.family), checked over every family."""
import pytest
import timm
import torch
from torch import nn

from dynconv.layers import (
    DynamicConv,
    SharingScope,
    create_block,
    dynamic_layers,
    filter_weights,
    init_identity_,
)
from dynconv.models.dynconvnet import MODEL_CFGS
from tests.families import DYNAMIC_KINDS, LAYERS, STATIC_KERNEL


@pytest.mark.parametrize("kind", DYNAMIC_KINDS)
def test_every_layer_names_its_filters_among_its_own_parameters(kind):
    layer = LAYERS[kind](8, 16)
    assert isinstance(layer, DynamicConv)
    own = {id(p) for p in layer.parameters()}
    for weight in layer.filter_weights():
        assert id(weight) in own and weight.ndim == 4 and weight.shape[0] % 16 == 0 and weight.shape[1] == 8


@pytest.mark.parametrize("kind", DYNAMIC_KINDS)
def test_identity_start_makes_a_static_kernel_the_identity_or_changes_nothing(kind):
    torch.manual_seed(0)
    layer = LAYERS[kind](8, 8)
    before = {name: p.clone() for name, p in layer.named_parameters()}
    layer.init_identity_()
    changed = [name for name, p in layer.named_parameters() if not torch.equal(p, before[name])]
    filters = {id(p) for p in layer.filter_weights()}
    assert bool(changed) == (kind in STATIC_KERNEL), "a layer with a static kernel starts it as the identity"
    assert all(id(p) in filters for name, p in layer.named_parameters() if name in changed), "only filters change"
    if kind in STATIC_KERNEL:
        kernel = STATIC_KERNEL[kind](layer)
        identity = torch.zeros_like(kernel[:8])
        nn.init.dirac_(identity)
        torch.testing.assert_close(kernel[:8], identity)
        assert kind != "kw" or layer.kernels(layer.attention.assignment[None, :, :-1]).abs().sum() > 8, (
            "the shared cells outside the identity keep their initialisation")


def test_model_level_walk_stops_at_dynamic_layers():
    model = timm.create_model("dynconv_cifar_fast_dcd")
    layers = dict(dynamic_layers(model))
    assert list(layers) == ["stages.0.1.conv", "stages.1.1.conv", "stages.2.1.conv"]
    names = {id(p): n for n, p in model.named_parameters()}
    chosen = [names[id(p)] for p in filter_weights(model)]
    # the stem, the static blocks and DCD's static kernel W0; not DCD's 1x1 projections Q and P
    assert "stages.1.1.conv.weight" in chosen and "stem.conv.weight" in chosen
    assert not [n for n in chosen if ".q." in n or ".p." in n]
    assert all(p.ndim == 4 for p in filter_weights(model))


def test_identity_start_over_a_model_is_the_configs_dirac_init():
    torch.manual_seed(0)
    dirac = timm.create_model("dynconv_cifar_fast_dcd")
    torch.manual_seed(0)
    plain = timm.create_model("dynconv_cifar_fast_dcd", conv_init="default")
    init_identity_(plain.stages)
    torch.testing.assert_close(dirac.state_dict(), plain.state_dict())
    assert MODEL_CFGS["dynconv_cifar_fast_dcd"].conv_init == "dirac"


def test_a_sharing_scope_allocates_once_and_refuses_late_layers():
    closed = []

    class State:
        def close(self):
            closed.append(True)

    scope = SharingScope()
    state = scope.shared("kind", State)
    assert scope.shared("kind", State) is state
    scope.close()
    scope.close()
    assert closed == [True]
    with pytest.raises(RuntimeError, match="closed"):
        scope.shared("kind", State)


def test_set_mode_names_the_modes_a_layer_has():
    layer = create_block("odconv", 4, 4).conv
    assert "grouped" in layer.computation_modes()
    layer.set_mode("grouped")
    with pytest.raises(ValueError, match="mode must be one of"):
        layer.set_mode("patches")
    with pytest.raises(ValueError, match=r"mode must be one of \(\)"):
        LAYERS["dcd"](4, 4).set_mode("grouped")
