"""KernelWarehouse's ImageNet networks: timm's ResNet-18/50 and MobileNetV2 1.0/0.5 with the authors' warehouses.

Li, Yao. "KernelWarehouse: Rethinking the Design of Dynamic Convolution". ICML 2024. Built from timm's own definitions
(``resnet18``, ``resnet50``, ``mobilenetv2_100``, ``mobilenetv2_050``), with every convolution the authors make
dynamic replaced in place by a :class:`~dynconv.layers.KWConv2d` of the same geometry in the warehouse they assign it
to. What follows their code (https://github.com/OSVAI/KernelWarehouse), file by file:

- ``models/kw_resnet.py``: every convolution of the residual blocks and the strided shortcuts; the stem, the
  unstrided shortcut of ResNet-50's first stage, the first 1x1 convolution of that stage and the classifier stay
  static. One warehouse per stage (``sharing_range`` "layer_conv"); a stage's first block hands its first
  convolution, and its strided shortcut, to the previous stage's warehouse (``warehouse_handover``).
- ``models/kw_mobilenetv2.py``: every convolution, the stem and the last 1x1 one included, the classifier static;
  stages 1-6 of ``kw_stage_setting`` (the last two rows of the inverted-residual table share stage 6), a stage's
  first block in the previous stage's warehouses. With ``sharing_range`` ("layer", "pwconv") (1x) the 1x1
  convolutions of a stage share one warehouse and the depthwise ones another; with ("layer",) (4x) the expanding
  and the projecting 1x1 convolutions have a warehouse each.
- ``models/kw1d2x_mobilenetv2.py`` (1/2x): the 1x1 convolutions are dynamic in stage 6 only, the classifier is a
  :class:`~dynconv.layers.KWLinear`, the attention is narrower (``reduction`` 1/32), and every warehouse has its own
  ratios (the tuples of that file, in the order the warehouses are created).
- The settings of ``configs/<network>/kw*.json``: ``cell_num_ratio`` 1/4 (ResNet-18 only), 1/2, 1, 2 (ResNet-18
  only), 4; below 1x (ResNets) ``cell_inplane_ratio`` and ``cell_outplane_ratio`` 1/2; ResNet-50 1/2x also
  ``nonlocal_basis_ratio`` 1/16; ``reduction`` 1/16 (the attention's ``rd_ratio``).

Parameter counts are pinned against the authors' README in ``tests/test_kernelwarehouse_nets.py``. No ImageNet
weights exist here (``pretrained=True`` raises timm's "No pretrained weights" error).
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from timm.models import generate_default_cfgs, register_model
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import Bottleneck, ResNet
from torch import nn

from ..layers import KWConv2d, KWLinear, SharingScope
from .paper_nets import conv_geometry, create_from_timm, paper_cfg

__all__ = ["KW_MODELS", "KW_PUBLISHED_PARAMS"]

#: (parent module, attribute, warehouse name) of every layer made dynamic, in the order the authors create them
Placement = List[Tuple[nn.Module, str, str]]
Ratio = Union[float, Sequence[float]]


def resnet_placement(model: ResNet) -> Placement:
    """The authors' warehouses of a timm ResNet (``models/kw_resnet.py``): one per stage, with the handover of each
    stage's first convolution and strided shortcut to the previous stage."""
    placement = []
    for stage_index in range(4):
        stage = getattr(model, f"layer{stage_index + 1}")
        first = stage[0]
        if first.downsample is not None and first.downsample[0].stride != (1, 1):
            placement.append((first.downsample, "0", f"stage{stage_index - 1}"))
        for block_index, block in enumerate(stage):
            handover = block_index == 0
            previous = stage_index - 1 if handover else stage_index
            bottleneck = isinstance(block, Bottleneck)
            if not bottleneck:
                previous = max(previous, 0)  # BasicBlock: the first stage keeps its first convolution (max(s-1, 0))
            if previous >= 0:  # Bottleneck: the first stage's first 1x1 convolution stays static
                placement.append((block, "conv1", f"stage{previous}"))
            placement.append((block, "conv2", f"stage{stage_index}"))
            if bottleneck:
                placement.append((block, "conv3", f"stage{stage_index}"))
    return placement


#: The authors' stage of each row of MobileNetV2's inverted-residual table (``kw_stage_setting``)
MOBILENETV2_STAGES = (1, 2, 3, 4, 5, 6, 6)


def mobilenetv2_placement(model: EfficientNet, split_pointwise: bool, pointwise_stages: Sequence[int] = (),
                          classifier: bool = False) -> Placement:
    """The authors' warehouses of a timm MobileNetV2 (``models/kw_mobilenetv2.py``, ``kw1d2x_mobilenetv2.py``).

    Args:
        model: timm's MobileNetV2.
        split_pointwise: The expanding and the projecting 1x1 convolutions of a stage have a warehouse each
            (``sharing_range`` ("layer",), the 4x setting), else one together (("layer", "pwconv")).
        pointwise_stages: Only the 1x1 convolutions of these stages are dynamic (the 1/2x network: (6,)); empty for
            all of them.
        classifier: The classifier is dynamic too (the 1/2x network).
    """
    def pointwise(stage: int, index: int) -> Optional[str]:
        if pointwise_stages and stage not in pointwise_stages:
            return None
        return f"stage{stage}_pwconv{index}" if split_pointwise else f"stage{stage}_pwconv"

    placement = [(model, "conv_stem", "stage0_conv")]
    for row, blocks in enumerate(model.blocks):
        for index, block in enumerate(blocks):
            handover = index == 0 and row > 0 and MOBILENETV2_STAGES[row] != MOBILENETV2_STAGES[row - 1]
            stage = MOBILENETV2_STAGES[row] - (1 if handover else 0)
            convs = (("conv_pw", pointwise(stage, 0)), ("conv_dw", f"stage{stage}_dwconv"),
                     ("conv_pwl", pointwise(stage, 1)))
            if row == 0:  # timm's first block is a DepthwiseSeparableConv: conv_dw, then conv_pw (the projection)
                convs = (("conv_dw", f"stage{stage}_dwconv"), ("conv_pw", pointwise(stage, 1)))
            placement += [(block, name, warehouse) for name, warehouse in convs if warehouse is not None]
    if pointwise(6, 1) is not None:  # the 1x1 convolution before the pooling (absent from a features_only model)
        placement.append((model, "conv_head", pointwise(6, 1)))
    if classifier:
        placement.append((model, "classifier", "classifier"))
    return placement


def _per_warehouse(value: Ratio, index: int) -> float:
    return value[index] if isinstance(value, (list, tuple)) else value


def make_dynamic(model: nn.Module, placement: Placement, *, cell_num_ratio: Ratio = 1.0,
                 cell_inplane_ratio: Ratio = 1.0, cell_outplane_ratio: Ratio = 1.0, nonlocal_basis_ratio: float = 1.0,
                 rd_ratio: float = 1 / 16) -> int:
    """Replace, in place, every layer of ``placement`` by a KernelWarehouse layer of its geometry in its warehouse, then
    allocate the warehouses. A ratio is one value, or one per warehouse in the order they are first named (the
    authors' ``Warehouse_Manager`` order). Returns the number of warehouses."""
    scopes: Dict[str, Tuple[int, SharingScope]] = {}
    # a features_only or headless model lacks the head's layers (or has Identity in their place): they stay out
    placement = [(parent, name, warehouse) for parent, name, warehouse in placement
                 if isinstance(getattr(parent, name, None), (nn.Conv2d, nn.Linear))]
    for parent, name, warehouse in placement:
        index, scope = scopes.setdefault(warehouse, (len(scopes), SharingScope()))
        ratios = {"cell_num_ratio": _per_warehouse(cell_num_ratio, index),
                  "cell_inplane_ratio": _per_warehouse(cell_inplane_ratio, index),
                  "cell_outplane_ratio": _per_warehouse(cell_outplane_ratio, index)}
        layer = getattr(parent, name)
        common = dict(sharing=scope, nonlocal_basis_ratio=nonlocal_basis_ratio, rd_ratio=rd_ratio, **ratios)
        if isinstance(layer, nn.Linear):
            dynamic = KWLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                               device=layer.weight.device, dtype=layer.weight.dtype, **common)
        else:
            dynamic = KWConv2d(**conv_geometry(layer), bias=layer.bias is not None, **common)
        setattr(parent, name, dynamic)
    for _, scope in scopes.values():
        scope.close()
    return len(scopes)


# the 1/2x MobileNetV2's per-warehouse settings (models/kw1d2x_mobilenetv2.py), in warehouse order: the stem, the
# depthwise convolutions of stages 1-6, stage 6's expanding, depthwise and projecting ones, the classifier
_MOBILENETV2_1D2X = dict(cell_num_ratio=(1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 0.5),
                         cell_inplane_ratio=(1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 0.025),
                         cell_outplane_ratio=(1, 1, 1, 1, 1, 1, 0.5, 1, 0.5, 1), rd_ratio=1 / 32)
_RESNET_BELOW_1X = dict(cell_inplane_ratio=0.5, cell_outplane_ratio=0.5)

#: name -> (timm base model, placement, make_dynamic settings, what it is)
KW_MODELS: Dict[str, Tuple[str, Callable[[nn.Module], Placement], Dict[str, Any], str]] = {
    "kw1d4x_resnet18": ("resnet18", resnet_placement, dict(cell_num_ratio=0.25, **_RESNET_BELOW_1X),
                        "ResNet-18 + KernelWarehouse (1/4x)"),
    "kw1d2x_resnet18": ("resnet18", resnet_placement, dict(cell_num_ratio=0.5, **_RESNET_BELOW_1X),
                        "ResNet-18 + KernelWarehouse (1/2x)"),
    "kw1x_resnet18": ("resnet18", resnet_placement, {}, "ResNet-18 + KernelWarehouse (1x)"),
    "kw2x_resnet18": ("resnet18", resnet_placement, dict(cell_num_ratio=2.0), "ResNet-18 + KernelWarehouse (2x)"),
    "kw4x_resnet18": ("resnet18", resnet_placement, dict(cell_num_ratio=4.0), "ResNet-18 + KernelWarehouse (4x)"),
    "kw1d2x_resnet50": ("resnet50", resnet_placement,
                        dict(cell_num_ratio=0.5, nonlocal_basis_ratio=1 / 16, **_RESNET_BELOW_1X),
                        "ResNet-50 + KernelWarehouse (1/2x)"),
    "kw1x_resnet50": ("resnet50", resnet_placement, {}, "ResNet-50 + KernelWarehouse (1x)"),
    "kw4x_resnet50": ("resnet50", resnet_placement, dict(cell_num_ratio=4.0), "ResNet-50 + KernelWarehouse (4x)"),
}
for _width in ("100", "050"):
    KW_MODELS.update({
        f"kw1d2x_mobilenetv2_{_width}": (
            f"mobilenetv2_{_width}", lambda m: mobilenetv2_placement(m, True, pointwise_stages=(6,), classifier=True),
            _MOBILENETV2_1D2X, f"MobileNetV2 ({int(_width) / 100:.1f}x) + KernelWarehouse (1/2x)"),
        f"kw1x_mobilenetv2_{_width}": (
            f"mobilenetv2_{_width}", lambda m: mobilenetv2_placement(m, False), {},
            f"MobileNetV2 ({int(_width) / 100:.1f}x) + KernelWarehouse (1x)"),
        f"kw4x_mobilenetv2_{_width}": (
            f"mobilenetv2_{_width}", lambda m: mobilenetv2_placement(m, True), dict(cell_num_ratio=4.0),
            f"MobileNetV2 ({int(_width) / 100:.1f}x) + KernelWarehouse (4x)"),
    })

#: The parameter counts of the authors' README (and the authors' code where it differs), with where they come from.
KW_PUBLISHED_PARAMS: Dict[str, Tuple[float, str]] = {
    "kw1d4x_resnet18": (4.08e6, "KernelWarehouse README (their code and config give 4.03 M)"),
    "kw1d2x_resnet18": (7.43e6, "KernelWarehouse README"), "kw1x_resnet18": (11.93e6, "KernelWarehouse README"),
    "kw2x_resnet18": (23.24e6, "KernelWarehouse README"), "kw4x_resnet18": (45.86e6, "KernelWarehouse README"),
    "kw1d2x_resnet50": (17.64e6, "KernelWarehouse README"), "kw1x_resnet50": (28.05e6, "KernelWarehouse README"),
    "kw4x_resnet50": (102.02e6, "KernelWarehouse README"),
    "kw1d2x_mobilenetv2_100": (2.65e6, "KernelWarehouse README"),
    "kw1x_mobilenetv2_100": (5.17e6, "KernelWarehouse README"),
    "kw4x_mobilenetv2_100": (11.38e6, "KernelWarehouse README"),
    "kw1d2x_mobilenetv2_050": (1.47e6, "KernelWarehouse README"),
    "kw1x_mobilenetv2_050": (2.85e6, "KernelWarehouse README"),
    "kw4x_mobilenetv2_050": (4.65e6, "KernelWarehouse README"),
}


def _swap(variant: str) -> Callable[[nn.Module], None]:
    _, placement, settings, _ = KW_MODELS[variant]
    return lambda model: make_dynamic(model, placement(model), **settings)


# the 1/2x MobileNetV2's KWLinear classifier has no weight of its own (its cells are the warehouse's); the cfg names
# the module, which timm's reset_classifier replaces
default_cfgs = generate_default_cfgs({name: paper_cfg(base) for name, (base, *_) in KW_MODELS.items()})


def _register(name: str) -> None:
    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        return create_from_timm(name, KW_MODELS[name][0], _swap(name), pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{KW_MODELS[name][3]}: timm's ``{KW_MODELS[name][0]}`` with the authors' warehouses."
    globals()[name] = register_model(entrypoint)


for _name in KW_MODELS:
    _register(_name)
