"""Routing heads: the small attention network that decides, per sample, how a dynamic convolution mixes K branches.

The coursework block routes with ``softmax(Linear(AdaptiveAvgPool2d(x)))``. The same head, with a temperature,
is the attention of Dynamic Convolution (Chen et al., "Dynamic Convolution: Attention over Convolution Kernels",
CVPR 2020, https://arxiv.org/abs/1912.03458), and with a sigmoid gate the routing function of CondConv (Yang et al.,
"CondConv: Conditionally Parameterized Convolutions for Efficient Inference", NeurIPS 2019,
https://arxiv.org/abs/1904.04971).

There is deliberately no BatchNorm in the head: a BatchNorm over the pooled (B, C) vector cannot train at batch size 1.
"""
from typing import Dict, Optional, Type

import torch
from timm.layers import SelectAdaptivePool2d, make_divisible
from torch import nn

from .validation import check_positive_float, check_positive_int

_GATES = ("softmax", "sigmoid")


def make_rd_channels(in_channels: int, rd_ratio: Optional[float] = None, rd_channels: Optional[int] = None,
                     rd_divisor: int = 1, min_rd_channels: int = 1) -> Optional[int]:
    """Hidden ("reduced") width of a routing network, in timm's ``rd_*`` convention (as in its SqueezeExcite).

    Args:
        in_channels: Channels C of the pooled input.
        rd_ratio: Hidden width relative to C; ``None`` (with ``rd_channels=None``) means no hidden layer.
        rd_channels: An explicit hidden width; overrides ``rd_ratio``.
        rd_divisor: ``C * rd_ratio`` is rounded to a multiple of it (timm's ``make_divisible``).
        min_rd_channels: Smallest width ``rd_ratio`` may give (the papers' floors: 4 for Dynamic Convolution, 16 for
            ODConv).

    Returns:
        The hidden width, or ``None`` for a routing network without a hidden layer.

    Example:
        >>> make_rd_channels(512, rd_ratio=1 / 16, min_rd_channels=16), make_rd_channels(64, 1 / 16, None, 1, 16)
        (32, 16)
    """
    check_positive_int("in_channels", in_channels)
    check_positive_int("rd_divisor", rd_divisor)
    check_positive_int("min_rd_channels", min_rd_channels)
    if rd_channels is not None:
        return check_positive_int("rd_channels", rd_channels)
    if rd_ratio is None:
        return None
    check_positive_float("rd_ratio", rd_ratio)
    return make_divisible(in_channels * rd_ratio, rd_divisor, min_value=min_rd_channels, round_limit=0.0)


class Router(nn.Module):
    """Base of every routing module: it owns the temperature that divides its logits, and says which part of its
    output is the per-sample mixing weight over the K branches or kernels.

    :func:`~dynconv.routing_modules` (temperature annealing) and :class:`~dynconv.RoutingRecorder` find routers by
    this type, so a new block family joins both by subclassing it.

    Args:
        temperature: Initial temperature (> 0).
        device: Device of the temperature buffer (and, in subclasses, of the parameters).
        dtype: Its floating dtype.
    """

    def __init__(self, temperature: float = 1.0, *, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__()
        # a buffer rather than a float attribute, so changing it neither recompiles a torch.compile'd model
        # nor ends up in the state dict
        self.register_buffer(
            "temperature", torch.tensor(check_positive_float("temperature", temperature), device=device, dtype=dtype),
            persistent=False)

    def set_temperature(self, temperature: float) -> None:
        """Set the temperature that divides the logits (e.g. from an annealing schedule)."""
        self.temperature.fill_(check_positive_float("temperature", temperature))

    def mixing_weights(self, output) -> Optional[torch.Tensor]:
        """The (B, K) mixing weights within this router's forward output (None if it mixes nothing, K=1)."""
        return output

    def attentions(self, output) -> Dict[str, torch.Tensor]:
        """Attentions other than mixing weights within the forward output, by name, each (B, D) (DCD's channel
        scale and latent matrix); none for routers that only mix."""
        return {}


class RoutingHead(Router):
    """Global average pool -> [Linear -> act] -> Linear -> gate, giving one weight per branch and sample.

    Args:
        in_channels: Channels C of the input feature map.
        num_experts: Number of branches or kernels K to weight.
        rd_ratio: Width of an optional hidden layer relative to C (:func:`make_rd_channels`); ``None`` with
            ``rd_channels=None`` maps the pooled features straight to K logits (the coursework head, CondConv).
        rd_channels: An explicit hidden width (overrides ``rd_ratio``).
        rd_divisor: The hidden width from ``rd_ratio`` is rounded to a multiple of it.
        temperature: Logits are divided by it before the gate. Large values flatten a softmax towards uniform
            weights; Dynamic Convolution anneals it from 30 to 1. Change it during training with
            :meth:`set_temperature`.
        gate: ``"softmax"`` (weights sum to one, coursework and Dynamic Convolution) or ``"sigmoid"`` (independent
            weights in (0, 1), CondConv).
        act_layer: Activation after the hidden layer.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, C, H, W)
        - Output: (B, K)

    Example:
        >>> head = RoutingHead(16, num_experts=4)
        >>> weights = head(torch.randn(2, 16, 8, 8))
        >>> weights.shape, torch.allclose(weights.sum(dim=1), torch.ones(2))
        (torch.Size([2, 4]), True)
    """

    def __init__(
            self,
            in_channels: int,
            num_experts: int,
            *,
            rd_ratio: Optional[float] = None,
            rd_channels: Optional[int] = None,
            rd_divisor: int = 1,
            temperature: float = 1.0,
            gate: str = "softmax",
            act_layer: Type[nn.Module] = nn.ReLU,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        dd = {"device": device, "dtype": dtype}
        super().__init__(temperature, **dd)
        check_positive_int("in_channels", in_channels)
        check_positive_int("num_experts", num_experts)
        rd_channels = make_rd_channels(in_channels, rd_ratio, rd_channels, rd_divisor)
        if gate not in _GATES:
            raise ValueError(f"gate must be one of {_GATES}, got {gate!r}")
        self.num_experts = num_experts
        self.gate = gate
        # timm's pooling rather than einops' Reduce, which torch.fx cannot trace (it indexes by input.ndim)
        self.pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        if rd_channels is None:
            self.hidden = nn.Identity()
            fc_in = in_channels
        else:
            self.hidden = nn.Sequential(nn.Linear(in_channels, rd_channels, **dd), act_layer())
            fc_in = rd_channels
        self.fc = nn.Linear(fc_in, num_experts, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(self.hidden(self.pool(x))) / self.temperature
        if self.gate == "softmax":
            return torch.softmax(logits, dim=1)
        return torch.sigmoid(logits)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, gate={self.gate}, temperature={self.temperature.item():g}"
