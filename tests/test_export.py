"""Deployment: every registered model and every block family exports with a dynamic batch axis and matches eager.

One exported file or program serves batch 1, 3 and 64; onnxruntime (CPU provider) and the exported program are
compared with the eager model on fresh inputs, before and after folding BatchNorms.
"""
import subprocess
import sys

import pytest
import timm
import torch

import dynconv  # noqa: F401  (registers the models)
from dynconv import DynConvNet, DynConvNetCfg
from dynconv.export import export_onnx, export_program
from dynconv.layers import block_kinds
from tests.reference import randomize_batchnorms

onnxruntime = pytest.importorskip("onnxruntime")

MODEL_NAMES = timm.list_models("dynconv*")
BATCHES = (1, 3, 64)
# float32 through different kernels (oneDNN vs onnxruntime's MLAS), relative to the logits' scale
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def _onnx_outputs(path, inputs):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0]) for x in inputs]


def _calibrated(model):
    """``model`` in eval mode with random BatchNorm affine maps and statistics measured on random images."""
    generator = torch.Generator().manual_seed(0)
    return randomize_batchnorms(model, calibrate_on=torch.randn(32, *model.pretrained_cfg["input_size"],
                                                                generator=generator))


def _inputs(model, seed):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *model.pretrained_cfg["input_size"], generator=generator) for batch in BATCHES]


def _small_model(kind: str) -> DynConvNet:
    cfg = DynConvNetCfg(widths=(8, 16), depths=(1, 1), num_experts=3 if kind != "static" else 1, block=kind,
                        stem_width=8, head="linear", drop_rate=0.0)
    model = DynConvNet(cfg)
    model.pretrained_cfg = {"input_size": (3, 16, 16)}
    return randomize_batchnorms(model)


@pytest.mark.slow  # 2-10 s per model; the block-family tests below cover every kind fast
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_export_has_a_dynamic_batch_and_matches_eager(name, tmp_path):
    torch.manual_seed(0)
    model = _calibrated(timm.create_model(name))
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    inputs = _inputs(model, seed=1)
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    for x, got, want in zip(inputs, _onnx_outputs(path, inputs), expected, strict=True):
        assert got.shape == (len(x), model.num_classes)
        # random BatchNorm maps through a deep network give logits up to ~1e6, where float32 sums taken in another
        # order differ by ~1e-3 relative on single elements: compare against the outputs' scale
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got, want, rtol=TOLERANCE["rtol"], atol=TOLERANCE["atol"] * scale)


@pytest.mark.parametrize("kind", block_kinds())
@pytest.mark.parametrize("reparameterize", [False, True])
def test_every_block_family_exports_to_onnx(kind, reparameterize, tmp_path):
    model = _small_model(kind)
    path = export_onnx(model, tmp_path / f"{kind}.onnx", reparameterize=reparameterize)
    inputs = _inputs(model, seed=2)
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    for got, want in zip(_onnx_outputs(path, inputs), expected, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_torch_export_has_a_dynamic_batch_and_matches_eager(name):
    model = _calibrated(timm.create_model(name))
    program = export_program(model).module()
    with torch.no_grad():
        for x in _inputs(model, seed=3):
            torch.testing.assert_close(program(x), model(x), **TOLERANCE)


@pytest.mark.parametrize("kind", block_kinds())
def test_reparameterized_program_matches_eager(kind):
    model = _small_model(kind)
    program = export_program(model, reparameterize=True).module()
    with torch.no_grad():
        for x in _inputs(model, seed=4):
            torch.testing.assert_close(program(x), model(x), **TOLERANCE)


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = timm.create_model("dynconv_cifar_tiny").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "tiny.onnx", reparameterize=True)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_grouped_mode_is_replaced_while_exporting():
    """A layer fixed to the grouped form still exports with a dynamic batch (and matches its eager self)."""
    cfg = DynConvNetCfg(widths=(8,), depths=(1,), num_experts=2, block="condconv", head="linear", drop_rate=0.0)
    model = DynConvNet(cfg)
    for module in model.modules():
        if hasattr(module, "mode"):
            module.mode = "grouped"
    model.pretrained_cfg = {"input_size": (3, 8, 8)}
    model = randomize_batchnorms(model)
    program = export_program(model).module()
    with torch.no_grad():
        for x in _inputs(model, seed=5):
            torch.testing.assert_close(program(x), model(x), **TOLERANCE)


def test_bad_arguments_raise_clear_errors(tmp_path):
    model = timm.create_model("dynconv_cifar_tiny")
    with pytest.raises(ValueError, match="does not exist"):
        export_onnx(model, tmp_path / "missing" / "x.onnx")
    with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\)"):
        export_program(model, input_size=(32, 32))
    with pytest.raises(ValueError, match="pretrained_cfg"):
        export_program(torch.nn.Conv2d(3, 4, 3))


@pytest.mark.slow  # a subprocess
def test_command_line(tmp_path):
    out = tmp_path / "tiny.onnx"
    result = subprocess.run([sys.executable, "-m", "dynconv.export", "dynconv_cifar_tiny", "--out", str(out),
                             "--reparameterize"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "dynamic batch axis" in result.stdout
    result = subprocess.run([sys.executable, "-m", "dynconv.export", "no_such_model", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "unknown model 'no_such_model'" in result.stderr
