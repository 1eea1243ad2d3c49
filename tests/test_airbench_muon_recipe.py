"""The ``airbench94_muon`` preset trains as airbench94_muon's own loop does, step for step.

The oracle is airbench94_muon's training loop (``airbench94_muon.py`` in KellerJordan/cifar10-airbench) written out
here: summed loss, its SGD groups (stem bias, BatchNorm shifts, head) with their lr and ``wd / lr`` decay, its Muon
for the filters (weight normalisation, Nesterov momentum, three Newton-Schulz steps, here in float32 where it uses
fp16), its linear schedules to 0 (the stem bias's over its 3 epochs, then frozen) and its head: unit-scale weights
with logits divided by the width, which our head's 1/9 logit scale matches after the weights are mapped by 9 / 256.
Both loops start from the same weights and see the same batches; their weights must agree after six steps that span
the stem bias's decay and freeze. They run in float64 and for few steps: this training on random images is chaotic
(a 1e-9 change to one filter grew to 1e-2 within twelve steps, whichever loop ran it), so rounding alone would part
longer or float32 runs.
"""
import copy
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cifar10_recipe.config import resolve_config
from cifar10_recipe.presets import PRESETS, airbench_muon_sgd
from cifar10_recipe.trainer import Trainer
from tests.fixed_batches import FixedBatches

BATCH, STEPS_PER_EPOCH, EPOCHS, WHITEN_BIAS_EPOCHS = 16, 2, 3, 2
SIDE = 16
WIDTH = 256  # the network's last width: airbench94_muon divides its logits by it
HEAD_LR, BIAS_LR, MUON_LR, WEIGHT_DECAY = 0.67, 0.053, 0.24, 2e-6 * BATCH



def _newton_schulz(update: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """airbench94_muon's ``zeropower_via_newtonschulz5``, in float32."""
    a, b, c = 3.4445, -4.7750, 2.0315  # Keller Jordan's Muon (airbench94_muon.py), copied
    x = update / (update.norm() + eps)
    if update.size(0) > update.size(1):
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if update.size(0) > update.size(1) else x


def _airbench_muon_training(model: nn.Module, epochs: List[List[Tuple[torch.Tensor, torch.Tensor]]]) -> None:
    model.stem.conv.weight.requires_grad = False
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.requires_grad = False
    norm_biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    filters = [p for p in model.parameters() if p.ndim == 4 and p.requires_grad]
    stem_bias, head = model.stem.conv.bias, model.head.fc.weight
    sgd = torch.optim.SGD([dict(params=[stem_bias], lr=BIAS_LR, weight_decay=WEIGHT_DECAY / BIAS_LR),
                           dict(params=norm_biases, lr=BIAS_LR, weight_decay=WEIGHT_DECAY / BIAS_LR),
                           dict(params=[head], lr=HEAD_LR, weight_decay=WEIGHT_DECAY / HEAD_LR)],
                          momentum=0.85, nesterov=True)
    buffers = [torch.zeros_like(p) for p in filters]
    total_steps, whiten_bias_steps = STEPS_PER_EPOCH * len(epochs), STEPS_PER_EPOCH * WHITEN_BIAS_EPOCHS
    initial = [group["lr"] for group in sgd.param_groups]
    step = 0
    for batches in epochs:
        model.train()
        for inputs, labels in batches:
            stem_bias.requires_grad = step < whiten_bias_steps
            F.cross_entropy(model(inputs), labels, label_smoothing=0.2, reduction="sum").backward()
            sgd.param_groups[0]["lr"] = initial[0] * (1 - step / whiten_bias_steps)
            for group, lr in zip(sgd.param_groups[1:], initial[1:], strict=True):
                group["lr"] = lr * (1 - step / total_steps)
            sgd.step()
            muon_lr = MUON_LR * (1 - step / total_steps)
            with torch.no_grad():
                for p, buffer in zip(filters, buffers, strict=True):
                    buffer.mul_(0.6).add_(p.grad)
                    update = p.grad + 0.6 * buffer
                    p.mul_(len(p) ** 0.5 / p.norm())
                    p.add_(_newton_schulz(update.reshape(len(update), -1)).view_as(p), alpha=-muon_lr)
            model.zero_grad(set_to_none=True)
            step += 1


def test_the_airbench94_muon_preset_takes_airbench94_muons_steps():
    torch.manual_seed(0)
    whitening_images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    epochs = [[(torch.randn(BATCH, 3, SIDE, SIDE, dtype=torch.float64), torch.randint(0, 10, (BATCH,)))
               for _ in range(STEPS_PER_EPOCH)]
              for _ in range(EPOCHS)]
    config = resolve_config("airbench94_muon", {
        **airbench_muon_sgd(HEAD_LR, BIAS_LR, WEIGHT_DECAY, BATCH), "batch_size": BATCH, "epochs": EPOCHS,
        "whiten_bias_epochs": WHITEN_BIAS_EPOCHS, "channels_last": False, "amp": "none"})
    trainer = Trainer(config, torch.device("cpu"), STEPS_PER_EPOCH, whitening_images)
    trainer.model.double()  # in place: the optimizer keeps the same parameters
    reference = copy.deepcopy(trainer.model).requires_grad_(True)
    initial = copy.deepcopy(trainer.model.state_dict())
    reference.head.logit_scale = 1 / WIDTH
    with torch.no_grad():
        reference.head.fc.weight.mul_(WIDTH / 9)
    for epoch, batches in enumerate(epochs):
        trainer.train_epoch(FixedBatches(batches), epoch)
    _airbench_muon_training(reference, epochs)
    ours, theirs = trainer.model.state_dict(), reference.state_dict()
    theirs["head.fc.weight"] = theirs["head.fc.weight"] * 9 / WIDTH
    assert all(not torch.equal(ours[name], initial[name]) for name in ours if name.endswith("conv.weight")
               and name != "stem.conv.weight"), "the filters must have trained"
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_preset_is_airbench94_muons_configuration():
    preset = PRESETS["airbench94_muon"]
    assert preset["model"] == "dynconv_cifar_fast_static"
    assert (preset["epochs"], preset["batch_size"], preset["whiten_bias_epochs"]) == (8, 2000, 3)
    assert (preset["optimizer"], preset["muon_lr"], preset["muon_momentum"]) == ("muon", 0.24, 0.6)
    assert preset["momentum"] == 0.85 and preset["nesterov"] and preset["label_smoothing"] == 0.2
    assert preset["schedule"] == "linear" and preset["warmup_epochs"] == 0 and not preset["lookahead_every"]
    assert preset["whiten_bias_decay"] and preset["tta"] == 2
    # a mean loss over 2000 images: lr * 2000, per-step decay lr * weight_decay = 2e-6 * 2000 as airbench's
    assert abs(preset["lr"] * preset["weight_decay"] - 2e-6 * 2000) < 1e-12
    assert abs(preset["lr"] * preset["bias_lr_scale"] - 0.053 * 2000) < 1e-9
