"""The compiled path: inductor's code equals eager for every block family (outputs and gradients), and the recipe's
compiled train step compiles once per batch shape, not again every epoch.

Graph breaks: tests/test_models.py compiles every CIFAR model (and one of the papers') with ``fullgraph=True``, which
fails on any break.
"""
import pytest
import timm
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from cifar10_recipe import trainer as trainer_module
from cifar10_recipe.config import resolve_config
from cifar10_recipe.loaders import TensorLoader
from cifar10_recipe.trainer import Trainer

pytestmark = pytest.mark.slow  # inductor compiles

# inductor compiles each family's forward and backward in 25-55 s on the CI's 2 cores: the default run compiles the
# coursework block; `pytest --exhaustive tests/test_compile.py` the four others (all five passed when this was written)
FAMILIES = ["branch", *(pytest.param(family, marks=pytest.mark.exhaustive)
                        for family in ("static", "condconv", "dyconv", "odconv"))]


@pytest.mark.parametrize("block", FAMILIES)
def test_inductor_forward_and_backward_equal_eager(block):
    torch.manual_seed(0)
    # float64: then the only differences are summation order, and a tight tolerance still holds after BatchNorm in
    # training mode has amplified them through every layer (in float32 the stem's gradients differ by ~1%)
    model = timm.create_model("dynconv_cifar_tiny", block=block, dtype=torch.float64).train()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="inductor", fullgraph=True)
    eager_out = model(x)
    eager_out.square().mean().backward()
    eager_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled_out = compiled(x)
    compiled_out.square().mean().backward()
    torch.testing.assert_close(compiled_out, eager_out, atol=1e-9, rtol=1e-9)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager_grads[name], atol=1e-9, rtol=1e-7, msg=name)


@pytest.mark.parametrize("block", ["branch", "odconv"])
def test_the_compiled_train_step_does_not_recompile_across_epochs(block, monkeypatch):
    """Three epochs of 70 images in batches of 32 (two full batches and a partial one), routing temperature annealed
    every step: the train step compiles for the full batch and once more for the partial one, then never again."""
    counter = CompileCounterWithBackend("aot_eager")
    original_compile = torch.compile
    monkeypatch.setattr(trainer_module.torch, "compile",
                        lambda model, mode=None: original_compile(model, backend=counter, mode=mode))
    torch._dynamo.reset()
    config = resolve_config("tiny", {"block": block, "compile": "default", "batch_size": 32, "epochs": 3,
                                    "temperature_start": 10.0, "temperature_epochs": 2.0, "channels_last": False})
    images = torch.randint(0, 256, (70, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (70,))
    loader = TensorLoader(images, labels, batch_size=32, train=True, device=torch.device("cpu"), mean=(0.5,) * 3,
                          std=(0.25,) * 3, pad_mode="reflect", flip="alternate")
    trainer = Trainer(config, torch.device("cpu"), len(loader))
    frames = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        trainer.train_epoch(loader, epoch)
        frames.append(counter.frame_count)
    assert frames[0] <= 2 and frames == [frames[0]] * 3, f"compilations after each epoch: {frames}"


def test_the_compiled_airbench94_step_recompiles_once_when_the_whitening_bias_freezes(monkeypatch):
    """The airbench94 preset (lookahead every 5 steps rewriting the weights in place, frozen BatchNorm scales):
    one compilation, and one more when the whitening bias stops training (its ``requires_grad`` is guarded)."""
    counter = CompileCounterWithBackend("aot_eager")
    original_compile = torch.compile
    monkeypatch.setattr(trainer_module.torch, "compile",
                        lambda model, mode=None: original_compile(model, backend=counter, mode=mode))
    torch._dynamo.reset()
    config = resolve_config("airbench94", {"compile": "default", "batch_size": 16, "epochs": 4, "warmup_epochs": 1.0,
                                           "whiten_bias_epochs": 2, "channels_last": False})
    images = torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 10, (48,))
    loader = TensorLoader(images, labels, batch_size=16, train=True, device=torch.device("cpu"), mean=(0.5,) * 3,
                          std=(0.25,) * 3, pad_mode="reflect", flip="alternate", drop_last=True)
    trainer = Trainer(config, torch.device("cpu"), len(loader), images)
    frames = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        trainer.train_epoch(loader, epoch)
        frames.append(counter.frame_count)
    assert frames[0] == 1 and frames[1] == 1 and frames[2] == frames[3] == 2, f"compilations after each epoch: {frames}"
