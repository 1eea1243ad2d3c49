"""Argument and input checks shared by the layers and models.

Every check raises ``ValueError`` with a message that names the argument, the value received and what was
expected, so a user can act on it without reading our code.
"""
from typing import Sequence, Tuple, Union

import torch
from timm.layers import register_notrace_function


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_float(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def per_branch_kernel_sizes(kernel_size: Union[int, Sequence[int]], num_convs: int) -> Tuple[int, ...]:
    """Expand ``kernel_size`` (one size, or one per branch) to a tuple of ``num_convs`` odd sizes.

    Odd sizes are required because branches of different sizes are fused by zero-padding the smaller kernels
    symmetrically to the largest; only odd kernels have a centre, so only they keep ``kernel_size // 2`` padding
    equivalent to "same" padding.
    """
    sizes = tuple(kernel_size) if isinstance(kernel_size, (list, tuple)) else (kernel_size,) * num_convs
    if len(sizes) != num_convs:
        raise ValueError(
            f"kernel_size must be one int or a sequence of num_convs={num_convs} ints, got {kernel_size!r} "
            f"({len(sizes)} values)")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"kernel_size values must be positive odd integers (1, 3, 5, ...), got {kernel_size!r}")
    return sizes


@register_notrace_function  # a leaf in torch.fx graphs: its Python branch on the shape cannot be traced
def check_input(x: torch.Tensor, in_channels: int) -> None:
    """Raise ``ValueError`` unless ``x`` is a (B, in_channels, H, W) tensor."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"expected input of shape (B, {in_channels}, H, W), got a tensor of shape {tuple(x.shape)}")
