"""Argument and input checks shared by the layers and models.

Every check raises ``ValueError`` with a message that names the argument, the value received and what was
expected, so a user can act on it without reading our code.
"""
from typing import Optional, Sequence, Tuple, Type, Union

import torch
from timm.layers import get_act_layer, register_notrace_function
from timm.layers.create_act import _ACT_LAYER_DEFAULT
from torch import nn


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_non_negative_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 0, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def check_positive_float(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def per_branch_kernel_sizes(kernel_size: Union[int, Sequence[int]], num_experts: int) -> Tuple[int, ...]:
    """Expand ``kernel_size`` (one size, or one per branch) to a tuple of ``num_experts`` odd sizes, checking both.

    Odd sizes are required because branches of different sizes are fused by zero-padding the smaller kernels
    symmetrically to the largest; only odd kernels have a centre, so only they keep ``kernel_size // 2`` padding
    equivalent to "same" padding.
    """
    check_positive_int("num_experts", num_experts)
    sizes = tuple(kernel_size) if isinstance(kernel_size, (list, tuple)) else (kernel_size,) * num_experts
    if len(sizes) != num_experts:
        raise ValueError(
            f"kernel_size must be one int or a sequence of num_experts={num_experts} ints, got {kernel_size!r} "
            f"({len(sizes)} values)")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"kernel_size values must be positive odd integers (1, 3, 5, ...), got {kernel_size!r}")
    return sizes


@register_notrace_function  # a leaf in torch.fx graphs: its Python branches on shape and dtype cannot be traced
def check_input(x: torch.Tensor, in_channels: int, dtype: Optional[torch.dtype] = None) -> None:
    """Raise ``ValueError`` unless ``x`` is a floating-point (B, in_channels, H, W) tensor of ``dtype``.

    Under ``torch.autocast`` any floating dtype is accepted, since autocast casts inputs and weights itself.
    """
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"expected input of shape (B, {in_channels}, H, W), got a tensor of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point input ({dtype or 'float'}), got {x.dtype}; convert images with "
                         f"x.float() / 255 and normalise them")
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(f"expected input of dtype {dtype} (the parameters' dtype), got {x.dtype}; convert it with "
                         f"x.to({dtype}), or run under torch.autocast for mixed precision")


def check_act_layer(act_layer: Union[str, Type[nn.Module], None]) -> Union[str, Type[nn.Module], None]:
    """Return ``act_layer`` if it is a module type, ``None`` or a timm activation name, else raise ``ValueError``
    listing the names timm accepts."""
    if isinstance(act_layer, str):
        try:
            get_act_layer(act_layer)
        except KeyError:
            raise ValueError(f"act_layer must be a module type or one of timm's activation names "
                             f"({', '.join(sorted(_ACT_LAYER_DEFAULT))}), got {act_layer!r}") from None
    return act_layer


@register_notrace_function  # a leaf in torch.fx graphs: it branches on the input's size
def check_min_size(x: torch.Tensor, min_size: int, name: str) -> None:
    """Raise ``ValueError`` if the (B, C, H, W) input ``x`` is smaller than ``min_size`` on either side."""
    height, width = x.shape[-2:]
    if height < min_size or width < min_size:
        raise ValueError(f"{name} needs images of at least {min_size}x{min_size} pixels (its poolings would leave "
                         f"nothing of a smaller one), got {height}x{width}")


def check_conv_geometry(in_channels: int, out_channels: int, kernel_size: int, stride: int, dilation: int,
                        groups: int, **more: int) -> None:
    """Raise ``ValueError`` unless every size is a positive int and ``groups`` divides both channel counts; ``more``
    names further sizes to check (e.g. ``num_experts``)."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", kernel_size),
                        ("stride", stride), ("dilation", dilation), ("groups", groups), *more.items()):
        check_positive_int(name, value)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
