"""CondConv: Conditionally Parameterized Convolutions for Efficient Inference.

Yang, Bender, Le, Ngiam. NeurIPS 2019. https://arxiv.org/abs/1904.04971

K expert kernels mixed per sample by independent sigmoid gates on the globally pooled input:
``W(x) = sum_k sigmoid(GAP(x) R)_k W_k``. Compared with timm's ``CondConv2d``, the routing lives inside the layer and
the per-sample convolution picks a faster exact form where one exists (:mod:`~dynconv.layers.kernel_mixing`).
"""
from typing import Optional

import torch

from .create_block import register_block
from .kernel_mixing import MixedKernelConv2d
from .kernel_mixing_block import kernel_mixing_builder
from .routing import RoutingHead


class CondConv2d(MixedKernelConv2d):
    """Conditionally parameterized convolution with sigmoid routing (no normalisation or activation).

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        kernel_size: Kernel size (odd).
        stride: Stride.
        padding: Zero padding; ``None`` gives "same" padding, ``dilation * (kernel_size - 1) // 2``.
        dilation: Kernel dilation.
        groups: Channel groups.
        bias: Learn one bias per expert.
        num_experts: Number of expert kernels K.
        temperature: The routing logits are divided by it before the sigmoid.
        rd_ratio: Width of an optional hidden layer in the routing, relative to C_in; ``None`` (the paper) routes
            with one linear layer.
        rd_channels: An explicit hidden width (overrides ``rd_ratio``).
        rd_divisor: The hidden width from ``rd_ratio`` is rounded to a multiple of it.
        mode: Per-sample convolution: ``"auto"``, ``"grouped"``, ``"outputs"`` or ``"bmm"`` (all exact).
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, C_out, H', W')

    Example:
        >>> conv = CondConv2d(8, 16, num_experts=4)
        >>> conv(torch.randn(2, 8, 10, 10)).shape
        torch.Size([2, 16, 10, 10])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1, bias: bool = False,
                 num_experts: int = 4, temperature: float = 1.0, rd_ratio: Optional[float] = None,
                 rd_channels: Optional[int] = None, rd_divisor: int = 1, mode: str = "auto",
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        dd = {"device": device, "dtype": dtype}
        routing = RoutingHead(in_channels, num_experts, rd_ratio=rd_ratio, rd_channels=rd_channels,
                              rd_divisor=rd_divisor, gate="sigmoid", temperature=temperature, **dd)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         num_experts, routing, mode, **dd)


register_block("condconv")(kernel_mixing_builder("condconv", CondConv2d))
