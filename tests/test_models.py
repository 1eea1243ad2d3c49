"""timm's model contract, checked generically for every registered dynconv model (no per-model code).

The ImageNet-size models (the papers' architectures) run at a reduced resolution, as timm's own generic tests do,
except where the test is about the full size (``pool_size``).
"""
import pytest
import timm
import torch

from dynconv.layers import DCDLinear
from dynconv.models import list_models
from dynconv.models.dynconvnet import MODEL_CFGS
from tests.reference import randomize_batchnorms

ALL_MODEL_NAMES = list_models()
# like timm's own generic tests, the full contract skips the largest models (over 80M parameters, each 5-15 s to
# build on 2 cores): they are the 4x/8x-kernel versions of models tested here, and test_paper_nets.py builds, runs and
# counts each of them; the forward and backward tests below still cover every model
LARGE_MODELS = {"od_resnet50_4x", "dy_resnet50", "condconv_resnet50", "kw4x_resnet50"}
MODEL_NAMES = [name for name in ALL_MODEL_NAMES if name not in LARGE_MODELS]
# the DynConvNet family: the tests of its own interface (config overrides, segments, heads, input checks)
DYNCONVNET_NAMES = list_models("dynconv*")
BATCH = 2
REDUCED_SIZE = 64


def _size(model):
    """Test resolution: the model's own, capped at REDUCED_SIZE."""
    return min(model.pretrained_cfg["input_size"][-1], REDUCED_SIZE)


def _input(model, batch=BATCH, channels=3):
    return torch.randn(batch, channels, _size(model), _size(model))


def test_models_are_registered():
    assert {"dynconv_cifar", "dynconv_cifar_tiny", "dynconv_cifar_fast", "od_resnet18"} <= set(MODEL_NAMES)
    assert set(ALL_MODEL_NAMES) > LARGE_MODELS


@pytest.mark.parametrize("name", ALL_MODEL_NAMES)
def test_forward_shape_and_finite(name):
    model = timm.create_model(name)
    out = model(_input(model))
    assert out.shape == (BATCH, model.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL_MODEL_NAMES)
def test_backward_reaches_every_parameter(name):
    # seeded: at some draws a ReLU routing layer of an untrained network is dead for both images (dy_mobilenetv2_100
    # at seed 2), and the test would depend on what ran before it
    torch.manual_seed(0)
    model = timm.create_model(name)
    x = _input(model)
    # BatchNorms in eval mode, with statistics measured on x and non-zero affine maps (timm's ResNets zero the last
    # one of every block): a train-mode BatchNorm subtracts a per-channel constant, so the shift that adds one before
    # it (DCD's latent norm, in front of the block's norm) gets a gradient of exactly zero up to rounding
    randomize_batchnorms(model, calibrate_on=x)
    model(x).logsumexp(dim=1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_default_cfg_names_real_layers(name):
    model = timm.create_model(name)
    cfg = model.pretrained_cfg
    state = model.state_dict()
    assert cfg["input_size"] in ((3, 32, 32), (3, 224, 224)) and len(cfg["mean"]) == len(cfg["std"]) == 3
    first, classifier = model.get_submodule(cfg["first_conv"]), model.get_submodule(cfg["classifier"])
    assert first.in_channels == 3
    # a KernelWarehouse layer's weight is its warehouse's cells, so the layer has none of its own
    assert cfg["first_conv"] + ".weight" in state or hasattr(first, "shared_warehouse")
    out_features = getattr(classifier, "out_features", getattr(classifier, "out_channels", None))
    assert out_features == model.num_classes


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reset_classifier_changes_the_logits(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (BATCH, model.num_features)
    model.reset_classifier(0)
    assert model(x).shape == (BATCH, model.num_features)
    model.reset_classifier(7)
    assert model(x).shape == (BATCH, 7)


@pytest.mark.parametrize("name", DYNCONVNET_NAMES)
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
    assert model(_input(model, channels=1)).shape == (BATCH, model.num_features)
    model = timm.create_model(name, num_classes=20)
    assert model(_input(model)).shape == (BATCH, 20)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_features_only_matches_feature_info(name):
    model = timm.create_model(name, features_only=True)
    size = _size(model)
    outputs = model(_input(model))
    assert len(outputs) == len(model.feature_info.channels())
    info = zip(model.feature_info.channels(), model.feature_info.reduction(), strict=True)
    for out, (channels, reduction) in zip(outputs, info, strict=True):
        # reductions are nominal: an unpadded stem (32 -> 31) floors every later size by one
        assert out.shape[:2] == (BATCH, channels) and out.shape[2] == out.shape[3]
        assert size // reduction - 1 <= out.shape[2] <= size // reduction


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_state_dict_round_trip(name):
    torch.manual_seed(0)
    source = timm.create_model(name)
    torch.manual_seed(1)
    target = timm.create_model(name)
    x = _input(source)
    # BatchNorm statistics measured on x, so that deep eval-mode nets (KernelWarehouse's mix cells into kernels
    # smaller than their cells) do not start at exactly zero
    randomize_batchnorms(source, calibrate_on=x), randomize_batchnorms(target, calibrate_on=x)
    assert not torch.allclose(source(x), target(x), rtol=1e-3, atol=0)  # relative: deep eval-mode nets start tiny
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target(x), source(x), atol=0, rtol=0)


# the papers' models add nothing for the compiler beyond their blocks, which the CIFAR variants of every family cover;
# one of them is compiled whole (each ImageNet-size compile takes 15-60 s on the CI's 2 cores)
@pytest.mark.parametrize("name", DYNCONVNET_NAMES + ["od_resnet18"])
def test_compiled_output_equals_eager(name):
    model = timm.create_model(name).eval()
    x = _input(model)
    torch._dynamo.reset()  # each model's modules are new guards on shared code: start every model from an empty cache
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channels_last_matches_contiguous(name):
    # float64: the property is exact, and an untrained network may amplify float32 rounding past any fixed tolerance
    # (a 1e-6 relative change of the input moves DCD-MobileNetV2's logits by ~5e-3 at init, timm's MobileNetV2's by
    # ~5e-6: its latent paths are normalised by BatchNorms whose running statistics are still the identity)
    model = timm.create_model(name).eval().double()
    x = _input(model).double()
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_eval_output_of_a_sample_ignores_the_rest_of_the_batch(name):
    model = timm.create_model(name).eval().double()  # float64, as in test_channels_last_matches_contiguous
    x = _input(model, batch=4).double()
    batched = model(x)
    alone = torch.cat([model(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, alone, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batch_size_one_trains(name):
    model = timm.create_model(name).train()
    if any(isinstance(module, (DCDLinear, torch.nn.BatchNorm1d)) for module in model.modules()):
        # a layer normalised over the batch (the DCD authors' classifier DYCls, KernelWarehouse's attention) cannot
        # train on one sample: a clear error
        with pytest.raises(ValueError, match="batch of 1 cannot"):
            model(_input(model, batch=1))
        return
    loss = model(_input(model, batch=1)).logsumexp(dim=1).sum()
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", DYNCONVNET_NAMES)
def test_config_fields_override_through_create_model(name):
    # with conv-pool-norm segments (airbench94's layout) every segment's first block stays a plain Conv-BN-Act
    first_static = MODEL_CFGS[name].downsample == "conv_pool_norm"
    num_experts = ((1, 3),) * len(MODEL_CFGS[name].widths) if first_static else 3
    model = timm.create_model(name, num_experts=num_experts)
    assert model.cfg.num_experts == num_experts
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
            info["reduction"] for info in model.feature_info] or getattr(model, "cfg", None).stem == "patch"
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2 and torch.equal(last_two[-1], intermediates[-1])
        first, only_first = model.forward_intermediates(x, indices=[0], stop_early=True)
        assert torch.equal(only_first[0], intermediates[0])
    if name in DYNCONVNET_NAMES:  # timm's ResNet returns the features after its stem's pooling here, and asserts
        assert torch.equal(first, intermediates[0])
        with pytest.raises(ValueError, match="NCHW"):
            model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("name", DYNCONVNET_NAMES)
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
    with torch.no_grad():  # at the full input size: pool_size is stated for it
        features = model.forward_features(torch.randn(1, *model.pretrained_cfg["input_size"]))
    assert tuple(features.shape[-2:]) == model.pretrained_cfg["pool_size"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_device_and_dtype_construction_kwargs(name):
    # timm's convention: every parameter and buffer is created where and as asked, none on the default device
    meta = timm.create_model(name, device="meta")
    tensors = dict(meta.named_parameters()) | dict(meta.named_buffers())
    assert [n for n, t in tensors.items() if t.device.type != "meta"] == []
    double = timm.create_model(name, dtype=torch.float64).eval()
    tensors = dict(double.named_parameters()) | dict(double.named_buffers())
    assert [n for n, t in tensors.items() if t.is_floating_point() and t.dtype != torch.float64] == []
    assert double(_input(double).double()).dtype == torch.float64


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_empty_batch_flows_through(name):
    model = timm.create_model(name)
    for train in (True, False):
        model.train(train)
        x = _input(model, batch=0).requires_grad_()
        out = model(x)
        assert out.shape == (0, model.num_classes)
        out.sum().backward()


@pytest.mark.parametrize("name", DYNCONVNET_NAMES)  # the papers' models start with timm's static stem
def test_wrong_input_dtype_gets_one_clear_message(name):
    model = timm.create_model(name).eval()
    with pytest.raises(ValueError, match=r"dtype torch.float32.*got torch.float64"):
        model(_input(model).double())
    with pytest.raises(ValueError, match=r"floating-point.*got torch.uint8"):
        model(_input(model).to(torch.uint8))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts for itself, so any float input is fine
        assert model(_input(model).bfloat16()).shape == (BATCH, model.num_classes)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_torchscript_is_declared_unsupported(name):
    # like the timm models its tests exclude from scripting: docs/models.rst says so and points at torch.export and
    # ONNX; if scripting starts to work, the docs must change
    with pytest.raises(RuntimeError):  # torch.jit's frontend errors
        torch.jit.script(timm.create_model(name))


@pytest.mark.parametrize("routed, twin, dynamic_blocks", [
    ("dynconv_cifar_tiny_routed", "dynconv_cifar_tiny_static", ["stages.1.2", "stages.2.0"]),
    ("dynconv_cifar_small_routed", "dynconv_cifar_small_static", ["stages.1.1", "stages.2.1"])])
def test_routed_models_are_their_static_twin_but_where_routing_varies(routed, twin, dynamic_blocks):
    """The routed layouts put dynamic blocks only where the trained all-dynamic model's routers vary by content; every
    other parameter is the static twin's, so the two compare at equal cost but for those blocks."""
    model, static = timm.create_model(routed), timm.create_model(twin)
    assert [n for n, m in model.named_modules() if type(m).__name__ == "DynamicBlock"] == dynamic_blocks
    elsewhere = tuple(f"{name}." for name in dynamic_blocks)
    assert {k: v.shape for k, v in model.state_dict().items() if not k.startswith(elsewhere)} == \
        {k: v.shape for k, v in static.state_dict().items() if not k.startswith(elsewhere)}
