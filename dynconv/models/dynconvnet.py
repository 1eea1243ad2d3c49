"""DynConvNet: a plain stack of dynamic-convolution blocks in segments, then a classifier head.

The coursework model (sections 2.1-2.4 of the coursework report this project started from): a backbone of N
blocks built segment by segment, each block a K-branch dynamic convolution (:class:`~dynconv.layers.DynamicBlock`),
followed by global average pooling and an MLP classifier. The coursework gave neither widths, depths nor K; the
variants registered below are our choices, documented with parameters and FLOPs in the model zoo.

The architecture is data (:class:`DynConvNetCfg`), so a variant is one config and a three-line entrypoint, and any
config field can be overridden through ``timm.create_model(name, field=value)``.
"""
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from timm.layers import ConvNormAct, SelectAdaptivePool2d, create_act_layer
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ..layers import SharingScope, block_kinds, can_pool_before_norm, create_block, init_identity_
from ..layers.validation import (
    check_act_layer,
    check_input,
    check_min_size,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    per_branch_kernel_sizes,
)
from .heads import HEAD_KINDS, create_head

__all__ = ["DynConvNet", "DynConvNetCfg", "CIFAR10_MEAN", "CIFAR10_STD"]

#: Per-channel mean of the CIFAR-10 training images (RGB, pixel values in [0, 1]); the models' default cfg mean.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
#: Per-channel standard deviation of the CIFAR-10 training images (RGB, pixel values in [0, 1]).
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_DOWNSAMPLE_KINDS = ("maxpool", "stride", "conv_pool", "conv_pool_norm")
_STEM_KINDS = ("conv", "patch")
_CONV_INITS = ("default", "dirac")


@dataclass(frozen=True)
class DynConvNetCfg:
    """Architecture of a :class:`DynConvNet`.

    Segment ``i`` holds ``depths[i]`` blocks of width ``widths[i]``; every segment after the first halves the
    resolution first (``downsample``).

    Args:
        widths: Output channels of each segment.
        depths: Number of blocks in each segment (the coursework's ``num_blocks``).
        num_experts: Branches K of every block; or one entry per segment, each a K for all its blocks or a tuple with
            one K per block. K=1 gives a static Conv-BN-Act block.
        kernel_size: Kernel size of every branch, or one per branch (odd sizes; mixed sizes fuse by zero-padding).
        block: Block kind for :func:`~dynconv.layers.create_block`; or one entry per segment, each a kind for all its
            blocks or a tuple with one kind per block (e.g. ``(("static", "dcd"),) * 3`` for a DCD block second in
            every segment).
        downsample: ``"maxpool"`` (2x2 max pool opening every segment after the first), ``"stride"`` (stride 2 in
            the first block of every segment after the first), ``"conv_pool"`` (2x2 max pool after the first block
            of every segment, the first included: conv-pool-conv groups, which spend more compute at high
            resolution) or ``"conv_pool_norm"`` (the same pool between the first block's convolution and its norm:
            airbench94's exact conv-pool-norm-act order; the first block of every segment must then be a plain
            Conv-BN-Act: ``block="static"``, or K=1 of ``block="branch"``).
        stem: ``"conv"`` (Conv-BN-Act with "same" padding) or ``"patch"`` (a biased Conv with no padding and no
            norm, then the activation: airbench94's stem, which the recipe can initialise by patch whitening).
        stem_width: Channels of the static stem; 0 for none (the first block sees the image, as in the coursework).
        stem_kernel_size: Kernel size of the stem.
        norm_momentum: BatchNorm momentum of every block (PyTorch convention: weight of the new batch statistic).
        norm_eps: BatchNorm epsilon of every block.
        head: ``"mlp"`` (coursework: Linear(d, 2d), ReLU, Dropout, Linear) or ``"linear"``.
        head_hidden_ratio: Hidden width of the MLP head relative to the final width d.
        head_bias: Whether the linear head's layer has a bias (airbench94's has none).
        logit_scale: Factor on the linear head's logits (airbench94 uses 1/9).
        global_pool: Default timm global pooling of the head (``"avg"``, ``"max"``, ...).
        drop_rate: Default dropout before the head's last linear layer (the coursework uses 0.5).
        act_layer: Activation of blocks and head (a timm activation name).
        rd_ratio: Hidden width of every routing network relative to its input channels (timm's ``rd_ratio``);
            ``None`` keeps each family's own (none for branch and CondConv, 1/4 for DyConv, 1/16 for ODConv).
        rd_channels: An explicit hidden width of every routing network (overrides ``rd_ratio``).
        temperature: Initial softmax temperature of the routing heads.
        conv_init: ``"default"`` (PyTorch's) or ``"dirac"``: the first ``in_channels`` filters of every block
            convolution start as the identity (``torch.nn.init.dirac_``), the rest keep PyTorch's initialisation, as
            in airbench94. Applies to plain convolutions (static blocks, the branch block's fused convolution, whose
            first branch it makes the identity, DCD's static kernel), not to kernel-mixing experts, KernelWarehouse
            cells or the stem.
        block_args: Further arguments of one block kind, for every block of that kind, as ``{kind: {name: value}}``
            (e.g. ``{"kw": {"cell_num_ratio": 0.25}}`` for KernelWarehouse's warehouse size); stored as sorted
            tuples, so that configs stay hashable.
    """

    widths: Tuple[int, ...] = (64, 128, 256, 512)
    depths: Tuple[int, ...] = (2, 2, 2, 2)
    num_experts: Union[int, Tuple[Union[int, Tuple[int, ...]], ...]] = 4
    kernel_size: Union[int, Tuple[int, ...]] = 3
    block: Union[str, Tuple[Union[str, Tuple[str, ...]], ...]] = "branch"
    downsample: str = "maxpool"
    stem: str = "conv"
    stem_width: int = 0
    stem_kernel_size: int = 3
    norm_momentum: float = 0.1
    norm_eps: float = 1e-5
    head: str = "mlp"
    head_hidden_ratio: float = 2.0
    head_bias: bool = True
    logit_scale: float = 1.0
    global_pool: str = "avg"
    drop_rate: float = 0.5
    act_layer: str = "relu"
    rd_ratio: Optional[float] = None
    rd_channels: Optional[int] = None
    temperature: float = 1.0
    conv_init: str = "default"
    block_args: Union[Dict[str, Dict[str, Any]], Tuple[Tuple[str, Tuple[Tuple[str, Any], ...]], ...]] = ()

    def __post_init__(self):
        # accept lists and dicts (e.g. from JSON) but store tuples, so configs stay hashable and comparable
        block_args = dict(self.block_args)
        for kind, args in block_args.items():
            if kind not in block_kinds() or not isinstance(args, (dict, tuple)):
                raise ValueError(f"block_args must map block kinds {block_kinds()} to dicts of arguments, got "
                                 f"{kind!r}: {args!r}")
        object.__setattr__(self, "block_args", tuple(sorted((kind, tuple(sorted(dict(args).items())))
                                                            for kind, args in block_args.items())))
        for name in ("widths", "depths", "num_experts", "kernel_size", "block"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(tuple(v) if isinstance(v, list) else v for v in value))
        if not self.widths:
            raise ValueError("widths must name at least one segment, got ()")
        for name in ("widths", "depths"):
            for value in getattr(self, name):
                check_positive_int(f"{name} entries", value)
        per_segment = {"widths": self.widths, "depths": self.depths}
        if not isinstance(self.num_experts, int):
            per_segment["num_experts"] = self.num_experts
        if not isinstance(self.block, str):
            per_segment["block"] = self.block
        lengths = {name: len(value) for name, value in per_segment.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"per-segment lists must have one entry per segment, got lengths {lengths}")
        for name, scalar in (("num_experts", int), ("block", str)):
            value = getattr(self, name)
            for index, depth in enumerate(self.depths):
                segment = value if isinstance(value, scalar) else value[index]
                if not isinstance(segment, scalar) and len(segment) != depth:
                    raise ValueError(f"{name} of segment {index} must be one {scalar.__name__} or one per block "
                                     f"({depth} blocks), got {segment!r}")
        for blocks in self.block_num_experts:
            for num_experts in blocks:
                per_branch_kernel_sizes(self.kernel_size, num_experts)
        for kinds in self.block_kinds:
            for kind in kinds:
                if kind not in block_kinds():
                    raise ValueError(f"block must be one of {block_kinds()} (or one per segment or block), got "
                                     f"{kind!r}")
        if self.downsample not in _DOWNSAMPLE_KINDS:
            raise ValueError(f"downsample must be one of {_DOWNSAMPLE_KINDS}, got {self.downsample!r}")
        if self.head not in HEAD_KINDS:
            raise ValueError(f"head must be one of {HEAD_KINDS}, got {self.head!r}")
        if self.conv_init not in _CONV_INITS:
            raise ValueError(f"conv_init must be one of {_CONV_INITS}, got {self.conv_init!r}")
        for kinds, blocks in zip(self.block_kinds, self.block_num_experts, strict=True):
            if self.downsample == "conv_pool_norm" and not can_pool_before_norm(kinds[0], blocks[0]):
                raise ValueError("downsample='conv_pool_norm' pools between the convolution and the norm of every "
                                 "segment's first block, which must be a plain Conv-BN-Act (a kind that can: "
                                 f"{tuple(k for k in block_kinds() if can_pool_before_norm(k, 1))}, some only with "
                                 f"K=1); got block={kinds[0]!r} with num_experts={blocks[0]!r}")
        if self.head != "linear" and (not self.head_bias or self.logit_scale != 1.0):
            raise ValueError(f"head_bias=False and logit_scale apply to the linear head only, got head={self.head!r}")
        if self.stem not in _STEM_KINDS:
            raise ValueError(f"stem must be one of {_STEM_KINDS}, got {self.stem!r}")
        if self.stem_width != 0:
            check_positive_int("stem_width", self.stem_width)
        check_positive_int("stem_kernel_size", self.stem_kernel_size)
        if not 0.0 <= self.norm_momentum <= 1.0:
            raise ValueError(f"norm_momentum must be in [0, 1], got {self.norm_momentum!r}")
        check_positive_float("norm_eps", self.norm_eps)
        check_act_layer(self.act_layer)
        check_positive_float("head_hidden_ratio", self.head_hidden_ratio)
        check_positive_float("temperature", self.temperature)
        check_positive_float("logit_scale", self.logit_scale)
        if self.rd_ratio is not None:
            check_positive_float("rd_ratio", self.rd_ratio)
        if self.rd_channels is not None:
            check_positive_int("rd_channels", self.rd_channels)

    @property
    def routing_args(self) -> Dict[str, Any]:
        """The routing arguments every dynamic block is built with (only those set, so each family keeps its own
        defaults for the rest)."""
        args: Dict[str, Any] = {"temperature": self.temperature}
        for name in ("rd_ratio", "rd_channels"):
            if getattr(self, name) is not None:
                args[name] = getattr(self, name)
        return args

    def kind_args(self, kind: str) -> Dict[str, Any]:
        """The arguments of ``block_args`` for blocks of ``kind`` (none if it names no arguments for it)."""
        return dict(dict(self.block_args).get(kind, ()))

    @property
    def block_kinds(self) -> Tuple[Tuple[str, ...], ...]:
        """The kind of every block, one tuple per segment."""
        segments = (self.block,) * len(self.widths) if isinstance(self.block, str) else self.block
        return tuple((kind,) * depth if isinstance(kind, str) else kind
                     for kind, depth in zip(segments, self.depths, strict=True))

    @property
    def block_num_experts(self) -> Tuple[Tuple[int, ...], ...]:
        """K of every block, one tuple per segment."""
        segments = (self.num_experts,) * len(self.widths) if isinstance(self.num_experts, int) else self.num_experts
        return tuple((k,) * depth if isinstance(k, int) else k for k, depth in zip(segments, self.depths, strict=True))


class DynConvNet(nn.Module):
    """Segments of dynamic-convolution blocks and a classifier head, following timm's model contract.

    Args:
        cfg: The architecture.
        num_classes: Number of logits; 0 for a model that returns pooled features.
        in_chans: Input image channels.
        global_pool: timm global pooling type of the head (default: the config's).
        drop_rate: Dropout before the last linear layer of the head (default: the config's).
        device: Device of the parameters and buffers (e.g. ``"meta"`` to build without allocating).
        dtype: Floating dtype of the parameters and buffers.

    Shape:
        - Input: (B, in_chans, H, W)
        - Output: (B, num_classes), or (B, num_features) when ``num_classes=0``

    Example:
        >>> model = DynConvNet(DynConvNetCfg(widths=(8, 16), depths=(1, 1), num_experts=2))
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
            self,
            cfg: DynConvNetCfg,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: Optional[str] = None,
            drop_rate: Optional[float] = None,
            device: Optional[Union[str, torch.device]] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        check_positive_int("in_chans", in_chans)
        check_non_negative_int("num_classes", num_classes)
        global_pool = cfg.global_pool if global_pool is None else global_pool
        try:
            SelectAdaptivePool2d(pool_type=global_pool)
        except AssertionError:  # timm validates pool types with an assert
            raise ValueError(f"global_pool must be a timm pool type ('avg', 'max', 'avgmax', 'catavgmax', ...), got "
                             f"{global_pool!r}") from None
        drop_rate = cfg.drop_rate if drop_rate is None else drop_rate
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        norm_layer = partial(nn.BatchNorm2d, momentum=cfg.norm_momentum, eps=cfg.norm_eps)
        if not cfg.stem_width:
            self.stem = nn.Identity()
        elif cfg.stem == "conv":
            self.stem = ConvNormAct(in_chans, cfg.stem_width, cfg.stem_kernel_size, padding=cfg.stem_kernel_size // 2,
                                    act_layer=cfg.act_layer, norm_layer=norm_layer, **dd)
        else:
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_chans, cfg.stem_width, cfg.stem_kernel_size, bias=True, **dd),
                act=create_act_layer(cfg.act_layer, inplace=True)))
        in_channels = cfg.stem_width or in_chans
        stages: List[nn.Module] = []
        self.feature_info: List[Dict[str, Any]] = []
        reduction = 1
        for index, (width, block_num_experts, kinds, downsample) in enumerate(zip(
                cfg.widths, cfg.block_num_experts, cfg.block_kinds, segment_downsampling(cfg), strict=True)):
            blocks: List[nn.Module] = [nn.MaxPool2d(2)] if downsample == "maxpool" else []
            reduction *= 2 if downsample else 1
            sharing = SharingScope()  # a segment is the range within which a family may share parameters
            for block_index, (num_experts, kind) in enumerate(zip(block_num_experts, kinds, strict=True)):
                first = block_index == 0
                blocks.append(create_block(
                    kind, in_channels, width, num_experts=num_experts, kernel_size=cfg.kernel_size,
                    stride=2 if first and downsample == "stride" else 1, act_layer=cfg.act_layer,
                    norm_layer=norm_layer, pool_before_norm=first and downsample == "conv_pool_norm",
                    sharing=sharing, **cfg.routing_args, **cfg.kind_args(kind), **dd))
                if first and downsample == "conv_pool":
                    blocks.append(nn.MaxPool2d(2))
                in_channels = width
            sharing.close()
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"stages.{index}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = in_channels
        self.head = create_head(
            cfg.head, in_channels, num_classes, pool_type=global_pool, drop_rate=drop_rate,
            hidden_ratio=cfg.head_hidden_ratio, act_layer=cfg.act_layer, bias=cfg.head_bias,
            logit_scale=cfg.logit_scale, **dd)
        if cfg.conv_init == "dirac":
            init_identity_(self.stages)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for timm's layer-wise optimizers: the stem, then one group per segment (or block)."""
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each segment's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier with a new one for ``num_classes`` (0 removes it, leaving pooled features)."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    @property
    def min_input_size(self) -> int:
        """The smallest image side the network takes: every 2x2 pooling must see at least 2 pixels (a 1-pixel map
        would pool to nothing)."""
        return _min_input_size(self.cfg)

    @property
    def _name(self) -> str:
        cfg = getattr(self, "pretrained_cfg", None) or {}
        return cfg.get("architecture") or "this DynConvNet"

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype inputs must have outside ``torch.autocast``: that of the parameters."""
        return next(self.parameters()).dtype

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward through the segments, returning the outputs of the segments named by ``indices`` (timm's
        semantics: an int takes the last n, a list those indices, None all; one index per segment).

        Args:
            x: Input images (B, in_chans, H, W).
            indices: Which segments' outputs to return.
            norm: Accepted for timm's interface; the model has no final norm, so it changes nothing.
            stop_early: Stop after the last segment asked for (the returned final features are then that segment's).
            output_fmt: ``"NCHW"`` only.
            intermediates_only: Return only the list of intermediates.

        Returns:
            The final features and the list of intermediates, or only the list.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        check_input(x, self.in_chans, self.input_dtype)
        check_min_size(x, self.min_input_size, self._name)
        x = self.stem(x)
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        intermediates = []
        for index, stage in enumerate(stages):
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and not torch.jit.is_scripting() else stage(x)
            if index in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the segments after the last one ``indices`` asks for (and the classifier), so that the model
        computes only what :meth:`forward_intermediates` needs. Returns the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if max_index + 1 < len(self.feature_info):
            # the features now end at the last kept segment; the head was sized for the final ones, so it goes too
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            prune_head = True
        self.feature_info = self.feature_info[:max_index + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_features, H / r, W / r), r the final reduction."""
        check_input(x, self.in_chans, self.input_dtype)
        check_min_size(x, self.min_input_size, self._name)
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify features; ``pre_logits=True`` returns the pooled (B, num_features) features."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def segment_downsampling(cfg: DynConvNetCfg) -> Tuple[Optional[str], ...]:
    """How each segment halves the resolution: ``cfg.downsample``, or ``None`` for a first segment that keeps it
    (``"maxpool"`` and ``"stride"`` act between segments; ``"conv_pool"`` and ``"conv_pool_norm"`` pool inside every
    segment's first block, the first segment's too). The one statement of the rule that the builder, the head's pool
    size and the smallest input size follow."""
    pools_first = cfg.downsample in ("conv_pool", "conv_pool_norm")
    return tuple(cfg.downsample if index > 0 or pools_first else None for index in range(len(cfg.widths)))


def _stem_shrink(cfg: DynConvNetCfg) -> int:
    """Pixels a stem takes off each side length: a patch stem has no padding (``stem_kernel_size - 1``), a conv stem
    keeps the size."""
    return cfg.stem_kernel_size - 1 if cfg.stem_width and cfg.stem == "patch" else 0


def _pool_size(cfg: DynConvNetCfg, image_size: int) -> Tuple[int, int]:
    """Spatial size of the final feature map for a square input (what the head pools over)."""
    size = image_size - _stem_shrink(cfg)
    for downsample in filter(None, segment_downsampling(cfg)):
        size = (size + 1) // 2 if downsample == "stride" else size // 2
    return (size, size)


def _min_input_size(cfg: DynConvNetCfg) -> int:
    """The smallest square input side for which no pooling of ``cfg``'s network sees less than 2 pixels: a 2x2
    pooling of n pixels leaves n // 2, so p of them need 2 ** p, after what the stem takes."""
    pools = sum(1 for downsample in segment_downsampling(cfg) if downsample not in (None, "stride"))
    return 2 ** pools + _stem_shrink(cfg)


def _first_conv(cfg: DynConvNetCfg) -> str:
    return "stem.conv" if cfg.stem_width else "stages.0.0.conv"


MODEL_CFGS: Dict[str, DynConvNetCfg] = dict(
    # the coursework model: 8 blocks of K=4 branches, no stem, max-pool downsampling, MLP head
    dynconv_cifar=DynConvNetCfg(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), num_experts=4),
    # the coursework backbone with each kernel-mixing family in place of the branch-mixing block, K=4 experts
    dynconv_cifar_condconv=DynConvNetCfg(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), num_experts=4,
                                         block="condconv"),
    dynconv_cifar_dyconv=DynConvNetCfg(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), num_experts=4,
                                       block="dyconv"),
    dynconv_cifar_odconv=DynConvNetCfg(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), num_experts=4,
                                       block="odconv"),
    # sized for 2-core CPUs: a static stem, then airbench-style conv-pool-conv segments of K=2 blocks
    dynconv_cifar_tiny=DynConvNetCfg(
        widths=(32, 64, 128), depths=(2, 2, 2), num_experts=2, stem_width=24, downsample="conv_pool", head="linear",
        drop_rate=0.0, act_layer="gelu"),
    # airbench94's network (Jordan 2024, https://arxiv.org/abs/2404.00498) with dynamic blocks: a 2x2 patch stem
    # (initialised by patch whitening in the recipe), segments of widths 64-256-256 whose first block is
    # conv-pool-norm-act and whose second block is dynamic (K=2), fast-moving BatchNorm statistics (eps 1e-12), GELU,
    # dirac-initialised convolutions, global max pooling and a bias-free linear head with logits scaled by 1/9; its
    # static twin is airbench94's network exactly
    dynconv_cifar_fast=DynConvNetCfg(
        widths=(64, 256, 256), depths=(2, 2, 2), num_experts=((1, 2), (1, 2), (1, 2)), stem="patch", stem_width=24,
        stem_kernel_size=2, downsample="conv_pool_norm", norm_momentum=0.4, norm_eps=1e-12, head="linear",
        head_bias=False, logit_scale=1 / 9, global_pool="max", drop_rate=0.0, act_layer="gelu", conv_init="dirac"),
)
# airbench93's network (54 M multiply-adds per image against airbench94's 118 M): the fast layout at widths 64-128-128
MODEL_CFGS["dynconv_cifar_small"] = replace(MODEL_CFGS["dynconv_cifar_fast"], widths=(64, 128, 128))
# airbench93's network with its K=2 branch block only in the last two segments, whose routers varied by content in the
# trained dynconv_cifar_small and dynconv_cifar_fast (the first segment's gave every image nearly the same mix): the
# cpu preset's model
MODEL_CFGS["dynconv_cifar_small_routed"] = replace(MODEL_CFGS["dynconv_cifar_small"],
                                                   num_experts=((1, 1), (1, 2), (1, 2)))
# the tiny backbone with K=2 branch mixing only in the two blocks whose routers varied by content in the trained tiny
# model (stages.1.2 and stages.2.0, docs/routing.rst), the other four static: the equal-budget study's branch_routed
MODEL_CFGS["dynconv_cifar_tiny_routed"] = replace(MODEL_CFGS["dynconv_cifar_tiny"],
                                                  num_experts=((1, 1), (1, 2), (2, 1)))
# the coursework backbone with DCD blocks (a static kernel, a dynamic channel scale and a low-rank dynamic residual)
MODEL_CFGS["dynconv_cifar_dcd"] = replace(MODEL_CFGS["dynconv_cifar"], block="dcd", num_experts=1)
# airbench94's network with a DCD block second in every segment (the first is conv-pool-norm-act, static): the
# positions the branch block takes in dynconv_cifar_fast; its static twin is airbench94's network
MODEL_CFGS["dynconv_cifar_fast_dcd"] = replace(MODEL_CFGS["dynconv_cifar_fast"], num_experts=1,
                                               block=(("static", "dcd"),) * 3)
# the same with DCD only in the last two segments, where maps are small and channels wide and where the routing of
# the trained dynamic networks varied by content
MODEL_CFGS["dynconv_cifar_fast_dcd_routed"] = replace(MODEL_CFGS["dynconv_cifar_fast_dcd"],
                                                      block=("static", ("static", "dcd"), ("static", "dcd")))
# airbench94's network with an ODConv (1x: K=1, its four attentions on one kernel, the paper's most
# parameter-efficient setting) second in every segment, the positions of the branch and DCD blocks above
MODEL_CFGS["dynconv_cifar_fast_odconv"] = replace(MODEL_CFGS["dynconv_cifar_fast"], num_experts=1,
                                                  block=(("static", "odconv"),) * 3)
# airbench94's network with KernelWarehouse convolutions everywhere but the first segment's first block (whose 24
# input channels would cut the warehouse into cells of 8 input channels), one warehouse per segment, at the
# KernelWarehouse authors' ResNet-18 settings: 1x, 1/2x and 1/4x (configs/resnet18/kw*_resnet18.json); its static twin
# is airbench94's network
MODEL_CFGS["dynconv_cifar_fast_kw1x"] = replace(MODEL_CFGS["dynconv_cifar_fast"], num_experts=1,
                                                block=(("static", "kw"), "kw", "kw"))
MODEL_CFGS["dynconv_cifar_fast_kw1d2x"] = replace(
    MODEL_CFGS["dynconv_cifar_fast_kw1x"],
    block_args={"kw": dict(cell_num_ratio=0.5, cell_inplane_ratio=0.5, cell_outplane_ratio=0.5)})
MODEL_CFGS["dynconv_cifar_fast_kw1d4x"] = replace(
    MODEL_CFGS["dynconv_cifar_fast_kw1x"],
    block_args={"kw": dict(cell_num_ratio=0.25, cell_inplane_ratio=0.5, cell_outplane_ratio=0.5)})
# the static twin of every backbone: the same layout with plain Conv-BN-Act blocks, the baseline a dynamic block must
# beat (the kernel-mixing variants share dynconv_cifar's backbone, so dynconv_cifar_static is their twin too)
STATIC_TWINS: Dict[str, str] = {f"{name}_static": name for name in ("dynconv_cifar", "dynconv_cifar_tiny",
                                                                    "dynconv_cifar_small", "dynconv_cifar_fast")}
MODEL_CFGS.update({twin: replace(MODEL_CFGS[name], block="static", num_experts=1)
                   for twin, name in STATIC_TWINS.items()})
_CFG_FIELDS = frozenset(field.name for field in fields(DynConvNetCfg))


def _create_dynconvnet(variant: str, pretrained: bool = False, **kwargs) -> DynConvNet:
    overrides = {name: kwargs.pop(name) for name in list(kwargs) if name in _CFG_FIELDS}
    model_cfg = replace(MODEL_CFGS[variant], **overrides)
    return build_model_with_cfg(
        DynConvNet, variant, pretrained, model_cfg=model_cfg,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(len(model_cfg.widths)))),
        **kwargs)


# weights trained by the recipe, shipped inside the package (safetensors; metadata: accuracy, recipe, command, commit)
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def _pretrained_file(name: str, tag: str) -> str:
    return str(PRETRAINED_DIR / f"{name}.{tag}.safetensors")


def _cfg(variant: str, **kwargs) -> Dict[str, Any]:
    cfg = MODEL_CFGS[variant]
    return {
        "num_classes": 10, "input_size": (3, 32, 32), "pool_size": _pool_size(cfg, 32), "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
        "first_conv": _first_conv(cfg), "classifier": "head.fc.fc2" if cfg.head == "mlp" else "head.fc",
        "license": "mit", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "dynconv_cifar": _cfg("dynconv_cifar"),
    "dynconv_cifar_static": _cfg("dynconv_cifar_static"),
    "dynconv_cifar_condconv": _cfg("dynconv_cifar_condconv"),
    "dynconv_cifar_dyconv": _cfg("dynconv_cifar_dyconv"),
    "dynconv_cifar_odconv": _cfg("dynconv_cifar_odconv"),
    "dynconv_cifar_tiny.cpu_cifar10local": _cfg(
        "dynconv_cifar_tiny", file=_pretrained_file("dynconv_cifar_tiny", "cpu_cifar10local")),
    "dynconv_cifar_tiny_static.cpu_cifar10local": _cfg(
        "dynconv_cifar_tiny_static", file=_pretrained_file("dynconv_cifar_tiny_static", "cpu_cifar10local")),
    "dynconv_cifar_tiny_routed.cpu_cifar10local": _cfg(
        "dynconv_cifar_tiny_routed", file=_pretrained_file("dynconv_cifar_tiny_routed", "cpu_cifar10local")),
    "dynconv_cifar_small": _cfg("dynconv_cifar_small"),
    "dynconv_cifar_small_static": _cfg("dynconv_cifar_small_static"),
    "dynconv_cifar_small_routed": _cfg("dynconv_cifar_small_routed"),
    "dynconv_cifar_fast": _cfg("dynconv_cifar_fast"),
    "dynconv_cifar_dcd": _cfg("dynconv_cifar_dcd"),
    "dynconv_cifar_fast_dcd": _cfg("dynconv_cifar_fast_dcd"),
    "dynconv_cifar_fast_dcd_routed.cpu_cifar10local": _cfg(
        "dynconv_cifar_fast_dcd_routed",
        file=_pretrained_file("dynconv_cifar_fast_dcd_routed", "cpu_cifar10local")),
    "dynconv_cifar_fast_odconv": _cfg("dynconv_cifar_fast_odconv"),
    "dynconv_cifar_fast_kw1x": _cfg("dynconv_cifar_fast_kw1x"),
    "dynconv_cifar_fast_kw1d2x": _cfg("dynconv_cifar_fast_kw1d2x"),
    "dynconv_cifar_fast_kw1d4x": _cfg("dynconv_cifar_fast_kw1d4x"),
    "dynconv_cifar_fast_static.cpu_cifar10local": _cfg(
        "dynconv_cifar_fast_static", file=_pretrained_file("dynconv_cifar_fast_static", "cpu_cifar10local")),
})


@register_model
def dynconv_cifar(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The coursework model: widths 64-128-256-512, 2 blocks per segment, K=4 branches of 3x3, MLP head."""
    return _create_dynconvnet("dynconv_cifar", pretrained, **kwargs)


@register_model
def dynconv_cifar_static(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The static twin of ``dynconv_cifar`` (and of its kernel-mixing variants): the same backbone, Conv-BN-ReLU."""
    return _create_dynconvnet("dynconv_cifar_static", pretrained, **kwargs)


@register_model
def dynconv_cifar_condconv(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The coursework backbone with CondConv blocks (K=4 experts, sigmoid routing) in place of branch mixing."""
    return _create_dynconvnet("dynconv_cifar_condconv", pretrained, **kwargs)


@register_model
def dynconv_cifar_dyconv(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The coursework backbone with Dynamic Convolution blocks (K=4 kernels, softmax attention)."""
    return _create_dynconvnet("dynconv_cifar_dyconv", pretrained, **kwargs)


@register_model
def dynconv_cifar_odconv(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The coursework backbone with ODConv blocks (K=4 kernels, four attentions)."""
    return _create_dynconvnet("dynconv_cifar_odconv", pretrained, **kwargs)


@register_model
def dynconv_cifar_tiny(pretrained: bool = False, **kwargs) -> DynConvNet:
    """A CPU-sized variant: 24-wide stem, three conv-pool-conv segments of widths 32-64-128, K=2, linear head."""
    return _create_dynconvnet("dynconv_cifar_tiny", pretrained, **kwargs)


@register_model
def dynconv_cifar_tiny_static(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The static twin of ``dynconv_cifar_tiny``: the same backbone with Conv-BN-GELU blocks."""
    return _create_dynconvnet("dynconv_cifar_tiny_static", pretrained, **kwargs)


@register_model
def dynconv_cifar_tiny_routed(pretrained: bool = False, **kwargs) -> DynConvNet:
    """``dynconv_cifar_tiny`` with K=2 branch mixing only in ``stages.1.2`` and ``stages.2.0`` (the blocks whose
    routing varies by content), static Conv-BN-GELU blocks elsewhere; its static twin is
    ``dynconv_cifar_tiny_static``."""
    return _create_dynconvnet("dynconv_cifar_tiny_routed", pretrained, **kwargs)


@register_model
def dynconv_cifar_small(pretrained: bool = False, **kwargs) -> DynConvNet:
    """airbench93's layout with dynamic blocks: ``dynconv_cifar_fast`` at widths 64-128-128 (44% of its
    multiply-adds)."""
    return _create_dynconvnet("dynconv_cifar_small", pretrained, **kwargs)


@register_model
def dynconv_cifar_small_static(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The static twin of ``dynconv_cifar_small``: airbench93's network."""
    return _create_dynconvnet("dynconv_cifar_small_static", pretrained, **kwargs)


@register_model
def dynconv_cifar_small_routed(pretrained: bool = False, **kwargs) -> DynConvNet:
    """``dynconv_cifar_small`` with its K=2 branch blocks only in the last two segments (``stages.1.1`` and
    ``stages.2.1``, where routing varies by content), a static Conv-BN-GELU block in the first; its static twin is
    ``dynconv_cifar_small_static``."""
    return _create_dynconvnet("dynconv_cifar_small_routed", pretrained, **kwargs)


@register_model
def dynconv_cifar_fast(pretrained: bool = False, **kwargs) -> DynConvNet:
    """airbench94's layout with dynamic blocks: 2x2 patch stem, segments 64-256-256, second block of each K=2."""
    return _create_dynconvnet("dynconv_cifar_fast", pretrained, **kwargs)


@register_model
def dynconv_cifar_fast_static(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The static twin of ``dynconv_cifar_fast``: airbench94's layout with Conv-BN-GELU blocks throughout."""
    return _create_dynconvnet("dynconv_cifar_fast_static", pretrained, **kwargs)


@register_model
def dynconv_cifar_dcd(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The coursework backbone with DCD blocks (static kernel, dynamic channel scale and low-rank residual) in place of
    branch mixing; its static twin is ``dynconv_cifar_static``."""
    return _create_dynconvnet("dynconv_cifar_dcd", pretrained, **kwargs)


@register_model
def dynconv_cifar_fast_dcd(pretrained: bool = False, **kwargs) -> DynConvNet:
    """airbench94's layout with a DCD block second in every segment; its static twin is
    ``dynconv_cifar_fast_static``."""
    return _create_dynconvnet("dynconv_cifar_fast_dcd", pretrained, **kwargs)


@register_model
def dynconv_cifar_fast_dcd_routed(pretrained: bool = False, **kwargs) -> DynConvNet:
    """airbench94's layout with a DCD block second in its last two segments only (``stages.1.1``, ``stages.2.1``),
    where maps are small and channels wide; its static twin is ``dynconv_cifar_fast_static``."""
    return _create_dynconvnet("dynconv_cifar_fast_dcd_routed", pretrained, **kwargs)


@register_model
def dynconv_cifar_fast_odconv(pretrained: bool = False, **kwargs) -> DynConvNet:
    """airbench94's layout with an ODConv (K=1: channel, filter and spatial attention on one kernel) second in every
    segment; its static twin is ``dynconv_cifar_fast_static``."""
    return _create_dynconvnet("dynconv_cifar_fast_odconv", pretrained, **kwargs)


@register_model
def dynconv_cifar_fast_kw1x(pretrained: bool = False, **kwargs) -> DynConvNet:
    """airbench94's layout with KernelWarehouse convolutions in five of its six blocks, one warehouse per segment,
    as many warehouse cells as its kernels have (1x); its static twin is ``dynconv_cifar_fast_static``."""
    return _create_dynconvnet("dynconv_cifar_fast_kw1x", pretrained, **kwargs)


@register_model
def dynconv_cifar_fast_kw1d2x(pretrained: bool = False, **kwargs) -> DynConvNet:
    """``dynconv_cifar_fast_kw1x`` with half as many warehouse cells (1/2x), each half as wide in both channel
    directions; its static twin is ``dynconv_cifar_fast_static``."""
    return _create_dynconvnet("dynconv_cifar_fast_kw1d2x", pretrained, **kwargs)


@register_model
def dynconv_cifar_fast_kw1d4x(pretrained: bool = False, **kwargs) -> DynConvNet:
    """``dynconv_cifar_fast_kw1x`` with a quarter as many warehouse cells (1/4x), each half as wide in both channel
    directions; its static twin is ``dynconv_cifar_fast_static``."""
    return _create_dynconvnet("dynconv_cifar_fast_kw1d4x", pretrained, **kwargs)

