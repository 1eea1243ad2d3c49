"""Lookahead-style weight averaging, after airbench94 (Jordan 2024, https://arxiv.org/abs/2404.00498).

Every ``every`` optimizer steps a slow copy of the model's floating-point state (parameters and BatchNorm statistics)
moves toward the model, ``slow = decay * slow + (1 - decay) * model``, and the model is then reset to the slow copy.
The decay grows as ``base ** every * (step / total_steps) ** 3``: no averaging early on, ever more towards the end. At
the last step the model takes the slow copy's values.

Unlike an exponential moving average, which is evaluated beside the model, the model itself continues from the
average, so training and evaluation see the same weights.
"""
from typing import Dict

import torch
from torch import nn


class Lookahead:
    """The slow copy of ``model``'s floating-point state.

    Args:
        model: The trained model; its state dict's floating-point tensors are averaged.
        every: Optimizer steps between updates.
        total_steps: Steps of the whole run (the decay schedule's horizon).
        base: Per-step decay at the end of training (airbench94: 0.95).
    """

    def __init__(self, model: nn.Module, every: int, total_steps: int, base: float = 0.95):
        if every < 1 or total_steps < 1:
            raise ValueError(f"every and total_steps must be >= 1, got {every} and {total_steps}")
        if not 0.0 <= base < 1.0:
            raise ValueError(f"base must be in [0, 1), got {base}")
        self.every, self.total_steps, self.base = every, total_steps, base
        self.slow = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()
                     if tensor.is_floating_point()}

    def decay(self, step: int) -> float:
        """Weight of the slow copy at an update after ``step`` steps."""
        return self.base ** self.every * (step / self.total_steps) ** 3

    @torch.no_grad()
    def step(self, model: nn.Module, step: int) -> None:
        """Call after optimizer step number ``step`` (1-based): averages every ``every`` steps, and at the last step
        sets the model to the slow copy."""
        if step % self.every == 0:
            self._update(model, self.decay(step))
        if step == self.total_steps:
            self._update(model, 1.0)

    def _update(self, model: nn.Module, decay: float) -> None:
        state = model.state_dict()
        for name, slow in self.slow.items():
            slow.lerp_(state[name], 1.0 - decay)
            state[name].copy_(slow)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return dict(self.slow)

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        if state.keys() != self.slow.keys():
            raise ValueError("the lookahead state does not belong to this model "
                             f"({len(state)} tensors, expected {len(self.slow)})")
        for name, tensor in state.items():
            self.slow[name].copy_(tensor)
