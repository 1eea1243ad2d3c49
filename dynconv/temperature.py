"""Routing temperature annealing, as in Dynamic Convolution (Chen et al., CVPR 2020,
https://arxiv.org/abs/1912.03458): start near-uniform (temperature 30) so every kernel trains, then sharpen to 1."""
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
