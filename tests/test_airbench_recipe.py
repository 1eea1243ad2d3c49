"""The ``airbench94`` preset trains as airbench94's own ``train`` does, step for step.

The oracle is airbench's training loop written out here from the package's source (airbench 0.1.8, ``utils.train``):
summed loss, its decoupled lr and weight decay, its parameter groups, its triangular schedule, its whitening-bias
freeze and its own ``LookaheadState``. Both loops start from the same weights and see the same batches; their
weights must agree after several lookahead updates and the bias freeze.
"""
import copy
from typing import List, Tuple

import pytest
import torch
from torch import nn

from cifar10_recipe.config import resolve_config
from cifar10_recipe.lookahead import Lookahead
from cifar10_recipe.optimization import lr_factor
from cifar10_recipe.presets import PRESETS, decoupled_sgd
from cifar10_recipe.trainer import Trainer
from tests.fixed_batches import FixedBatches

airbench_utils = pytest.importorskip("airbench.utils")
airbench94 = pytest.importorskip("airbench.lib_airbench94")

BATCH, STEPS_PER_EPOCH, EPOCHS, WHITEN_BIAS_EPOCHS = 16, 3, 4, 2
SIDE = 16  # the network runs on any side >= 16 (its last map is then 1x1); small images keep the test quick



def _triangle(steps: int, start: float, end: float, peak: float) -> torch.Tensor:
    """airbench's ``triangle`` (a closure inside ``utils.train``), line for line."""
    xp = torch.tensor([0, int(peak * steps), steps])
    fp = torch.tensor([start, 1, end])
    x = torch.arange(1 + steps)
    m = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])
    b = fp[:-1] - (m * xp[:-1])
    indices = torch.sum(torch.ge(x[:, None], xp[None, :]), 1) - 1
    indices = torch.clamp(indices, 0, len(m) - 1)
    return m[indices] * x + b[indices]


def _airbench_training(model: nn.Module, epochs: List[List[Tuple[torch.Tensor, torch.Tensor]]]) -> None:
    """airbench94's optimisation of ``model`` (its hyperparameters, ``utils.train``'s loop) over ``epochs``."""
    hyp = airbench94.hyp["opt"]
    # make_net94's frozen parameters: the whitening weights and every BatchNorm scale
    model.stem.conv.weight.requires_grad = False
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.requires_grad = False
    momentum = hyp["momentum"]
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = hyp["lr"] / kilostep_scale
    wd = hyp["weight_decay"] * BATCH / kilostep_scale
    lr_biases = lr * hyp["bias_scaler"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hyp["label_smoothing"], reduction="none")
    total_train_steps = STEPS_PER_EPOCH * len(epochs)
    # airbench names its BatchNorms "norm*"; ours are BatchNorm modules named "bn"
    norm_bias_ids = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    norm_biases = [p for p in model.parameters() if id(p) in norm_bias_ids and p.requires_grad]
    other_params = [p for p in model.parameters() if id(p) not in norm_bias_ids and p.requires_grad]
    optimizer = torch.optim.SGD([dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
                                 dict(params=other_params, lr=lr, weight_decay=wd / lr)],
                                momentum=momentum, nesterov=True)
    lr_schedule = _triangle(total_train_steps, start=0.2, end=0.07, peak=0.23)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_schedule[i])
    alpha_schedule = 0.95 ** 5 * (torch.arange(total_train_steps + 1) / total_train_steps) ** 3
    lookahead_state = airbench_utils.LookaheadState(model)
    current_steps = 0
    for epoch, batches in enumerate(epochs):
        model.stem.conv.bias.requires_grad = epoch < WHITEN_BIAS_EPOCHS
        model.train()
        for inputs, labels in batches:
            outputs = model(inputs)
            loss = loss_fn(outputs, labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            current_steps += 1
            if current_steps % 5 == 0:
                lookahead_state.update(model, decay=alpha_schedule[current_steps].item())
            if current_steps >= total_train_steps:
                lookahead_state.update(model, decay=1.0)
                break


def test_the_airbench94_preset_takes_airbench94s_steps():
    torch.manual_seed(0)
    whitening_images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    epochs = [[(torch.randn(BATCH, 3, SIDE, SIDE), torch.randint(0, 10, (BATCH,))) for _ in range(STEPS_PER_EPOCH)]
              for _ in range(EPOCHS)]
    peak = int(0.23 * STEPS_PER_EPOCH * EPOCHS)  # airbench's peak step
    # the preset, at this test's batch size: airbench's lr and weight decay are per example, so they convert anew
    config = resolve_config("airbench94", {
        **decoupled_sgd(11.5, 0.0153, 0.85, BATCH), "batch_size": BATCH, "epochs": EPOCHS,
        "warmup_epochs": peak / STEPS_PER_EPOCH, "whiten_bias_epochs": WHITEN_BIAS_EPOCHS, "channels_last": False,
        "amp": "none"})
    trainer = Trainer(config, torch.device("cpu"), STEPS_PER_EPOCH, whitening_images)
    reference = copy.deepcopy(trainer.model).requires_grad_(True)  # same weights; airbench's freezing below
    for epoch, batches in enumerate(epochs):
        trainer.train_epoch(FixedBatches(batches), epoch)
    _airbench_training(reference, epochs)
    ours, theirs = trainer.model.state_dict(), reference.state_dict()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_preset_is_airbench94s_configuration():
    preset = PRESETS["airbench94"]
    hyp = airbench94.hyp
    assert preset["batch_size"] == hyp["opt"]["batch_size"]
    assert preset["momentum"] == hyp["opt"]["momentum"] and preset["nesterov"]
    assert preset["bias_lr_scale"] == hyp["opt"]["bias_scaler"]
    assert preset["label_smoothing"] == hyp["opt"]["label_smoothing"]
    assert preset["whiten_bias_epochs"] == hyp["opt"]["whiten_bias_epochs"]
    assert preset["crop_padding"] == hyp["aug"]["translate"] and preset["flip"] == "alternate"
    assert preset["tta"] == hyp["net"]["tta_level"]
    # 9.9 epochs of 48 steps in airbench; whole epochs here
    assert preset["epochs"] == round(hyp["opt"]["train_epochs"])


def test_triangle_schedule_is_airbenchs():
    steps_per_epoch, epochs = 48, 10
    config = resolve_config("airbench94", {"epochs": epochs})
    factor = lr_factor(config, steps_per_epoch)
    expected = _triangle(steps_per_epoch * epochs, start=0.2, end=0.07, peak=0.23)
    ours = torch.tensor([factor(step) for step in range(steps_per_epoch * epochs + 1)])
    torch.testing.assert_close(ours, expected.float(), rtol=1e-5, atol=1e-6)


def test_lookahead_is_airbenchs_lookahead_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    reference = copy.deepcopy(model)
    ours = Lookahead(model, every=2, total_steps=6, base=0.9)
    theirs = airbench_utils.LookaheadState(reference)
    for step in range(1, 7):
        for m in (model, reference):
            with torch.no_grad():
                for tensor in m.state_dict().values():
                    if tensor.is_floating_point():
                        tensor.add_(step * 0.1)
        ours.step(model, step)
        if step % 2 == 0:
            theirs.update(reference, decay=0.9 ** 2 * (step / 6) ** 3)
        if step == 6:
            theirs.update(reference, decay=1.0)
        for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, msg=f"{name} after step {step}")


def test_patch_whitening_is_airbenchs():
    torch.manual_seed(0)
    images = torch.randn(32, 3, 16, 16) * torch.tensor([1.0, 0.5, 2.0]).view(1, 3, 1, 1)
    ours, theirs = nn.Conv2d(3, 24, 2), nn.Conv2d(3, 24, 2)
    from cifar10_recipe.whitening import init_patch_whitening

    init_patch_whitening(ours, images)
    airbench_utils.init_whitening_conv(theirs, images)
    # eigenvectors are defined up to sign, and up to a rotation where eigenvalues nearly coincide (which LAPACK resolves
    # differently with the thread count): compare what the filters span, sum_i w_i w_i^T = V diag(1 / (lambda + eps))
    # V^T, and each filter's norm, 1 / sqrt(lambda + eps)
    def spanned(conv):
        filters = conv.weight.flatten(1).double()
        return filters.T @ filters

    torch.testing.assert_close(spanned(ours), spanned(theirs), rtol=2e-3, atol=1e-5)
    torch.testing.assert_close(ours.weight.flatten(1).norm(dim=1), theirs.weight.flatten(1).norm(dim=1), rtol=1e-3,
                               atol=1e-6)
