"""The optimizer with its parameter groups, and the learning-rate schedule as a per-step factor."""
import math
from typing import Callable, List, Optional

import torch
from torch import nn

from dynconv import routing_modules
from dynconv.layers import filter_weights

from .config import TrainConfig
from .muon import Muon

#: Name of the parameter group that holds a whitened stem's bias when it has its own lr or schedule.
STEM_BIAS_GROUP = "stem_bias"


def build_optimizer(config: TrainConfig, model: nn.Module,
                    stem_bias: Optional[nn.Parameter] = None) -> torch.optim.Optimizer:
    """Adam, AdamW, SGD or Muon over three groups: weights (ndim > 1), other vectors, and BatchNorm shifts; two more
    for the routing heads' weights and vectors when ``routing_lr_scale`` or ``routing_decay_scale`` is not 1; one for
    ``stem_bias`` (a whitened stem's bias) when ``whiten_bias_lr_scale`` is not 1 or ``whiten_bias_decay`` is set;
    and, for ``muon``, a last group of the convolution filters (:func:`dynconv.layers.filter_weights`: each family
    says which of its parameters are filters), which Muon updates
    (:class:`~cifar10_recipe.muon.Muon`, lr ``muon_lr``, momentum ``muon_momentum``, no weight decay) while SGD
    updates the other groups (airbench94_muon's split).

    Vectors decay only with ``--decay-all``. BatchNorm shifts get ``lr * bias_lr_scale`` and their decay divided by
    the scale, so that they decay per step like every other parameter (airbench94's treatment). The routing heads
    (parameters of every :func:`dynconv.routing_modules`) get ``lr * routing_lr_scale`` and a decay multiplied by
    ``routing_decay_scale / routing_lr_scale``: per step (SGD, AdamW), ``routing_decay_scale`` times what they would
    decay otherwise. With both scales at 1 the groups are the three of runs recorded before the routing scales, so
    their checkpoints resume.
    """
    norm_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine}
    split_routing = config.routing_lr_scale != 1.0 or config.routing_decay_scale != 1.0
    muon = config.optimizer == "muon"
    all_routing = {id(p) for m in routing_modules(model) for p in m.parameters()} if split_routing or muon else set()
    routing = all_routing if split_routing else set()
    split_stem = stem_bias is not None and (config.whiten_bias_lr_scale != 1.0 or config.whiten_bias_decay)
    trainable = [p for p in model.parameters() if p.requires_grad]
    filters = [p for p in filter_weights(model) if p.requires_grad and id(p) not in all_routing] if muon else []
    set_apart = {id(p) for p in filters} | ({id(stem_bias)} if split_stem else set())
    params = [p for p in trainable if id(p) not in routing and id(p) not in set_apart]
    heads = [p for p in trainable if id(p) in routing]
    vector_decay = config.weight_decay if config.decay_all else 0.0
    groups = [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1 and id(p) not in norm_biases], "weight_decay": vector_decay},
        {"params": [p for p in params if id(p) in norm_biases], "lr": config.lr * config.bias_lr_scale,
         "weight_decay": vector_decay / config.bias_lr_scale},
    ]
    if split_routing:
        decay = config.routing_decay_scale / config.routing_lr_scale
        groups += [{"params": [p for p in heads if (p.ndim > 1) == matrices], "lr": config.lr * config.routing_lr_scale,
                    "weight_decay": (config.weight_decay if matrices else vector_decay) * decay}
                   for matrices in (True, False)]
    if split_stem:
        groups.append({"params": [stem_bias], "name": STEM_BIAS_GROUP, "lr": config.lr * config.whiten_bias_lr_scale,
                       "weight_decay": vector_decay / config.whiten_bias_lr_scale})
    if muon:
        groups.append({"params": filters, "muon": True, "lr": config.muon_lr, "momentum": config.muon_momentum,
                       "weight_decay": 0.0})
        return Muon(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                    weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                           weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the peak lr after ``step`` optimizer steps (a LambdaLR stepped once per batch).

    ``step`` equals torch's StepLR(step_size, gamma) stepped once per epoch, as the coursework did; ``linear`` and
    ``cosine`` warm up linearly over ``warmup_epochs`` and then decay to 0 at the last step; ``triangle`` (airbench94)
    runs linearly from ``lr_start_factor`` at step 0 to 1 at step ``warmup_epochs * steps_per_epoch`` and on to
    ``lr_end_factor`` at the last step.
    """
    total = config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if config.schedule == "step":
            return config.gamma ** (step // steps_per_epoch // config.step_size) if config.step_size else 1.0
        if config.schedule == "triangle":
            if step < warmup:
                return config.lr_start_factor + (1.0 - config.lr_start_factor) * step / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 1.0 + (config.lr_end_factor - 1.0) * progress
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if config.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def lr_factors(config: TrainConfig, steps_per_epoch: int,
               optimizer: torch.optim.Optimizer) -> List[Callable[[int], float]]:
    """One :func:`lr_factor` per parameter group of ``optimizer`` (a LambdaLR's lambdas), except that with
    ``whiten_bias_decay`` the stem bias's group decays linearly from its peak to 0 at ``whiten_bias_epochs``
    (airbench94_muon's), when the bias freezes."""
    factor = lr_factor(config, steps_per_epoch)
    stem_steps = config.whiten_bias_epochs * steps_per_epoch

    def stem_factor(step: int) -> float:
        return max(0.0, 1.0 - step / stem_steps)

    return [stem_factor if config.whiten_bias_decay and group.get("name") == STEM_BIAS_GROUP else factor
            for group in optimizer.param_groups]
