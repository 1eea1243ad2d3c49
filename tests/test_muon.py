"""Muon for convolution filters and SGD for the rest (``cifar10_recipe.muon``).

Oracles: the Newton-Schulz iteration acts on singular values only, so applying its quintic polynomial to the singular
values of the normalised matrix (float64 SVD) must give the same matrix; the SGD groups must take torch.optim.SGD's
steps; a Muon step is written out from airbench94_muon's formula.
"""
import copy

import pytest
import torch
from torch import nn

from cifar10_recipe.muon import Muon, orthogonalize


def _orthogonalize_by_svd(matrix: torch.Tensor, steps: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    s = s / matrix.double().norm()
    a, b, c = 3.4445, -4.7750, 2.0315  # Keller Jordan's Muon (airbench94_muon.py), copied
    for _ in range(steps):
        s = a * s + b * s ** 3 + c * s ** 5
    return (u * s) @ vh


@pytest.mark.parametrize("shape", [(8, 24), (24, 8), (16, 16)])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_orthogonalize_applies_the_polynomial_to_the_singular_values(shape, steps):
    torch.manual_seed(steps)
    matrix = torch.randn(shape)
    torch.testing.assert_close(orthogonalize(matrix, steps).double(), _orthogonalize_by_svd(matrix, steps),
                               rtol=1e-4, atol=1e-5)


def test_orthogonalize_brings_singular_values_near_one():
    torch.manual_seed(0)
    # a badly conditioned gradient: singular values over two orders of magnitude
    u, _ = torch.linalg.qr(torch.randn(64, 64))
    v, _ = torch.linalg.qr(torch.randn(256, 64))
    matrix = u @ torch.diag(torch.logspace(-2, 0, 64)) @ v.T
    singular_values = torch.linalg.svdvals(orthogonalize(matrix, steps=5))
    assert singular_values.min() > 0.5 and singular_values.max() < 1.25


def test_orthogonalize_refuses_a_non_matrix():
    with pytest.raises(ValueError, match="needs a matrix"):
        orthogonalize(torch.randn(2, 3, 4))


def test_sgd_groups_take_torch_sgd_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3))
    reference = copy.deepcopy(model)
    settings = dict(lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01)
    ours = Muon([{"params": list(model.parameters())}], **settings)
    theirs = torch.optim.SGD(reference.parameters(), **settings)
    for _ in range(4):
        x = torch.randn(6, 5)
        for m, optimizer in ((model, ours), (reference, theirs)):
            optimizer.zero_grad()
            m(x).square().sum().backward()
            optimizer.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_muon_step_is_airbench94_muons():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, bias=False)
    weight = conv.weight.detach().clone()
    lr, momentum = 0.24, 0.6
    optimizer = Muon([{"params": [conv.weight], "muon": True}], lr=lr, momentum=momentum, nesterov=True)
    buffer = torch.zeros_like(weight)
    for _ in range(3):
        x = torch.randn(2, 4, 5, 5)
        optimizer.zero_grad()
        conv(x).square().sum().backward()
        grad = conv.weight.grad.clone()
        optimizer.step()
        # airbench94_muon: buf = m buf + g; g + m buf; rescale to norm sqrt(out); step along the orthogonalised update
        buffer = momentum * buffer + grad
        update = (grad + momentum * buffer).reshape(6, -1)
        weight = weight * 6 ** 0.5 / weight.norm()
        weight = weight - lr * _orthogonalize_by_svd(update, 3).float().view_as(weight)
        torch.testing.assert_close(conv.weight.detach(), weight, rtol=1e-4, atol=1e-5)


def test_muon_keeps_each_filter_tensor_at_norm_sqrt_out():
    conv = nn.Conv2d(3, 8, 3)
    with torch.no_grad():
        conv.weight.mul_(5.0)
    optimizer = Muon([{"params": [conv.weight], "muon": True}], lr=0.0)
    conv(torch.randn(1, 3, 4, 4)).sum().backward()
    optimizer.step()
    torch.testing.assert_close(conv.weight.norm(), torch.tensor(8 ** 0.5))


@pytest.mark.parametrize("group, message", [
    ({"muon": True, "weight_decay": 0.1}, "no weight decay"),
    ({"muon": True, "params": [nn.Parameter(torch.zeros(3))]}, "matrices or convolution filters"),
])
def test_bad_muon_groups_are_refused(group, message):
    group = {"params": [nn.Parameter(torch.zeros(3, 3))], **group}
    with pytest.raises(ValueError, match=message):
        Muon([group], lr=0.1)


def test_bad_arguments_are_refused():
    params = [{"params": [nn.Parameter(torch.zeros(3, 3))]}]
    with pytest.raises(ValueError, match="must be >= 0"):
        Muon(params, lr=-1.0)
    with pytest.raises(ValueError, match="newton_schulz_steps"):
        Muon(params, lr=0.1, newton_schulz_steps=0)
