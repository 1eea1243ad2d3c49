"""dynconv: dynamic (input-conditioned) convolutions for PyTorch, as timm-native layers and models.

Importing the package registers its models with timm::

    import dynconv, timm
    model = timm.create_model("dynconv_cifar")
"""
from .layers import DynamicBlock, RoutingHead, create_block, mix_branches
from .models import DynConvNet, DynConvNetCfg
from .routing_recorder import RoutingRecorder

__version__ = "0.1.0"

__all__ = [
    "DynConvNet", "DynConvNetCfg", "DynamicBlock", "RoutingHead", "RoutingRecorder", "create_block", "mix_branches",
    "__version__",
]
