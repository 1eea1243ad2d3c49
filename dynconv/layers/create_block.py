"""A registry of block kinds, so that model configs name blocks as data and a family joins by registering its builder
in its own file.

Every builder takes ``(in_channels, out_channels, *, num_experts, kernel_size, stride, act_layer, norm_layer, device,
dtype, **kwargs)`` and returns a Conv-Norm-Act style module mapping (B, C_in, H, W) to (B, C_out, H / stride,
W / stride). Kinds that can put a 2x2 max pool between their convolution and their norm take ``pool_before_norm``;
kinds whose layers share parameters take ``sharing`` (a :class:`~dynconv.layers.family.SharingScope`).
:func:`register_block` adds a kind; :func:`create_block` builds one by name.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Type, Union

import torch
from timm.layers import ConvNormAct
from torch import nn

from .family import SharingScope
from .validation import check_act_layer, per_branch_kernel_sizes

BlockBuilder = Callable[..., nn.Module]

# routing arguments that only dynamic blocks take; a static block has no routing, so it ignores them
ROUTING_ARGS = ("temperature", "rd_ratio", "rd_channels", "rd_divisor", "mode")


@dataclass(frozen=True)
class BlockKind:
    """A registered kind: its builder, and what it can do beyond the common arguments.

    Attributes:
        builder: Builds the block.
        pools_before_norm: Given K, whether the block can put a 2x2 max pool between its convolution and its norm
            (``pool_before_norm=True``); ``None`` for never.
        shares_parameters: Its layers share parameters within a :class:`~dynconv.layers.family.SharingScope`.
    """

    builder: BlockBuilder
    pools_before_norm: Optional[Callable[[int], bool]] = None
    shares_parameters: bool = False


_BLOCK_KINDS: Dict[str, BlockKind] = {}


def register_block(kind: str, *, pools_before_norm: Optional[Callable[[int], bool]] = None,
                   shares_parameters: bool = False) -> Callable[[BlockBuilder], BlockBuilder]:
    """Decorator that registers a block builder under ``kind`` for :func:`create_block` and model configs.

    Args:
        kind: The name configs use.
        pools_before_norm: Given K, whether the builder takes ``pool_before_norm=True`` (a 2x2 max pool between
            convolution and norm, airbench94's order); ``None`` for never.
        shares_parameters: The builder takes ``sharing``, the :class:`~dynconv.layers.family.SharingScope` of the
            range being built.

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
        if kind in _BLOCK_KINDS:
            raise ValueError(f"block kind {kind!r} is registered already (by "
                             f"{_BLOCK_KINDS[kind].builder.__qualname__})")
        _BLOCK_KINDS[kind] = BlockKind(builder, pools_before_norm, shares_parameters)
        return builder

    return register


def block_kinds() -> Tuple[str, ...]:
    """The registered block kinds, in registration order."""
    return tuple(_BLOCK_KINDS)


def can_pool_before_norm(kind: str, num_experts: int) -> bool:
    """Whether a ``kind`` block with K = ``num_experts`` can put a max pool between its convolution and its norm."""
    spec = _BLOCK_KINDS.get(kind)
    return spec is not None and spec.pools_before_norm is not None and spec.pools_before_norm(num_experts)


def shares_parameters(kind: str) -> bool:
    """Whether the layers of ``kind`` share parameters within a sharing range."""
    spec = _BLOCK_KINDS.get(kind)
    return spec is not None and spec.shares_parameters


def single_kernel_size(kind: str, kernel_size: Union[int, Sequence[int]]) -> int:
    """The one kernel size of a block kind that has one, from an int or a sequence of equal sizes."""
    sizes = per_branch_kernel_sizes(kernel_size, 1 if isinstance(kernel_size, int) else len(kernel_size))
    if len(set(sizes)) != 1:
        raise ValueError(f"a {kind} block has one kernel size, so kernel_size must hold one size, got {kernel_size!r}")
    return sizes[0]


def reject_unknown(kind: str, kwargs: Dict, accepted: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the arguments of ``kwargs`` that a ``kind`` block does not take."""
    unknown = set(kwargs) - set(accepted)
    if unknown:
        raise ValueError(f"unexpected arguments for a {kind} block: {sorted(unknown)}")


@register_block("static", pools_before_norm=lambda num_experts: True)
def static_block(in_channels: int, out_channels: int, *, kernel_size: Union[int, Sequence[int]], stride: int,
                 act_layer, norm_layer, device=None, dtype=None, pool_before_norm: bool = False,
                 kind: str = "static", **kwargs) -> nn.Module:
    """timm's ``ConvNormAct``; with ``pool_before_norm`` the same modules as conv -> 2x2 max pool -> norm-act (the
    parameter names stay ``conv.*`` and ``bn.*``). ``num_experts`` and routing arguments are ignored."""
    size = single_kernel_size(kind, kernel_size)
    reject_unknown(kind, kwargs, ("num_experts", *ROUTING_ARGS))
    block = ConvNormAct(in_channels, out_channels, size, stride=stride, padding=size // 2, act_layer=act_layer,
                        norm_layer=norm_layer, device=device, dtype=dtype)
    if pool_before_norm:
        return nn.Sequential(OrderedDict(conv=block.conv, pool=nn.MaxPool2d(2), bn=block.bn))
    return block


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
        pool_before_norm: bool = False,
        sharing: Optional[SharingScope] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        **kwargs,
) -> nn.Module:
    """Build a Conv-Norm-Act style block of a registered kind (:func:`block_kinds`).

    Args:
        kind: ``"static"`` for a plain Conv-Norm-Act (timm's ``ConvNormAct``); ``"branch"`` for
            :class:`~dynconv.layers.DynamicBlock` (output mixing of K branches; with ``num_experts=1`` it is a static
            Conv-Norm-Act, so that is built instead); ``"condconv"``, ``"dyconv"``, ``"odconv"`` for a kernel-mixing
            convolution with K experts followed by Norm-Act (:class:`~dynconv.layers.KernelMixingBlock`); ``"dcd"``
            for a :class:`~dynconv.layers.DCDConv2d` (no experts, so ``num_experts`` is ignored) followed by
            Norm-Act; or a kind added with :func:`register_block`. All but ``"branch"`` need one kernel size.
        in_channels: Input channels.
        out_channels: Output channels.
        num_experts: Number of branches or expert kernels K (ignored by kinds without experts).
        kernel_size: One odd size, or one per branch.
        stride: Stride of the convolution.
        act_layer: Activation type or timm activation name.
        norm_layer: Normalisation layer type.
        pool_before_norm: Put a 2x2 max pool between the convolution and the norm (airbench94's conv-pool-norm
            order); only kinds registered as able to (:func:`can_pool_before_norm`).
        sharing: The sharing range the block belongs to; kinds whose layers share parameters
            (:func:`shares_parameters`) share them with the other blocks of the same scope, the others ignore it.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.
        **kwargs: The kind's own arguments: routing arguments of a dynamic block (``temperature``, ``rd_ratio``,
            ``rd_channels``, ``rd_divisor``; ``mode`` for the kernel-mixing kinds; ``rank`` and ``pool_size`` for
            ``"dcd"``); a static block has no routing, so it ignores them.

    Returns:
        The block, mapping (B, in_channels, H, W) to (B, out_channels, H / stride, W / stride).

    Example:
        >>> create_block("branch", 8, 16, num_experts=2)
        DynamicBlock(
          8, 16, num_experts=2, kernel_sizes=(3, 3), stride=1, padding=1
          ...
    """
    if kind not in _BLOCK_KINDS:
        raise ValueError(f"block kind must be one of {block_kinds()}, got {kind!r}")
    check_act_layer(act_layer)
    spec = _BLOCK_KINDS[kind]
    if pool_before_norm:
        if not can_pool_before_norm(kind, num_experts):
            raise ValueError(f"a {kind!r} block with num_experts={num_experts!r} cannot pool between its convolution "
                             "and its norm; the kinds that can are "
                             f"{tuple(k for k in block_kinds() if can_pool_before_norm(k, num_experts))}")
        kwargs["pool_before_norm"] = True
    if spec.shares_parameters:
        kwargs["sharing"] = SharingScope() if sharing is None else sharing
    block = spec.builder(in_channels, out_channels, num_experts=num_experts, kernel_size=kernel_size, stride=stride,
                         act_layer=act_layer, norm_layer=norm_layer, device=device, dtype=dtype, **kwargs)
    if spec.shares_parameters and sharing is None:
        kwargs["sharing"].close()  # a block built alone shares with nobody: allocate what it would share now
    return block
