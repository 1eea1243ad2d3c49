"""Whole-model inference throughput: every registered model, by deployment path, at batch 1 and 64.

Paths: ``eager`` (eval mode), ``reparameterized`` (eager after folding every BatchNorm a block can fold), ``compiled``
(``torch.compile``, inductor) and ``onnxruntime`` (the file :func:`dynconv.export.export_onnx` writes, CPU provider).
Each group is one (model, batch); ``python -m benchmarks.throughput_report`` turns the JSON into images/s tables.
"""
import pytest
import timm
import torch
from timm.utils import reparameterize_model

import dynconv  # noqa: F401  (registers the models)
from benchmarks.blocks import synchronize
from dynconv.export import export_onnx

MODEL_NAMES = timm.list_models("dynconv*")
BATCHES = (1, 64)
PATHS = ("eager", "reparameterized", "compiled", "onnxruntime")


def _runner(path: str, model: torch.nn.Module, x: torch.Tensor, tmp_path):
    model = model.eval()
    if path == "onnxruntime":
        onnxruntime = pytest.importorskip("onnxruntime")
        if x.device.type != "cpu":
            pytest.skip("the onnxruntime path is measured on CPU")
        file = export_onnx(model, tmp_path / "model.onnx")
        session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        images = x.numpy()
        return lambda: session.run(["logits"], {"images": images})
    if path == "reparameterized":
        model = reparameterize_model(model)
    if path == "compiled":
        model = torch.compile(model)

    def forward():
        with torch.inference_mode():
            model(x)
        synchronize(x.device)
    return forward


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_inference_throughput(benchmark, name, path, batch, device, timing_enabled, tmp_path):
    if not timing_enabled and (batch != 1 or path in ("compiled", "onnxruntime")):
        pytest.skip("the default test run executes the eager paths once at batch 1; compiling and exporting are "
                    "tested in tests/")
    model = timm.create_model(name).to(device)
    x = torch.randn(batch, *model.pretrained_cfg["input_size"], device=device)
    run = _runner(path, model, x, tmp_path)
    for _ in range(3):  # warm-up: compilation, oneDNN primitive creation, onnxruntime's first run
        run()
    benchmark.group = f"{name} B={batch} inference"
    benchmark.extra_info.update(implementation=path, model=name, batch=batch, device=str(device),
                                torch=torch.__version__, pass_="inference")
    benchmark.pedantic(run, rounds=5 if timing_enabled else 1, iterations=1)
