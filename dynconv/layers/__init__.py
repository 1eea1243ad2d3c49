"""Drop-in dynamic-convolution layers: routing heads, the branch-mixing block and a factory."""
from .create_block import BLOCK_KINDS, create_block
from .dynamic_block import DynamicBlock, mix_branches
from .routing import RoutingHead

__all__ = ["BLOCK_KINDS", "DynamicBlock", "RoutingHead", "create_block", "mix_branches"]
