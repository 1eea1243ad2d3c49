"""Factory that picks a block implementation from a name, so model configs name block kinds as data."""
from typing import Dict, Sequence, Tuple, Type, Union

from timm.layers import ConvNormAct, get_norm_act_layer
from torch import nn

from ._checks import check_positive_int, per_branch_kernel_sizes
from .cond_conv import CondConv2d
from .dy_conv import DyConv2d
from .dynamic_block import DynamicBlock
from .kernel_mixing_block import KernelMixingBlock
from .od_conv import ODConv2d

KERNEL_MIXING_LAYERS: Dict[str, Type[nn.Module]] = {"condconv": CondConv2d, "dyconv": DyConv2d, "odconv": ODConv2d}
BLOCK_KINDS: Tuple[str, ...] = ("branch", "static", *KERNEL_MIXING_LAYERS)


def create_block(
        kind: str,
        in_channels: int,
        out_channels: int,
        *,
        num_convs: int = 4,
        kernel_size: Union[int, Sequence[int]] = 3,
        stride: int = 1,
        act_layer: Union[str, Type[nn.Module]] = nn.ReLU,
        norm_layer: Type[nn.Module] = nn.BatchNorm2d,
        **kwargs,
) -> nn.Module:
    """Build a Conv-Norm-Act style block of the given kind.

    Args:
        kind: ``"branch"`` for :class:`~dynconv.layers.DynamicBlock` (output mixing of K branches; with
            ``num_convs=1`` it is a static Conv-Norm-Act, so that is built instead); ``"condconv"``, ``"dyconv"`` or
            ``"odconv"`` for a kernel-mixing convolution with K experts followed by Norm-Act; ``"static"`` for a plain
            Conv-Norm-Act (timm's ``ConvNormAct``). All but ``"branch"`` need a single kernel size.
        in_channels: Input channels.
        out_channels: Output channels.
        num_convs: Number of branches K (ignored by ``"static"``).
        kernel_size: One odd size, or one per branch.
        stride: Stride of the convolution.
        act_layer: Activation type or timm activation name.
        norm_layer: Normalisation layer type.
        **kwargs: Extra arguments of a dynamic block (``temperature``; ``routing_hidden`` for ``"branch"``; ``mode``
            for the kernel-mixing kinds); a static block has no routing, so it ignores them.

    Returns:
        The block, mapping (B, in_channels, H, W) to (B, out_channels, H / stride, W / stride).

    Example:
        >>> create_block("branch", 8, 16, num_convs=2)
        DynamicBlock(
          8, 16, num_convs=2, kernel_sizes=(3, 3), stride=1, padding=1
          ...
    """
    if kind not in BLOCK_KINDS:
        raise ValueError(f"block kind must be one of {BLOCK_KINDS}, got {kind!r}")
    if kind == "branch":
        check_positive_int("num_convs", num_convs)
        sizes = per_branch_kernel_sizes(kernel_size, num_convs)
        if num_convs > 1:
            return DynamicBlock(
                in_channels, out_channels, num_convs, sizes, stride,
                act_layer=act_layer, norm_layer=norm_layer, **kwargs)
    else:
        sizes = per_branch_kernel_sizes(kernel_size, 1 if isinstance(kernel_size, int) else len(kernel_size))
        if len(set(sizes)) != 1:
            raise ValueError(f"a {kind} block has one kernel size, so kernel_size must hold one size, "
                             f"got {kernel_size!r}")
    if kind in KERNEL_MIXING_LAYERS:
        if kwargs.pop("routing_hidden", None) is not None:
            raise ValueError(f"routing_hidden applies to 'branch' blocks only, not to {kind!r}")
        conv = KERNEL_MIXING_LAYERS[kind](in_channels, out_channels, sizes[0], stride, num_experts=num_convs,
                                          **kwargs)
        return KernelMixingBlock(conv, get_norm_act_layer(norm_layer, act_layer)(out_channels))
    return ConvNormAct(
        in_channels, out_channels, sizes[0], stride=stride, padding=sizes[0] // 2,
        act_layer=act_layer, norm_layer=norm_layer)
