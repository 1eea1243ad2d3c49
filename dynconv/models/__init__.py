"""Registered dynamic-convolution models; importing this package registers them with timm."""
from .dynconvnet import CIFAR10_MEAN, CIFAR10_STD, DynConvNet, DynConvNetCfg
from .heads import MlpClassifierHead, create_head

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "DynConvNet", "DynConvNetCfg", "MlpClassifierHead", "create_head"]
