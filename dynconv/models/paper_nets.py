"""The papers' ImageNet architectures: timm's own ResNet and MobileNetV2 with convolutions swapped for dynamic ones.

Each model is built by timm from its own definition (``resnet18``, ``resnet50``, ``mobilenetv2_100``), then the
convolutions each paper makes dynamic are replaced by ours of the same geometry, in place, by the parent block's type
and the convolution's attribute name (so it works on a ``features_only`` wrapper too):

- ODConv (Li et al., ICLR 2022; https://github.com/OSVAI/ODConv, ``models/od_resnet.py``, ``od_mobilenetv2.py``):
  every convolution inside a residual block (BasicBlock: ``conv1``, ``conv2``; Bottleneck: ``conv1``-``conv3``) or an
  inverted residual (``conv_pw``, ``conv_dw``, ``conv_pwl``, and the head's 1x1 ``conv_head``); the stem and the
  downsampling shortcuts stay static. K = 1 ("1x") or 4 ("4x"), attention width C_in/16 (at least 16).
- Dynamic Convolution (Chen et al., CVPR 2020): every convolution except the first, the shortcuts included ("all
  convolution layers except the first layer"), K = 4, attention width C_in/4 (at least 4). Train it with the paper's
  temperature annealing from 30 to 1 (:func:`dynconv.temperature_schedule`).
- CondConv (Yang et al., NeurIPS 2019): the residual blocks' convolutions with 8 experts and per-layer sigmoid
  routing; stem and shortcuts static. timm already ships the paper's CondConv EfficientNets
  (``efficientnet_cc_b0_4e`` and others), built on ``timm.layers.CondConv2d``; our :class:`~dynconv.CondConv2d`
  computes the same function given the same weights and routing (``tests/test_paper_oracles.py``), with the routing
  inside the layer instead of shared per block.

- DCD (Li et al., ICLR 2021; https://github.com/liyunsheng13/dcd, ``models/imagenet/resnet_dcd.py``,
  ``mobilenetv2_dcd.py``): in ResNets every convolution inside a residual block (ResNet-18's attention pools to 2x2,
  ResNet-50's to 1x1), in MobileNetV2 the 1x1 convolutions of the inverted residuals (``conv_pw``, ``conv_pwl``; the
  depthwise ones, the first block and the head stay static), with the authors' latent and attention widths; the
  classifier becomes the authors' dynamic one (:class:`~dynconv.layers.DCDLinear`); stem and shortcuts stay static.

No ImageNet weights exist for these models here (``pretrained=True`` raises timm's "No pretrained weights" error).
Their parameter and multiply-add counts are pinned against the published tables in ``tests/test_paper_nets.py``.
"""
import copy
from functools import partial
from typing import Any, Callable, Dict, Mapping, Tuple, Type

import timm
import torch
from timm.models import PretrainedCfg, generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..layers import CondConv2d, DCDConv2d, DCDLinear, DyConv2d, ODConv2d, dynamic_layers
from ..layers.kernel_mixing import ExpertConv2d

__all__ = ["PAPER_MODELS", "PUBLISHED_COUNTS", "conv_geometry", "count_parameters_and_multiply_adds",
           "create_from_timm", "paper_cfg", "swap_convs"]

#: Which convolutions a placement makes dynamic: parent module type -> names of its convolution attributes.
Placement = Mapping[Type[nn.Module], Tuple[str, ...]]

RESNET_BLOCKS: Placement = {BasicBlock: ("conv1", "conv2"), Bottleneck: ("conv1", "conv2", "conv3")}
# timm's ResNet shortcuts are nn.Sequential(conv, norm); no other Sequential of resnet18/50 starts with a convolution
RESNET_BLOCKS_AND_SHORTCUTS: Placement = {**RESNET_BLOCKS, nn.Sequential: ("0",)}
MOBILENETV2_BLOCKS: Placement = {InvertedResidual: ("conv_pw", "conv_dw", "conv_pwl"),
                                 DepthwiseSeparableConv: ("conv_dw", "conv_pw"), EfficientNet: ("conv_head",)}
# DCD: the residual blocks and the classifier; in MobileNetV2 the inverted residuals' 1x1 convolutions and classifier
RESNET_BLOCKS_AND_CLASSIFIER: Placement = {**RESNET_BLOCKS, ResNet: ("fc",)}
MOBILENETV2_POINTWISE_AND_CLASSIFIER: Placement = {InvertedResidual: ("conv_pw", "conv_pwl"),
                                                   EfficientNet: ("classifier",)}


def swap_convs(model: nn.Module, placement: Placement, make: Callable[[nn.Conv2d], nn.Module]) -> int:
    """Replace, in place, every ``nn.Conv2d`` that ``placement`` names with ``make(conv)`` (and every ``nn.Linear`` it
    names, for a dynamic classifier such as DCD's).

    Args:
        model: Any model; its structure is left as it is, only the named convolutions change.
        placement: Parent module type -> names of the convolution attributes to replace in such parents.
        make: Builds the replacement from the convolution it replaces (same geometry, device and dtype).

    Returns:
        How many convolutions were replaced.
    """
    swaps = []
    for parent in model.modules():
        for kind, names in placement.items():
            if type(parent) is kind:
                swaps += [(parent, name) for name in names
                          if isinstance(getattr(parent, name, None), (nn.Conv2d, nn.Linear))]
    for parent, name in swaps:
        setattr(parent, name, make(getattr(parent, name)))
    return len(swaps)


def conv_geometry(conv: nn.Conv2d) -> Dict[str, Any]:
    """The constructor arguments of a dynamic convolution that replaces ``conv``."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str) or len(set(conv.kernel_size)) != 1:
        raise ValueError(f"only square, zero-padded convolutions can be swapped, got {conv}")
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size[0],
                stride=conv.stride[0], padding=conv.padding[0], dilation=conv.dilation[0], groups=conv.groups,
                device=conv.weight.device, dtype=conv.weight.dtype)


def _he_fan_out(layer: ExpertConv2d) -> ExpertConv2d:
    layer.init_he_fan_out_()
    return layer


def odconv(conv: nn.Conv2d, num_experts: int) -> ExpertConv2d:
    """The ODConv of ``conv``'s geometry (no bias, as in the paper's networks)."""
    return _he_fan_out(ODConv2d(**conv_geometry(conv), num_experts=num_experts, rd_ratio=1 / 16))


def dyconv(conv: nn.Conv2d, num_experts: int = 4) -> ExpertConv2d:
    """The Dynamic Convolution of ``conv``'s geometry, with a bias per kernel if ``conv`` has one."""
    return _he_fan_out(DyConv2d(**conv_geometry(conv), bias=conv.bias is not None, num_experts=num_experts,
                                     rd_ratio=0.25))


def condconv(conv: nn.Conv2d, num_experts: int = 8) -> ExpertConv2d:
    """The CondConv of ``conv``'s geometry, with a bias per expert if ``conv`` has one."""
    return _he_fan_out(CondConv2d(**conv_geometry(conv), bias=conv.bias is not None, num_experts=num_experts))


def _mobilenet_dcd_widths(in_channels: int, out_channels: int, fc_squeeze: int = 16) -> Dict[str, int]:
    """The latent width L, attention width and pooled size of the authors' MobileNetV2 ``DYModule``; ``fc_squeeze``
    16 as their README's command line gives it (their class defaults to 8)."""
    expanding = in_channels < out_channels
    pool_size, reduction = (2, 8) if expanding else (1, 2)
    pooled = in_channels * pool_size ** 2
    rank = min(pooled // reduction, out_channels // reduction)
    while rank ** 2 > pooled * 2:
        reduction *= 2
        rank = min(pooled // reduction, out_channels // reduction)
    rank = max(rank, 4)
    return {"rank": rank, "pool_size": pool_size, "rd_channels": max(max(pooled, rank ** 2) // fc_squeeze, 4)}


def dcd(layer: nn.Module, pool_size: int = 1, mobilenet: bool = False) -> nn.Module:
    """The DCD layer of ``layer``'s geometry: a :class:`~dynconv.layers.DCDLinear` for a classifier, else a
    :class:`~dynconv.layers.DCDConv2d` whose attention pools to ``pool_size``, with MobileNetV2's widths for
    ``mobilenet``; its weights drawn as the authors draw them
    (:meth:`~dynconv.layers.DCDConv2d.init_as_the_authors_`)."""
    if isinstance(layer, nn.Linear):
        dcd_layer = DCDLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                              device=layer.weight.device, dtype=layer.weight.dtype)
        conv = dcd_layer.conv
    else:
        geometry = conv_geometry(layer)
        widths = (_mobilenet_dcd_widths(geometry["in_channels"], geometry["out_channels"]) if mobilenet
                  else {"pool_size": pool_size})
        dcd_layer = conv = DCDConv2d(**geometry, bias=layer.bias is not None, **widths)
    conv.init_as_the_authors_(near_static=mobilenet, classifier=isinstance(layer, nn.Linear))
    return dcd_layer


#: name -> (timm base model, placement, convolution factory, what it is)
PAPER_MODELS: Dict[str, Tuple[str, Placement, Callable[[nn.Conv2d], nn.Module], str]] = {
    "od_resnet18": ("resnet18", RESNET_BLOCKS, partial(odconv, num_experts=1), "ResNet-18 + ODConv (1x)"),
    "od_resnet18_4x": ("resnet18", RESNET_BLOCKS, partial(odconv, num_experts=4), "ResNet-18 + ODConv (4x)"),
    "od_resnet50": ("resnet50", RESNET_BLOCKS, partial(odconv, num_experts=1), "ResNet-50 + ODConv (1x)"),
    "od_resnet50_4x": ("resnet50", RESNET_BLOCKS, partial(odconv, num_experts=4), "ResNet-50 + ODConv (4x)"),
    "od_mobilenetv2_100": ("mobilenetv2_100", MOBILENETV2_BLOCKS, partial(odconv, num_experts=1),
                           "MobileNetV2 (1.0x) + ODConv (1x)"),
    "od_mobilenetv2_100_4x": ("mobilenetv2_100", MOBILENETV2_BLOCKS, partial(odconv, num_experts=4),
                              "MobileNetV2 (1.0x) + ODConv (4x)"),
    "dy_resnet18": ("resnet18", RESNET_BLOCKS_AND_SHORTCUTS, dyconv, "DY-ResNet-18 (K=4)"),
    "dy_resnet50": ("resnet50", RESNET_BLOCKS_AND_SHORTCUTS, dyconv, "DY-ResNet-50 (K=4)"),
    "dy_mobilenetv2_100": ("mobilenetv2_100", MOBILENETV2_BLOCKS, dyconv, "DY-MobileNetV2 (1.0x, K=4)"),
    "condconv_resnet50": ("resnet50", RESNET_BLOCKS, condconv, "CondConv-ResNet-50 (8 experts)"),
    "dcd_resnet18": ("resnet18", RESNET_BLOCKS_AND_CLASSIFIER, partial(dcd, pool_size=2), "ResNet-18 + DCD"),
    "dcd_resnet50": ("resnet50", RESNET_BLOCKS_AND_CLASSIFIER, dcd, "ResNet-50 + DCD"),
    "dcd_mobilenetv2_100": ("mobilenetv2_100", MOBILENETV2_POINTWISE_AND_CLASSIFIER, partial(dcd, mobilenet=True),
                            "MobileNetV2 (1.0x) + DCD"),
}


#: Published (parameters, multiply-adds at 224x224) and where they are published.
PUBLISHED_COUNTS: Dict[str, Tuple[float, float, str]] = {
    "od_resnet18": (11.94e6, 1.838e9, "ODConv README"), "od_resnet18_4x": (44.90e6, 1.916e9, "ODConv README"),
    "od_resnet50": (28.64e6, 3.916e9, "ODConv README"), "od_resnet50_4x": (90.67e6, 4.080e9, "ODConv README"),
    "od_mobilenetv2_100": (4.94e6, 311.8e6, "ODConv README"),
    "od_mobilenetv2_100_4x": (11.51e6, 327.1e6, "ODConv README"),
    "dy_resnet18": (45.47e6, 1.861e9, "ODConv paper, DyConv (4x) row"),
    "dy_resnet50": (100.88e6, 3.965e9, "ODConv paper, DyConv (4x) row"),
    "dy_mobilenetv2_100": (12.40e6, 312.9e6, "ODConv paper, DyConv (4x) row"),
}
#: The 1x1 convolution before the stride at 4x the pixels in stages 2-4: what ResNet-50 v1.5 (the authors' code,
#: timm) computes more than v1, whose count (3.858G) the papers publish as ResNet-50's.
RESNET50_V1_SAVING = 3 * 77_070_336


def count_parameters_and_multiply_adds(model: nn.Module, input_size: Tuple[int, int, int] = (3, 224, 224)
                                       ) -> Tuple[int, int]:
    """Parameters, and multiply-adds for one image, counted as the papers count them.

    Multiply-adds are ``torch.utils.flop_counter``'s FLOPs / 2 (matrix products and convolutions; elementwise
    products are not counted), in eval mode, with every dynamic convolution computed as one convolution per sample.
    The model is copied to the meta device first, so counting allocates and computes nothing.

    Args:
        model: Any model.
        input_size: (C, H, W) of the image.

    Returns:
        (parameters, multiply-adds).
    """
    params = sum(p.numel() for p in model.parameters())
    meta = copy.deepcopy(model).to("meta").eval()
    for _, layer in dynamic_layers(meta):
        if "grouped" in layer.computation_modes():
            layer.set_mode("grouped")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(1, *input_size, device="meta"))
    return params, counter.get_total_flops() // 2


def paper_cfg(base: str, classifier_suffix: str = "") -> Dict[str, Any]:
    """The base model's input size, normalisation and layer names, with no weights (no url, hub id or file).

    A dynamic classifier keeps its static weight in a submodule (DCD's W0 in ``<classifier>.conv``):
    ``classifier_suffix`` names it.
    """
    base_cfg = get_pretrained_cfg(base)
    inherited = ("input_size", "pool_size", "crop_pct", "interpolation", "mean", "std", "first_conv", "classifier")
    cfg = {key: getattr(base_cfg, key) for key in inherited}
    cfg["classifier"] += classifier_suffix
    return {**cfg, "num_classes": 1000, "license": "mit"}


def _dynamic_classifier(base: str, placement: Placement) -> bool:
    return any(get_pretrained_cfg(base).classifier in names for names in placement.values())


default_cfgs = generate_default_cfgs({name: paper_cfg(base, ".conv" if _dynamic_classifier(base, placement) else "")
                                      for name, (base, placement, *_) in PAPER_MODELS.items()})


def create_from_timm(variant: str, base: str, swap: Callable[[nn.Module], Any], pretrained: bool = False,
                     **kwargs) -> nn.Module:
    """timm's ``base`` model under the name and cfg of ``variant``, with ``swap`` making its layers dynamic."""
    if pretrained:
        raise RuntimeError(f"No pretrained weights exist for {variant}. Use `pretrained=False` for random init.")
    # a cfg the caller passed (timm passes the registry's, or the caller's own) wins over the registry's
    given = kwargs.pop("pretrained_cfg", None)
    cfg = get_pretrained_cfg(variant).to_dict()
    if isinstance(given, PretrainedCfg):
        cfg = given.to_dict()
    elif isinstance(given, dict):
        cfg.update(given)
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    cfg = {**cfg, **overlay, "architecture": variant, "tag": ""}
    model = timm.create_model(base, pretrained=False, pretrained_cfg=cfg, **kwargs)
    swap(model)
    return model


def _register(name: str) -> None:
    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        base, placement, make, _ = PAPER_MODELS[name]
        return create_from_timm(name, base, lambda model: swap_convs(model, placement, make), pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{PAPER_MODELS[name][3]}: timm's ``{PAPER_MODELS[name][0]}`` with dynamic convolutions."
    globals()[name] = register_model(entrypoint)


for _name in PAPER_MODELS:
    _register(_name)
