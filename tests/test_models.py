"""timm's model contract, checked generically for every registered dynconv model (no per-model code)."""
import pytest
import timm
import torch

import dynconv  # noqa: F401  (registers the models)

MODEL_NAMES = timm.list_models("dynconv*")
BATCH = 2


def _input(model, batch=BATCH):
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


def test_models_are_registered():
    assert {"dynconv_cifar", "dynconv_cifar_tiny", "dynconv_cifar_fast"} <= set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape_and_finite(name):
    model = timm.create_model(name)
    out = model(_input(model))
    assert out.shape == (BATCH, model.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_backward_reaches_every_parameter(name):
    model = timm.create_model(name)
    model(_input(model)).logsumexp(dim=1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_cfg_names_real_layers(name):
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert cfg["input_size"] == (3, 32, 32) and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert cfg["first_conv"] + ".weight" in state
    assert cfg["classifier"] + ".weight" in state
    assert state[cfg["classifier"] + ".weight"].shape[0] == model.num_classes


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_classifier_reset_and_pre_logits(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    features = model.forward_features(x)
    assert features.shape[:2] == (BATCH, model.num_features)
    assert model.forward_head(features, pre_logits=True).shape == (BATCH, model.num_features)
    model.reset_classifier(0)
    assert model(x).shape == (BATCH, model.num_features)
    model.reset_classifier(0, "")
    assert model(x).shape == features.shape
    model.reset_classifier(7, "avg")
    assert model(x).shape == (BATCH, 7)
    assert model.get_classifier() is model.head.fc


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_create_with_other_classes_and_channels(name):
    model = timm.create_model(name, num_classes=0, in_chans=1)
    assert model(torch.randn(BATCH, 1, 32, 32)).shape == (BATCH, model.num_features)
    assert timm.create_model(name, num_classes=20)(torch.randn(BATCH, 3, 32, 32)).shape == (BATCH, 20)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_features_only_matches_feature_info(name):
    model = timm.create_model(name, features_only=True)
    outputs = model(torch.randn(BATCH, 3, 32, 32))
    assert len(outputs) == len(model.feature_info.channels())
    info = zip(model.feature_info.channels(), model.feature_info.reduction(), strict=True)
    for out, (channels, reduction) in zip(outputs, info, strict=True):
        # reductions are nominal: an unpadded stem (32 -> 31) floors every later size by one
        assert out.shape[:2] == (BATCH, channels) and out.shape[2] == out.shape[3]
        assert 32 // reduction - 1 <= out.shape[2] <= 32 // reduction


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_round_trip(name):
    torch.manual_seed(0)
    source = timm.create_model(name).eval()
    torch.manual_seed(1)
    target = timm.create_model(name).eval()
    x = _input(source)
    assert not torch.allclose(source(x), target(x))
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target(x), source(x), atol=0, rtol=0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_compiled_output_equals_eager(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    torch._dynamo.reset()  # each model's modules are new guards on shared code: start every model from an empty cache
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channels_last_matches_contiguous(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_eval_output_of_a_sample_ignores_the_rest_of_the_batch(name):
    model = timm.create_model(name).eval()
    x = _input(model, batch=4)
    batched = model(x)
    alone = torch.cat([model(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batch_size_one_trains(name):
    model = timm.create_model(name).train()
    loss = model(_input(model, batch=1)).logsumexp(dim=1).sum()
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_fields_override_through_create_model(name):
    model = timm.create_model(name, num_convs=3)
    assert model.cfg.num_convs == 3
    assert model(torch.randn(BATCH, 3, 32, 32)).shape == (BATCH, model.num_classes)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_grad_checkpointing_gives_the_same_gradients(name):
    torch.manual_seed(0)
    model = timm.create_model(name, drop_rate=0.0)
    x = _input(model)
    model(x).sum().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_intermediates_follow_timm_semantics(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [t.shape[1] for t in intermediates] == [info["num_chs"] for info in model.feature_info]
        assert [x.shape[-1] // t.shape[-1] for t in intermediates] == [
            info["reduction"] for info in model.feature_info] or model.cfg.stem == "patch"
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2 and torch.equal(last_two[-1], intermediates[-1])
        first, only_first = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert torch.equal(first, intermediates[0]) and torch.equal(only_first[0], intermediates[0])
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_prune_intermediate_layers_keeps_what_is_asked(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[0], intermediates_only=True)
        assert model.prune_intermediate_layers([0]) == [0]
        assert len(model.stages) == 1 and model.num_classes == 0
        assert model.num_features == model.feature_info[0]["num_chs"]
        torch.testing.assert_close(model.forward_intermediates(x, indices=[0], intermediates_only=True), expected)
        assert model(x).shape == expected[0].shape  # no head left: the unpooled features


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fx_feature_extraction_equals_forward_intermediates(name):
    from timm.models import FeatureGraphNet

    model = timm.create_model(name).eval()
    # what timm.create_model(name, features_only=True, feature_cls="fx") builds, around this model's weights
    extractor = FeatureGraphNet(model, out_indices=tuple(range(len(model.feature_info)))).eval()
    x = _input(model)
    with torch.no_grad():
        expected = model.forward_intermediates(x, intermediates_only=True)
        for got, want in zip(extractor(x), expected, strict=True):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pool_size_is_the_final_feature_map(name):
    model = timm.create_model(name).eval()
    assert tuple(model.forward_features(_input(model)).shape[-2:]) == model.pretrained_cfg["pool_size"]
