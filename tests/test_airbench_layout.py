"""``dynconv_cifar_fast_static`` is airbench94's network and ``dynconv_cifar_small_static`` airbench93's, exactly,
checked against the ``airbench`` package's own ``make_net94`` and ``make_net93`` (the anchor; installed with the
``anchors`` extra) on the same weights; and the config fields that build them (conv-pool-norm blocks, a bias-free
scaled linear head, dirac initialisation)."""
import pytest
import timm
import torch
from torch import nn

from dynconv.models import DynConvNet, DynConvNetCfg
from dynconv.models.heads import LinearClassifierHead

airbench94 = pytest.importorskip("airbench.lib_airbench94")
airbench93 = pytest.importorskip("airbench.lib_airbench93")
# our static twin -> the airbench network it reproduces
AIRBENCH_NETS = {"dynconv_cifar_fast_static": airbench94.make_net94,
                 "dynconv_cifar_small_static": airbench93.make_net93}


def _airbench_net(monkeypatch, model_name: str) -> nn.Module:
    # make_net9x ends with net.half().cuda(): on the CPU, in float32, both are no-ops
    monkeypatch.setattr(nn.Module, "half", lambda self: self)
    monkeypatch.setattr(nn.Module, "cuda", lambda self, *args, **kwargs: self)
    return AIRBENCH_NETS[model_name]()


def _airbench_names(name: str) -> str:
    """Our parameter or buffer name -> the same tensor's name in make_net9x's Sequential."""
    if name.startswith("stem.conv."):
        return "0." + name.split(".")[-1]
    if name.startswith("head.fc."):
        return "7." + name.split(".")[-1]
    _, stage, block, layer, tensor = name.split(".")
    group = 2 + int(stage)
    ours = {"conv": "conv", "bn": "norm"}[layer]
    return f"{group}.{ours}{int(block) + 1}.{tensor}"


@pytest.mark.parametrize("model_name", sorted(AIRBENCH_NETS))
def test_the_static_twin_is_airbenchs_network(monkeypatch, model_name):
    torch.manual_seed(0)
    ours = timm.create_model(model_name)
    theirs = _airbench_net(monkeypatch, model_name)
    state = theirs.state_dict()
    for tensor in state.values():  # random values everywhere, running statistics included, so nothing matches by luck
        if tensor.is_floating_point():
            tensor.copy_(torch.rand_like(tensor) + 0.5)
    ours_state = ours.state_dict()
    assert len(ours_state) == len(state)
    ours.load_state_dict({name: state[_airbench_names(name)] for name in ours_state})
    images = torch.randn(8, 3, 32, 32)
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        torch.testing.assert_close(ours(images), theirs(images.to(memory_format=torch.channels_last)))


@pytest.mark.parametrize("model_name", sorted(AIRBENCH_NETS))
def test_the_static_twin_starts_as_airbench_does(monkeypatch, model_name):
    """dirac filters, BatchNorm eps and momentum, no classifier bias: the same initial network up to the random
    part of the initialisation."""
    ours = timm.create_model(model_name)
    theirs = _airbench_net(monkeypatch, model_name)
    their_state = theirs.state_dict()
    for name, our_tensor in ours.state_dict().items():
        their_tensor = their_state[_airbench_names(name)]
        assert our_tensor.shape == their_tensor.shape, name
        if name.startswith("stages.") and name.endswith("conv.weight"):
            torch.testing.assert_close(our_tensor[:our_tensor.shape[1]], their_tensor[:their_tensor.shape[1]])
    norms = [(m.eps, m.momentum) for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms == [(m.eps, m.momentum) for m in theirs.modules() if isinstance(m, nn.BatchNorm2d)]
    assert ours.head.fc.bias is None and ours.head.global_pool.pool_type == "max"


def test_linear_head_scales_logits_only():
    head = LinearClassifierHead(16, 10, pool_type="max", bias=False, logit_scale=0.25)
    features = torch.randn(3, 16, 2, 2)
    pooled = features.amax(dim=(2, 3))
    torch.testing.assert_close(head(features), 0.25 * pooled @ head.fc.weight.T)
    torch.testing.assert_close(head(features, pre_logits=True), pooled)
    head.reset(5)
    assert head.fc.bias is None and head(features).shape == (3, 5)
    head.reset(0)
    torch.testing.assert_close(head(features), pooled)  # features out: no scale


def test_linear_head_with_bias_is_timms():
    torch.manual_seed(0)
    ours = LinearClassifierHead(16, 10)
    torch.manual_seed(0)
    theirs = timm.layers.ClassifierHead(16, 10)
    features = torch.randn(3, 16, 2, 2)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    torch.testing.assert_close(ours(features), theirs(features))


@pytest.mark.parametrize("kwargs, message", [
    (dict(downsample="conv_pool_norm", num_experts=2), "plain Conv-BN-Act"),
    (dict(downsample="conv_pool_norm", block="dyconv", num_experts=((1, 2), (1, 2))), "block='dyconv'"),
    (dict(head="mlp", head_bias=False), "linear head only"),
    (dict(head="mlp", logit_scale=0.5), "linear head only"),
    (dict(head="linear", logit_scale=0.0), "logit_scale"),
    (dict(conv_init="orthogonal"), "conv_init"),
])
def test_bad_layout_fields_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynConvNetCfg(widths=(8, 16), depths=(2, 2), **kwargs)


def test_conv_pool_norm_pools_between_conv_and_norm():
    model = DynConvNet(DynConvNetCfg(widths=(8, 16), depths=(2, 2), num_experts=((1, 2), (1, 2)),
                                     downsample="conv_pool_norm", head="linear"))
    first = model.stages[0][0]
    assert list(dict(first.named_children())) == ["conv", "pool", "bn"]
    model.eval()
    images = torch.randn(2, 3, 32, 32)
    expected = first.bn(nn.functional.max_pool2d(first.conv(images), 2))
    torch.testing.assert_close(first(images), expected)
    assert model.forward_features(images).shape == (2, 16, 8, 8)


def test_dirac_init_makes_the_first_filters_the_identity():
    cfg = DynConvNetCfg(widths=(8, 8), depths=(1, 1), num_experts=2, conv_init="dirac")
    model = DynConvNet(cfg)
    wide = model.stages[1][1].conv.weight  # the second segment's branch block: 8 inputs -> K * 8 outputs
    identity = torch.zeros_like(wide[:8])
    nn.init.dirac_(identity)
    torch.testing.assert_close(wide[:8], identity)
    assert wide[8:].abs().sum() > 0  # the second branch keeps PyTorch's initialisation
    images = torch.randn(2, 8, 16, 16)
    torch.testing.assert_close(nn.functional.conv2d(images, wide[:8], padding=1), images)
