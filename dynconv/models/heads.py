"""Classifier heads: global pooling followed by a linear layer or by the coursework's two-layer MLP."""
from collections import OrderedDict
from typing import Optional, Type, Union

import torch
from timm.layers import ClassifierHead, SelectAdaptivePool2d, create_act_layer, get_device_dtype
from torch import nn

from ..layers.validation import check_positive_int

HEAD_KINDS = ("mlp", "linear")


class LinearClassifierHead(ClassifierHead):
    """timm's ``ClassifierHead`` (global pool -> dropout -> Linear) with an optional bias and a fixed logit scale.

    airbench94 (Jordan 2024) classifies with a bias-free linear layer whose logits are multiplied by 1/9: a small
    logit scale keeps the softmax soft at its high learning rates. With ``bias=True`` and ``logit_scale=1`` this is
    timm's head exactly (same parameter names).

    Args:
        in_features: Channels d of the feature map.
        num_classes: Number of logits; 0 for no classifier (pooled features out).
        pool_type: timm global pooling type.
        drop_rate: Dropout probability before the linear layer.
        bias: Whether the linear layer has a bias.
        logit_scale: Factor applied to the logits (not to ``pre_logits`` features).
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, d, H, W)
        - Output: (B, num_classes), or (B, num_features) with ``pre_logits=True`` or ``num_classes=0``

    Example:
        >>> head = LinearClassifierHead(64, 10, bias=False, logit_scale=1 / 9)
        >>> head(torch.randn(2, 64, 3, 3)).shape
        torch.Size([2, 10])
    """

    def __init__(
            self,
            in_features: int,
            num_classes: int,
            pool_type: str = "avg",
            drop_rate: float = 0.0,
            *,
            bias: bool = True,
            logit_scale: float = 1.0,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        if not (isinstance(logit_scale, (int, float)) and logit_scale > 0):
            raise ValueError(f"logit_scale must be a positive number, got {logit_scale!r}")
        self.use_bias = bias
        self.logit_scale = float(logit_scale)
        super().__init__(in_features, num_classes, pool_type=pool_type, drop_rate=drop_rate, device=device,
                         dtype=dtype)
        self._drop_bias()

    def reset(self, num_classes: int, pool_type: Optional[str] = None, **kwargs) -> None:
        super().reset(num_classes, pool_type, **kwargs)
        self._drop_bias()

    def _drop_bias(self) -> None:
        if not self.use_bias and isinstance(self.fc, nn.Linear) and self.fc.bias is not None:
            fc = self.fc
            self.fc = nn.Linear(fc.in_features, fc.out_features, bias=False, device=fc.weight.device,
                                dtype=fc.weight.dtype)
            self.fc.train(fc.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = super().forward(x, pre_logits=pre_logits)
        if pre_logits or self.logit_scale == 1.0 or not isinstance(self.fc, nn.Linear):
            return x
        return x * self.logit_scale


class MlpClassifierHead(nn.Module):
    """Global pool -> Linear(d, h) -> act -> Dropout -> Linear(h, num_classes), the coursework's classifier.

    The whole MLP is the classifier: ``forward(x, pre_logits=True)`` returns the pooled features (size
    ``num_features``), and ``reset(0)`` removes the MLP, as timm expects of ``reset_classifier(0)``.

    Args:
        in_features: Channels d of the feature map.
        num_classes: Number of logits; 0 for no classifier (pooled features out).
        hidden_features: Width h of the hidden layer (the coursework uses 2 * d).
        pool_type: timm global pooling type (``"avg"``, ``"max"``, ``"avgmax"``, ``"catavgmax"``, or ``""`` for none,
            which needs ``num_classes=0``).
        drop_rate: Dropout probability before the last layer.
        act_layer: Activation of the hidden layer.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, d, H, W)
        - Output: (B, num_classes), or (B, num_features) with ``pre_logits=True`` or ``num_classes=0``

    Example:
        >>> head = MlpClassifierHead(64, num_classes=10, hidden_features=128)
        >>> head(torch.randn(2, 64, 4, 4)).shape
        torch.Size([2, 10])
    """

    def __init__(
            self,
            in_features: int,
            num_classes: int,
            *,
            hidden_features: int,
            pool_type: str = "avg",
            drop_rate: float = 0.5,
            act_layer: Union[str, Type[nn.Module]] = nn.ReLU,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.hidden_features = check_positive_int("hidden_features", hidden_features)
        self.drop_rate = drop_rate
        self.act_layer = act_layer
        self.reset(num_classes, pool_type, device=device, dtype=dtype)

    def reset(self, num_classes: int, pool_type: Optional[str] = None, device: Optional[torch.device] = None,
              dtype: Optional[torch.dtype] = None) -> None:
        """Rebuild the classifier for ``num_classes`` (0 removes it) and optionally change the pooling; the new
        layers take the device and dtype of the current ones unless given."""
        dd = get_device_dtype(self, device=device, dtype=dtype)
        if pool_type is None:
            pool_type = self.global_pool.pool_type
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if num_classes and not pool_type:
            raise ValueError("the MLP head needs global pooling: pool_type='' is only allowed with num_classes=0")
        self.global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))
        self.num_features = self.in_features * self.global_pool.feat_mult()
        if num_classes:
            self.fc = nn.Sequential(OrderedDict(
                fc1=nn.Linear(self.num_features, self.hidden_features, **dd),
                act=create_act_layer(self.act_layer, inplace=True),
                drop=nn.Dropout(self.drop_rate),
                fc2=nn.Linear(self.hidden_features, num_classes, **dd),
            ))
        else:
            self.fc = nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)


def create_head(
        kind: str,
        in_features: int,
        num_classes: int,
        *,
        pool_type: str = "avg",
        drop_rate: float = 0.0,
        hidden_ratio: float = 2.0,
        act_layer: Union[str, Type[nn.Module]] = nn.ReLU,
        bias: bool = True,
        logit_scale: float = 1.0,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
) -> nn.Module:
    """Build a classifier head: ``"mlp"`` (:class:`MlpClassifierHead`, hidden width ``hidden_ratio * in_features``)
    or ``"linear"`` (:class:`LinearClassifierHead`: pool -> dropout -> Linear, with ``bias`` and ``logit_scale``).

    Both take ``forward(x, pre_logits=False)`` and ``reset(num_classes, pool_type=None)``.
    """
    if kind == "mlp":
        if not bias or logit_scale != 1.0:
            raise ValueError(f"the MLP head has biases and unscaled logits; head_bias=False and logit_scale "
                             f"(got {logit_scale!r}) apply to the linear head only")
        return MlpClassifierHead(
            in_features, num_classes, hidden_features=round(hidden_ratio * in_features), pool_type=pool_type,
            drop_rate=drop_rate, act_layer=act_layer, device=device, dtype=dtype)
    if kind == "linear":
        return LinearClassifierHead(in_features, num_classes, pool_type=pool_type, drop_rate=drop_rate, bias=bias,
                                    logit_scale=logit_scale, device=device, dtype=dtype)
    raise ValueError(f"head must be one of {HEAD_KINDS}, got {kind!r}")
