"""Named training presets: plain dicts of :class:`~cifar10_recipe.config.TrainConfig` values.

``coursework`` is the coursework's pipeline (``--num-classes 20`` reproduces its 20-class quirk); ``cpu`` is
``airbench94_muon`` for 9 epochs, the 2-core CPU's preset; ``tiny`` is SGD on ``dynconv_cifar_tiny`` (the shipped
tiny weights' recipe); ``airbench94`` and ``airbench94_muon`` are airbench's two recipes (Jordan 2024,
https://arxiv.org/abs/2404.00498) on airbench94's network, checked step by step against airbench's loops in the tests;
``fast`` is ``airbench94`` on the network with dynamic blocks. What each is for and what it reaches: the docs'
training page (``docs/recipe.rst``).
"""
from typing import Any, Dict


def airbench_schedule(epochs: int) -> Dict[str, Any]:
    """Length-dependent values of airbench's recipe for ``epochs`` epochs: its triangular lr peaks at 23% of training
    (``peak=0.23``), and evaluation happens once, at the end."""
    return {"epochs": epochs, "warmup_epochs": round(0.23 * epochs, 2), "eval_every": epochs}


def decoupled_sgd(lr: float, weight_decay: float, momentum: float, batch_size: int) -> Dict[str, float]:
    """airbench's decoupled SGD hyperparameters as torch SGD's for a mean loss over ``batch_size`` images.

    airbench sums the loss over the batch and divides its lr (given per 1024 examples) by ``1024 * (1 + 1 / (1 -
    momentum))``, the step-size gain of Nesterov momentum, so that lr, momentum and weight decay tune independently;
    its weight decay per step is ``weight_decay * batch_size / (that scale)`` whatever the lr. The same steps with a
    mean loss and torch's coupled (L2) weight decay take ``lr * batch_size / scale`` and ``weight_decay / lr``.

    Example:
        >>> round(decoupled_sgd(11.5, 0.0153, 0.85, 1024)["lr"], 6)
        1.5
    """
    scale = 1024 * (1 + 1 / (1 - momentum))
    return {"lr": lr * batch_size / scale, "weight_decay": weight_decay / lr, "momentum": momentum}


def airbench_muon_sgd(head_lr: float, bias_lr: float, weight_decay: float, batch_size: int) -> Dict[str, float]:
    """airbench94_muon's SGD hyperparameters (head, BatchNorm shifts, stem bias) as ours for a mean loss over
    ``batch_size`` images and our head.

    airbench94_muon sums the loss over the batch and gives torch SGD ``lr`` and ``weight_decay / lr``, so each step
    decays by ``weight_decay`` whatever the lr; with a mean loss the same steps take ``lr * batch_size``. Its head is
    rescaled to unit std and its logits divided by 256 (the width); ours keeps PyTorch's initialisation (std 0.036,
    about 9/256) and scales logits by 1/9: the same function for ``ours = theirs * 9 / 256``, under which SGD's lr maps
    by ``(9 / 256) ** 2``. The BatchNorm shifts' and the stem bias's lr are given as multiples of the head's.

    Example:
        >>> values = airbench_muon_sgd(0.67, 0.053, 2e-6 * 2000, 2000)
        >>> round(values["lr"], 4), round(values["bias_lr_scale"], 1)
        (1.6561, 64.0)
    """
    lr = head_lr * batch_size * (9 / 256) ** 2
    bias_scale = bias_lr * batch_size / lr
    return {"lr": lr, "weight_decay": weight_decay / lr, "bias_lr_scale": bias_scale,
            "whiten_bias_lr_scale": bias_scale}


AIRBENCH94: Dict[str, Any] = dict(
    model="dynconv_cifar_fast_static",
    loader="tensor",
    crop_padding=2, pad_mode="reflect", flip="alternate", cutout=0,
    **airbench_schedule(10),
    batch_size=1024,
    optimizer="sgd", nesterov=True, **decoupled_sgd(11.5, 0.0153, 0.85, 1024), decay_all=True, bias_lr_scale=64.0,
    schedule="triangle", lr_start_factor=0.2, lr_end_factor=0.07,
    lookahead_every=5, lookahead_decay=0.95,
    freeze_norm_weights=True,
    label_smoothing=0.2,
    whiten=True, whiten_bias_epochs=3,
    channels_last=True,
    tta=2,
)

AIRBENCH94_MUON: Dict[str, Any] = {
    **AIRBENCH94,
    "epochs": 8, "warmup_epochs": 0.0, "eval_every": 8,
    "batch_size": 2000,
    "optimizer": "muon", "muon_lr": 0.24, "muon_momentum": 0.6, "momentum": 0.85, "nesterov": True,
    **airbench_muon_sgd(0.67, 0.053, 2e-6 * 2000, 2000),
    "schedule": "linear", "lr_start_factor": 0.0, "lr_end_factor": 0.0,
    "lookahead_every": 0,
    "whiten_bias_decay": True,
}

PRESETS: Dict[str, Dict[str, Any]] = {
    "coursework": dict(
        model="dynconv_cifar",
        loader="torchvision",      # RandomHorizontalFlip, RandomCrop(32, 4), ToTensor, Cutout(1, 16), Normalize
        normalization="coursework",
        crop_padding=4, pad_mode="zeros", flip="random", cutout=16, cutout_holes=1,
        epochs=50,
        batch_size=64,
        optimizer="adam", lr=1e-3, weight_decay=1e-4, decay_all=True,
        schedule="step", step_size=30, gamma=0.1,   # StepLR(30, 0.1), stepped per epoch
        label_smoothing=0.0,
    ),
    "tiny": dict(
        model="dynconv_cifar_tiny",
        loader="tensor",
        crop_padding=4, pad_mode="reflect", flip="alternate", cutout=0,
        epochs=11,
        batch_size=256,
        optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4, decay_all=False,
        schedule="linear", warmup_epochs=1.0,
        label_smoothing=0.2,
        channels_last=True,
        amp="auto",                # bf16 where the CPU has it natively, else float32 (emulated bf16 is 8-11x slower)
        tta=1,
    ),
    "cpu": {**AIRBENCH94_MUON, "epochs": 9, "eval_every": 9},
    "airbench94": AIRBENCH94,
    "airbench94_muon": AIRBENCH94_MUON,
    "fast": {**AIRBENCH94, "model": "dynconv_cifar_fast"},
}
