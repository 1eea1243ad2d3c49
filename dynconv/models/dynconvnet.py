"""DynConvNet: a plain stack of dynamic-convolution blocks in segments, then a classifier head.

The coursework model (``../shared/docs/coursework.md``, sections 2.1-2.4): a backbone of N blocks built segment by
segment, each block a K-branch dynamic convolution (:class:`~dynconv.layers.DynamicBlock`), followed by global
average pooling and an MLP classifier. The coursework gave neither widths, depths nor K; the variants registered
below are our choices, documented with parameters and FLOPs in the model zoo.

The architecture is data (:class:`DynConvNetCfg`), so a variant is one config and a three-line entrypoint, and any
config field can be overridden through ``timm.create_model(name, field=value)``.
"""
from dataclasses import dataclass, fields, replace
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from timm.layers import ConvNormAct
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import nn

from ..layers import BLOCK_KINDS, create_block
from ..layers._checks import check_input, check_positive_float, check_positive_int, per_branch_kernel_sizes
from .heads import HEAD_KINDS, create_head

__all__ = ["DynConvNet", "DynConvNetCfg", "CIFAR10_MEAN", "CIFAR10_STD"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# the coursework normalised with 0.5 / 0.5; models trained with its recipe carry these in their cfg
COURSEWORK_MEAN = (0.5, 0.5, 0.5)
COURSEWORK_STD = (0.5, 0.5, 0.5)

_DOWNSAMPLE_KINDS = ("maxpool", "stride")


@dataclass(frozen=True)
class DynConvNetCfg:
    """Architecture of a :class:`DynConvNet`.

    Segment ``i`` holds ``depths[i]`` blocks of width ``widths[i]``; every segment after the first halves the
    resolution first (``downsample``).

    Args:
        widths: Output channels of each segment.
        depths: Number of blocks in each segment (the coursework's ``num_blocks``).
        num_convs: Branches K of every block, or one K per segment. K=1 gives a static Conv-BN-Act block.
        kernel_size: Kernel size of every branch, or one per branch (odd sizes; mixed sizes fuse by zero-padding).
        block: Block kind for :func:`~dynconv.layers.create_block`.
        downsample: ``"maxpool"`` (2x2 max pool at the start of the segment) or ``"stride"`` (stride 2 in its
            first block).
        stem_width: Channels of a static 3x3 Conv-BN-Act stem; 0 for none (the first block sees the image, as in
            the coursework).
        head: ``"mlp"`` (coursework: Linear(d, 2d), ReLU, Dropout, Linear) or ``"linear"``.
        head_hidden_ratio: Hidden width of the MLP head relative to the final width d.
        act_layer: Activation of blocks and head (a timm activation name).
        routing_hidden: Hidden width of the routing heads; ``None`` for the coursework's single Linear.
        temperature: Initial softmax temperature of the routing heads.
    """

    widths: Tuple[int, ...] = (64, 128, 256, 512)
    depths: Tuple[int, ...] = (2, 2, 2, 2)
    num_convs: Union[int, Tuple[int, ...]] = 4
    kernel_size: Union[int, Tuple[int, ...]] = 3
    block: str = "branch"
    downsample: str = "maxpool"
    stem_width: int = 0
    head: str = "mlp"
    head_hidden_ratio: float = 2.0
    act_layer: str = "relu"
    routing_hidden: Optional[int] = None
    temperature: float = 1.0

    def __post_init__(self):
        # accept lists (e.g. from JSON or argparse) but store tuples, so configs stay hashable and comparable
        for name in ("widths", "depths", "num_convs", "kernel_size"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if not self.widths:
            raise ValueError("widths must name at least one segment, got ()")
        for name in ("widths", "depths"):
            for value in getattr(self, name):
                check_positive_int(f"{name} entries", value)
        per_segment = {"widths": self.widths, "depths": self.depths}
        if not isinstance(self.num_convs, int):
            per_segment["num_convs"] = self.num_convs
        lengths = {name: len(value) for name, value in per_segment.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"per-segment lists must have one entry per segment, got lengths {lengths}")
        for num_convs in self.segment_num_convs:
            check_positive_int("num_convs", num_convs)
            per_branch_kernel_sizes(self.kernel_size, num_convs)
        if self.block not in BLOCK_KINDS:
            raise ValueError(f"block must be one of {BLOCK_KINDS}, got {self.block!r}")
        if self.downsample not in _DOWNSAMPLE_KINDS:
            raise ValueError(f"downsample must be one of {_DOWNSAMPLE_KINDS}, got {self.downsample!r}")
        if self.head not in HEAD_KINDS:
            raise ValueError(f"head must be one of {HEAD_KINDS}, got {self.head!r}")
        if self.stem_width != 0:
            check_positive_int("stem_width", self.stem_width)
        check_positive_float("head_hidden_ratio", self.head_hidden_ratio)
        check_positive_float("temperature", self.temperature)

    @property
    def segment_num_convs(self) -> Tuple[int, ...]:
        """K for each segment."""
        if isinstance(self.num_convs, int):
            return (self.num_convs,) * len(self.widths)
        return self.num_convs


class DynConvNet(nn.Module):
    """Segments of dynamic-convolution blocks and a classifier head, following timm's model contract.

    Args:
        cfg: The architecture.
        num_classes: Number of logits; 0 for a model that returns pooled features.
        in_chans: Input image channels.
        global_pool: timm global pooling type of the head.
        drop_rate: Dropout before the last linear layer of the head (the coursework uses 0.5).

    Shape:
        - Input: (B, in_chans, H, W)
        - Output: (B, num_classes), or (B, num_features) when ``num_classes=0``

    Example:
        >>> model = DynConvNet(DynConvNetCfg(widths=(8, 16), depths=(1, 1), num_convs=2))
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
            self,
            cfg: DynConvNetCfg,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.5,
    ):
        super().__init__()
        check_positive_int("in_chans", in_chans)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        if cfg.stem_width:
            self.stem = ConvNormAct(in_chans, cfg.stem_width, 3, padding=1, act_layer=cfg.act_layer)
        else:
            self.stem = nn.Identity()
        in_channels = cfg.stem_width or in_chans
        stages: List[nn.Module] = []
        self.feature_info: List[Dict[str, Any]] = []
        reduction = 1
        segments = zip(cfg.widths, cfg.depths, cfg.segment_num_convs, strict=True)
        for index, (width, depth, num_convs) in enumerate(segments):
            blocks: List[nn.Module] = []
            stride = 1
            if index > 0:
                reduction *= 2
                if cfg.downsample == "maxpool":
                    blocks.append(nn.MaxPool2d(2))
                else:
                    stride = 2
            for block_index in range(depth):
                blocks.append(create_block(
                    cfg.block, in_channels, width, num_convs=num_convs, kernel_size=cfg.kernel_size,
                    stride=stride if block_index == 0 else 1, act_layer=cfg.act_layer,
                    routing_hidden=cfg.routing_hidden, temperature=cfg.temperature))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"stages.{index}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = in_channels
        self.head = create_head(
            cfg.head, in_channels, num_classes, pool_type=global_pool, drop_rate=drop_rate,
            hidden_ratio=cfg.head_hidden_ratio, act_layer=cfg.act_layer)

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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_features, H / r, W / r), r the final reduction."""
        check_input(x, self.in_chans)
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify features; ``pre_logits=True`` returns the pooled (B, num_features) features."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _first_conv(cfg: DynConvNetCfg) -> str:
    return "stem.conv" if cfg.stem_width else "stages.0.0.conv"


MODEL_CFGS: Dict[str, DynConvNetCfg] = dict(
    # the coursework model: 8 blocks of K=4 branches, no stem, max-pool downsampling, MLP head
    dynconv_cifar=DynConvNetCfg(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), num_convs=4),
    # sized for 2-core CPUs: a static stem, 5 blocks of K=2 branches
    dynconv_cifar_tiny=DynConvNetCfg(widths=(32, 64, 128), depths=(1, 2, 2), num_convs=2, stem_width=24),
)
_CFG_FIELDS = frozenset(field.name for field in fields(DynConvNetCfg))


def _create_dynconvnet(variant: str, pretrained: bool = False, **kwargs) -> DynConvNet:
    overrides = {name: kwargs.pop(name) for name in list(kwargs) if name in _CFG_FIELDS}
    model_cfg = replace(MODEL_CFGS[variant], **overrides)
    return build_model_with_cfg(
        DynConvNet, variant, pretrained, model_cfg=model_cfg,
        feature_cfg=dict(flatten_sequential=True, out_indices=tuple(range(len(model_cfg.widths)))),
        **kwargs)


def _cfg(variant: str, **kwargs) -> Dict[str, Any]:
    cfg = MODEL_CFGS[variant]
    return {
        "num_classes": 10, "input_size": (3, 32, 32), "pool_size": None, "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
        "first_conv": _first_conv(cfg), "classifier": "head.fc.fc2" if cfg.head == "mlp" else "head.fc",
        "license": "mit", **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "dynconv_cifar": _cfg("dynconv_cifar", mean=COURSEWORK_MEAN, std=COURSEWORK_STD),
    "dynconv_cifar_tiny": _cfg("dynconv_cifar_tiny"),
})


@register_model
def dynconv_cifar(pretrained: bool = False, **kwargs) -> DynConvNet:
    """The coursework model: widths 64-128-256-512, 2 blocks per segment, K=4 branches of 3x3, MLP head."""
    return _create_dynconvnet("dynconv_cifar", pretrained, **kwargs)


@register_model
def dynconv_cifar_tiny(pretrained: bool = False, **kwargs) -> DynConvNet:
    """A CPU-sized variant: 24-wide stem, widths 32-64-128 with 1-2-2 blocks, K=2 branches of 3x3."""
    return _create_dynconvnet("dynconv_cifar_tiny", pretrained, **kwargs)
