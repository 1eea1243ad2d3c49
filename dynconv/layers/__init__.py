"""Drop-in dynamic-convolution layers: routing heads, branch mixing, kernel mixing, and a block factory."""
from .cond_conv import CondConv2d
from .create_block import block_kinds, can_pool_before_norm, create_block, register_block, shares_parameters
from .dcd_conv import DCDAttention, DCDConv2d, DCDLinear
from .dy_conv import DyConv2d
from .dynamic_block import DynamicBlock, mix_branches
from .family import DynamicConv, SharingScope, dynamic_layers, filter_weights, init_identity_
from .kernel_mixing import ExpertConv2d, MixedKernelConv2d, mixed_kernel_conv2d, per_sample_conv2d
from .kernel_mixing_block import KernelMixingBlock
from .kernel_warehouse import KWAttention, KWConv2d, KWLinear, Warehouse
from .od_conv import ODConv2d, OmniAttention
from .routing import Router, RoutingHead, make_rd_channels

__all__ = [
    "CondConv2d", "DCDAttention", "DCDConv2d", "DCDLinear", "DyConv2d", "DynamicBlock", "DynamicConv", "ExpertConv2d",
    "KernelMixingBlock", "KWAttention", "KWConv2d", "KWLinear", "MixedKernelConv2d", "ODConv2d", "OmniAttention",
    "Router", "RoutingHead", "SharingScope", "Warehouse",
    "block_kinds", "can_pool_before_norm", "create_block", "dynamic_layers", "filter_weights", "init_identity_",
    "make_rd_channels", "mix_branches", "mixed_kernel_conv2d", "per_sample_conv2d", "register_block",
    "shares_parameters",
]
