"""Registered dynamic-convolution models; importing this package registers them with timm."""
from typing import List

import timm

from .dynconvnet import CIFAR10_MEAN, CIFAR10_STD, DynConvNet, DynConvNetCfg
from .heads import MlpClassifierHead, create_head
from .kernelwarehouse_nets import KW_MODELS, KW_PUBLISHED_PARAMS
from .paper_nets import PAPER_MODELS, PUBLISHED_COUNTS, count_parameters_and_multiply_adds, swap_convs

#: The modules whose models dynconv registers with timm (timm names a model's module by its last part).
MODEL_MODULES = ("dynconvnet", "paper_nets", "kernelwarehouse_nets")


def list_models(pattern: str = "", pretrained: bool = False) -> List[str]:
    """The names of dynconv's registered models (optionally matching a wildcard ``pattern``, or only those with
    shipped weights), as ``timm.list_models`` gives them.

    Example:
        >>> "od_resnet18" in list_models() and "dynconv_cifar_tiny" in list_models("dynconv*")
        True
    """
    return timm.list_models(pattern or "", module=MODEL_MODULES, pretrained=pretrained)


__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "DynConvNet", "DynConvNetCfg", "KW_MODELS", "KW_PUBLISHED_PARAMS",
           "MlpClassifierHead", "MODEL_MODULES", "PAPER_MODELS", "PUBLISHED_COUNTS",
           "count_parameters_and_multiply_adds", "create_head", "list_models", "swap_convs"]
