"""Patch-whitening initialisation of a stem convolution, after airbench94 (Jordan 2024,
https://arxiv.org/abs/2404.00498), which took it from tysam-code's hlb-CIFAR10.

The stem's k x k filters become the eigenvectors of the covariance of k x k image patches, scaled by the inverse
square root of their eigenvalues, and their negatives: the first layer then outputs decorrelated, unit-variance
patch features from the first step.
"""
import torch
from torch import nn


@torch.no_grad()
def init_patch_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set ``conv``'s weights from the patch covariance of ``images`` (normalised floats, (N, C, H, W)).

    ``conv`` must have ``2 * C * k * k`` output channels: one per eigenvector, and one per negated eigenvector.
    """
    channels = images.shape[1]
    kh, kw = conv.kernel_size
    dims = channels * kh * kw
    if conv.out_channels != 2 * dims or conv.in_channels != channels:
        raise ValueError(f"patch whitening of {channels}-channel {kh}x{kw} patches needs a conv with {channels} inputs "
                         f"and {2 * dims} outputs, got {conv.in_channels} -> {conv.out_channels}")
    patches = images.float().unfold(2, kh, 1).unfold(3, kw, 1)          # (N, C, H', W', kh, kw)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, dims)       # rows in the conv weight's (C, kh, kw) order
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0).reshape(dims, channels, kh, kw)
    conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight))
