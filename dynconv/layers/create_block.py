"""A registry of block kinds, so that model configs name blocks as data and new kinds join by registering.

Every builder takes ``(in_channels, out_channels, *, num_experts, kernel_size, stride, act_layer, norm_layer, device,
dtype, **kwargs)`` and returns a Conv-Norm-Act style module mapping (B, C_in, H, W) to (B, C_out, H / stride,
W / stride). :func:`register_block` adds one; :func:`create_block` builds one by name.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple, Type, Union

import torch
from timm.layers import ConvNormAct, get_norm_act_layer
from torch import nn

from ._checks import check_act_layer, check_positive_int, per_branch_kernel_sizes
from .cond_conv import CondConv2d
from .dcd_conv import DCDConv2d
from .dy_conv import DyConv2d
from .dynamic_block import DynamicBlock
from .kernel_mixing_block import KernelMixingBlock
from .od_conv import ODConv2d

BlockBuilder = Callable[..., nn.Module]

_BLOCK_BUILDERS: Dict[str, BlockBuilder] = {}

# routing arguments that only dynamic blocks take; a static block has no routing, so it ignores them
ROUTING_ARGS = ("temperature", "rd_ratio", "rd_channels", "rd_divisor", "mode")


def register_block(kind: str) -> Callable[[BlockBuilder], BlockBuilder]:
    """Decorator that registers a block builder under ``kind`` for :func:`create_block` and model configs.

    Example::

        @register_block("depthwise_separable")
        def depthwise_separable(in_channels, out_channels, *, stride, act_layer, norm_layer, device=None,
                                dtype=None, **kwargs):
            return timm.layers.DepthwiseSeparableConv(...)

        timm.create_model("dynconv_cifar_tiny", block="depthwise_separable")
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a block kind must be a non-empty string, got {kind!r}")

    def register(builder: BlockBuilder) -> BlockBuilder:
        if kind in _BLOCK_BUILDERS:
            raise ValueError(f"block kind {kind!r} is registered already (by {_BLOCK_BUILDERS[kind].__qualname__})")
        _BLOCK_BUILDERS[kind] = builder
        return builder

    return register


def block_kinds() -> Tuple[str, ...]:
    """The registered block kinds, in registration order."""
    return tuple(_BLOCK_BUILDERS)


def _single_kernel_size(kind: str, kernel_size: Union[int, Sequence[int]]) -> int:
    sizes = per_branch_kernel_sizes(kernel_size, 1 if isinstance(kernel_size, int) else len(kernel_size))
    if len(set(sizes)) != 1:
        raise ValueError(f"a {kind} block has one kernel size, so kernel_size must hold one size, got {kernel_size!r}")
    return sizes[0]


def _static_block(in_channels: int, out_channels: int, *, kernel_size: Union[int, Sequence[int]], stride: int,
                  act_layer, norm_layer, device=None, dtype=None, kind: str = "static", **kwargs) -> nn.Module:
    size = _single_kernel_size(kind, kernel_size)
    unknown = set(kwargs) - {"num_experts", *ROUTING_ARGS}
    if unknown:
        raise ValueError(f"unexpected arguments for a {kind} block: {sorted(unknown)}")
    return ConvNormAct(in_channels, out_channels, size, stride=stride, padding=size // 2, act_layer=act_layer,
                       norm_layer=norm_layer, device=device, dtype=dtype)


@register_block("branch")
def _branch_block(in_channels: int, out_channels: int, *, num_experts: int, kernel_size: Union[int, Sequence[int]],
                  stride: int, act_layer, norm_layer, device=None, dtype=None, **kwargs) -> nn.Module:
    check_positive_int("num_experts", num_experts)
    sizes = per_branch_kernel_sizes(kernel_size, num_experts)
    if num_experts == 1:
        return _static_block(in_channels, out_channels, kernel_size=sizes, stride=stride, act_layer=act_layer,
                             norm_layer=norm_layer, device=device, dtype=dtype, kind="branch (K=1)", **kwargs)
    if "mode" in kwargs:
        raise ValueError("mode applies to the kernel-mixing kinds (condconv, dyconv, odconv), not to 'branch'")
    return DynamicBlock(in_channels, out_channels, num_experts, sizes, stride, act_layer=act_layer,
                        norm_layer=norm_layer, device=device, dtype=dtype, **kwargs)


register_block("static")(_static_block)


def _kernel_mixing_builder(kind: str, layer: Type[nn.Module]) -> BlockBuilder:
    def build(in_channels: int, out_channels: int, *, num_experts: int, kernel_size: Union[int, Sequence[int]],
              stride: int, act_layer, norm_layer, device=None, dtype=None, **kwargs) -> nn.Module:
        conv = layer(in_channels, out_channels, _single_kernel_size(kind, kernel_size), stride,
                     num_experts=num_experts, device=device, dtype=dtype, **kwargs)
        norm_act = get_norm_act_layer(norm_layer, act_layer)(out_channels, device=device, dtype=dtype)
        return KernelMixingBlock(conv, norm_act)

    build.__qualname__ = f"kernel_mixing_block[{layer.__name__}]"
    return build


for _kind, _layer in (("condconv", CondConv2d), ("dyconv", DyConv2d), ("odconv", ODConv2d)):
    register_block(_kind)(_kernel_mixing_builder(_kind, _layer))


@register_block("dcd")
def _dcd_block(in_channels: int, out_channels: int, *, num_experts: int, kernel_size: Union[int, Sequence[int]],
               stride: int, act_layer, norm_layer, device=None, dtype=None, **kwargs) -> nn.Module:
    # num_experts is ignored: DCD has no experts, its dynamic part is a channel scale and a low-rank residual
    if "mode" in kwargs:
        raise ValueError("mode applies to the kernel-mixing kinds (condconv, dyconv, odconv), not to 'dcd'")
    conv = DCDConv2d(in_channels, out_channels, _single_kernel_size("dcd", kernel_size), stride,
                     norm_layer=norm_layer, device=device, dtype=dtype, **kwargs)
    norm_act = get_norm_act_layer(norm_layer, act_layer)(out_channels, device=device, dtype=dtype)
    return KernelMixingBlock(conv, norm_act)


def create_block(
        kind: str,
        in_channels: int,
        out_channels: int,
        *,
        num_experts: int = 4,
        kernel_size: Union[int, Sequence[int]] = 3,
        stride: int = 1,
        act_layer: Union[str, Type[nn.Module]] = nn.ReLU,
        norm_layer: Type[nn.Module] = nn.BatchNorm2d,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        **kwargs,
) -> nn.Module:
    """Build a Conv-Norm-Act style block of a registered kind (:func:`block_kinds`).

    Args:
        kind: ``"branch"`` for :class:`~dynconv.layers.DynamicBlock` (output mixing of K branches; with
            ``num_experts=1`` it is a static Conv-Norm-Act, so that is built instead); ``"condconv"``, ``"dyconv"``
            or ``"odconv"`` for a kernel-mixing convolution with K experts followed by Norm-Act
            (:class:`~dynconv.layers.KernelMixingBlock`); ``"dcd"`` for a :class:`~dynconv.layers.DCDConv2d`
            (static kernel, dynamic channel scale and low-rank residual; no experts, so ``num_experts`` is ignored)
            followed by Norm-Act; ``"static"`` for a plain Conv-Norm-Act (timm's
            ``ConvNormAct``); or a kind added with :func:`register_block`. All but ``"branch"`` need one kernel size.
        in_channels: Input channels.
        out_channels: Output channels.
        num_experts: Number of branches or expert kernels K (ignored by ``"static"`` and ``"dcd"``).
        kernel_size: One odd size, or one per branch.
        stride: Stride of the convolution.
        act_layer: Activation type or timm activation name.
        norm_layer: Normalisation layer type.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.
        **kwargs: Routing arguments of a dynamic block (``temperature``, ``rd_ratio``, ``rd_channels``,
            ``rd_divisor``; ``mode`` for the kernel-mixing kinds; ``rank`` and ``pool_size`` for ``"dcd"``); a static
            block has no routing, so it ignores them.

    Returns:
        The block, mapping (B, in_channels, H, W) to (B, out_channels, H / stride, W / stride).

    Example:
        >>> create_block("branch", 8, 16, num_experts=2)
        DynamicBlock(
          8, 16, num_experts=2, kernel_sizes=(3, 3), stride=1, padding=1
          ...
    """
    if kind not in _BLOCK_BUILDERS:
        raise ValueError(f"block kind must be one of {block_kinds()}, got {kind!r}")
    check_act_layer(act_layer)
    return _BLOCK_BUILDERS[kind](in_channels, out_channels, num_experts=num_experts, kernel_size=kernel_size,
                                 stride=stride, act_layer=act_layer, norm_layer=norm_layer, device=device,
                                 dtype=dtype, **kwargs)
