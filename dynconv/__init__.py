"""dynconv: dynamic (input-conditioned) convolutions for PyTorch, as timm-native layers and models.

Importing the package registers its models with timm::

    import dynconv, timm
    model = timm.create_model("dynconv_cifar")
"""
from .export import export_onnx, export_program
from .layers import (
    CondConv2d,
    DCDConv2d,
    DyConv2d,
    DynamicBlock,
    KWConv2d,
    ODConv2d,
    RoutingHead,
    create_block,
    mix_branches,
)
from .models import DynConvNet, DynConvNetCfg
from .routing_recorder import RoutingRecorder
from .routing_stats import AttentionStatistics, RoutingStatistics, attention_statistics, routing_statistics
from .temperature import (
    init_blend_schedule,
    routing_modules,
    set_init_blend,
    set_temperature,
    temperature_schedule,
)

__version__ = "0.1.0"

__all__ = [
    "AttentionStatistics", "CondConv2d", "DCDConv2d", "DyConv2d", "DynConvNet", "DynConvNetCfg", "DynamicBlock",
    "KWConv2d", "ODConv2d", "RoutingHead", "RoutingRecorder", "RoutingStatistics", "create_block", "export_onnx",
    "export_program", "init_blend_schedule", "mix_branches", "attention_statistics", "routing_modules",
    "routing_statistics", "set_init_blend", "set_temperature", "temperature_schedule", "__version__",
]
