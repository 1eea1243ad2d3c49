"""Schedules of the routing networks: temperature annealing, as in Dynamic Convolution (Chen et al., CVPR 2020,
https://arxiv.org/abs/1912.03458: start near-uniform, temperature 30, so every kernel trains, then sharpen to 1), and
KernelWarehouse's init blend (from each layer's fixed cell assignment to its learnt attention)."""
from typing import Callable, List

from torch import nn

from .layers import Router


def temperature_schedule(start: float = 30.0, end: float = 1.0, anneal_epochs: float = 10.0
                         ) -> Callable[[float], float]:
    """Temperature as a function of (fractional) epoch: linear from ``start`` to ``end`` over ``anneal_epochs``, then
    ``end``.

    Example:
        >>> schedule = temperature_schedule(30.0, 1.0, anneal_epochs=10)
        >>> [schedule(epoch) for epoch in (0, 5, 10, 20)]
        [30.0, 15.5, 1.0, 1.0]
    """
    for name, value in (("start", start), ("end", end), ("anneal_epochs", anneal_epochs)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise ValueError(f"temperatures and anneal_epochs must be finite numbers > 0, got {name}={value!r} "
                             f"(start={start}, end={end}, anneal_epochs={anneal_epochs})")

    def temperature(epoch: float) -> float:
        progress = min(max(epoch / anneal_epochs, 0.0), 1.0)
        return start + (end - start) * progress

    return temperature


def routing_modules(model: nn.Module) -> List[Router]:
    """Every :class:`~dynconv.layers.Router` of ``model`` (each owns a temperature), in module order."""
    return [m for m in model.modules() if isinstance(m, Router)]


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set the temperature of every routing module of ``model`` (:func:`routing_modules`); returns how many were
    set."""
    modules = routing_modules(model)
    for module in modules:
        module.set_temperature(temperature)
    return len(modules)


def init_blend_modules(model: nn.Module) -> List[nn.Module]:
    """Every routing module of ``model`` with an init blend (KernelWarehouse's attention,
    :meth:`~dynconv.layers.KWAttention.set_init_blend`), in module order."""
    return [m for m in routing_modules(model) if hasattr(m, "set_init_blend")]


def set_init_blend(model: nn.Module, value: float) -> int:
    """Set the init blend (weight of each layer's fixed cell assignment against its attention, in [0, 1]) of every
    KernelWarehouse attention of ``model``; returns how many were set (0 for models without KernelWarehouse)."""
    modules = init_blend_modules(model)
    for module in modules:
        module.set_init_blend(value)
    return len(modules)


def init_blend_schedule(anneal_epochs: float) -> Callable[[float], float]:
    """KernelWarehouse's schedule of the init blend as a function of (fractional) epoch: linear from 1 to 0 over
    ``anneal_epochs`` (the authors' ``temp_epoch``: 20 of ResNet's 300 epochs, 15 of MobileNetV2's 150), then 0.

    Example:
        >>> schedule = init_blend_schedule(2.0)
        >>> [schedule(epoch) for epoch in (0, 1, 2, 3)]
        [1.0, 0.5, 0.0, 0.0]
    """
    if isinstance(anneal_epochs, bool) or not isinstance(anneal_epochs, (int, float)) or not (
            0 < anneal_epochs < float("inf")):
        raise ValueError(f"anneal_epochs must be a finite number > 0, got {anneal_epochs!r}")

    def blend(epoch: float) -> float:
        return max(0.0, 1.0 - epoch / anneal_epochs)

    return blend
