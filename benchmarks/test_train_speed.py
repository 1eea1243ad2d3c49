"""Whole-model training throughput: one optimizer step (forward, backward, Nesterov SGD) of every registered model,
eager and compiled (``torch.compile``, inductor), channels-last, at the ``tiny`` preset's batch of 256.

This is the figure a user of the recipe feels. Each group is one (model, batch); ``python
benchmarks/throughput_report.py`` turns the JSON into images/s tables. The default test run executes the eager step
once at batch 2 (compilation is tested in tests/test_compile.py).
"""
import pytest
import timm
import torch
import torch.nn.functional as F

import dynconv  # noqa: F401  (registers the models)
from benchmarks.blocks import synchronize

MODEL_NAMES = timm.list_models("dynconv*")
BATCH = 256
PATHS = ("eager", "compiled")


def _train_step(path: str, model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    forward = torch.compile(model) if path == "compiled" else model

    def step():
        loss = F.cross_entropy(forward(x), labels, label_smoothing=0.2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(x.device)
    return step


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_train_throughput(benchmark, name, path, device, timing_enabled):
    if not timing_enabled and path == "compiled":
        pytest.skip("the default test run executes the eager step once; compilation is tested in tests/")
    batch = BATCH if timing_enabled else 2
    torch.manual_seed(0)
    model = timm.create_model(name).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, *model.pretrained_cfg["input_size"], device=device).contiguous(
        memory_format=torch.channels_last)
    labels = torch.randint(0, model.num_classes, (batch,), device=device)
    step = _train_step(path, model, x, labels)
    for _ in range(3 if timing_enabled else 0):  # warm-up: compilation, oneDNN primitive creation
        step()
    benchmark.group = f"{name} B={batch} train"
    benchmark.extra_info.update(implementation=path, model=name, batch=batch, device=str(device),
                                torch=torch.__version__, pass_="train")
    benchmark.pedantic(step, rounds=5 if timing_enabled else 1, iterations=1)
