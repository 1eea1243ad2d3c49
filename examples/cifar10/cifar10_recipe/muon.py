"""Muon for convolution filters and Nesterov SGD for everything else, in one optimizer (airbench94_muon's).

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) replaces a filter's momentum update by its
orthogonalisation: the update reshaped to a matrix (out_channels, in_channels * kh * kw) is mapped to a matrix with the
same singular vectors and singular values near 1, by a few Newton-Schulz iterations. airbench94_muon
(``airbench94_muon.py`` in KellerJordan/cifar10-airbench) adds a weight normalisation: before every update each filter
tensor is rescaled to Frobenius norm sqrt(out_channels), so the update's size relative to the weights is the lr.

torch.optim.Muon takes matrices only and has neither the normalisation nor SGD for the other parameters, so this is
our own, with torch's functional SGD for the parameter groups that are not Muon's.
"""
from typing import Any, Dict, Iterable, List

import torch
from torch.optim.sgd import sgd

#: Coefficients of the quintic Newton-Schulz iteration (Jordan's, chosen for the steepest slope at 0).
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Newton-Schulz approximation of ``U V^T`` for ``matrix = U S V^T``: the same singular vectors, and singular
    values in roughly [0.5, 1.2] instead of exactly 1 (what the fast coefficients trade for few steps), except those
    too small relative to the largest to grow that far in ``steps`` (each step multiplies a small one by 3.4); in
    float32.

    Shape:
        - matrix: (M, N), returned likewise
    """
    if matrix.ndim != 2:
        raise ValueError(f"orthogonalize needs a matrix, got a tensor of shape {tuple(matrix.shape)}")
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    tall = matrix.shape[0] > matrix.shape[1]
    x = matrix.to(torch.promote_types(matrix.dtype, torch.float32))
    x = x.T if tall else x
    x = x / (x.norm() + eps)  # the Frobenius norm bounds the spectral norm, so every singular value starts <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for the groups with ``muon=True``, Nesterov-capable SGD (torch's) for the rest.

    A Muon group's parameters (convolution filters, ``(out, in, kh, kw)``, or matrices) take, per step:
    ``buffer = momentum * buffer + grad``; ``update = grad + momentum * buffer`` (Nesterov) or ``buffer``;
    ``p *= sqrt(out) / ||p||`` (with ``normalize``); ``p -= lr * orthogonalize(update)``. Muon groups have no weight
    decay: the normalisation fixes each filter's norm. Other groups are :class:`torch.optim.SGD`'s, with its
    ``lr``, ``momentum``, ``nesterov`` and ``weight_decay``.

    Args:
        params: Parameter groups (dicts); a group with ``"muon": True`` is Muon's.
        lr: Default lr of every group.
        momentum: Default momentum of every group.
        nesterov: Nesterov momentum (every group).
        weight_decay: Default L2 weight decay of the SGD groups.
        newton_schulz_steps: Iterations of :func:`orthogonalize`.
        normalize: Rescale each Muon parameter to Frobenius norm sqrt(out) before its update.
    """

    def __init__(self, params: Iterable[Dict[str, Any]], lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, newton_schulz_steps: int = 3, normalize: bool = True):
        if lr < 0.0 or momentum < 0.0 or weight_decay < 0.0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        if newton_schulz_steps < 1:
            raise ValueError(f"newton_schulz_steps must be >= 1, got {newton_schulz_steps}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, muon=False,
                        newton_schulz_steps=newton_schulz_steps, normalize=normalize)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and group["weight_decay"]:
                raise ValueError("Muon groups take no weight decay (the normalisation fixes the filters' norms), "
                                 f"got weight_decay={group['weight_decay']}")
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("Muon groups hold matrices or convolution filters only (ndim >= 2)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                self._muon_step(group, params)
                continue
            buffers: List[Any] = [self.state[p].get("momentum_buffer") for p in params]
            sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["nesterov"],
                maximize=False)
            if group["momentum"]:
                for p, buffer in zip(params, buffers, strict=True):
                    self.state[p]["momentum_buffer"] = buffer
        return loss

    def _muon_step(self, group: Dict[str, Any], params: List[torch.Tensor]) -> None:
        momentum = group["momentum"]
        for p in params:
            grad = p.grad
            if momentum:
                buffer = self.state[p].get("momentum_buffer")
                if buffer is None:
                    buffer = self.state[p]["momentum_buffer"] = torch.zeros_like(grad)
                buffer.mul_(momentum).add_(grad)
                grad = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
            if group["normalize"]:
                p.mul_(p.shape[0] ** 0.5 / p.norm())
            update = orthogonalize(grad.reshape(len(grad), -1), group["newton_schulz_steps"])
            p.add_(update.view_as(p).to(p.dtype), alpha=-group["lr"])
