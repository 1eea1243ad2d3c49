"""Dynamic Convolution: Attention over Convolution Kernels.

Chen, Dai, Liu, Chen, Yuan, Liu. CVPR 2020. https://arxiv.org/abs/1912.03458

K kernels aggregated per sample by a softmax attention, ``W(x) = sum_k pi_k(x) W_k``, where
``pi(x) = softmax(FC(ReLU(FC(GAP(x)))) / tau)``. The paper starts the temperature tau at 30 and anneals it linearly
to 1 over the first 10 epochs, so all kernels train early on (:func:`dynconv.temperature_schedule` and the
recipe's ``--temperature-start`` do that).
"""
from typing import Optional

import torch

from .create_block import register_block
from .kernel_mixing import MixedKernelConv2d
from .kernel_mixing_block import kernel_mixing_builder
from .routing import RoutingHead, make_rd_channels

#: The paper's smallest attention width.
DYCONV_MIN_RD_CHANNELS = 4


class DyConv2d(MixedKernelConv2d):
    """Dynamic convolution with softmax attention over K kernels (no normalisation or activation).

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        kernel_size: Kernel size (odd).
        stride: Stride.
        padding: Zero padding; ``None`` gives "same" padding, ``dilation * (kernel_size - 1) // 2``.
        dilation: Kernel dilation.
        groups: Channel groups.
        bias: Learn one bias per kernel.
        num_experts: Number of kernels K (the paper uses 4).
        temperature: Initial softmax temperature (the paper's schedule starts at 30).
        rd_ratio: The attention's hidden width relative to C_in (the paper's 1/4), at least 4.
        rd_channels: An explicit hidden width (overrides ``rd_ratio``).
        rd_divisor: The hidden width from ``rd_ratio`` is rounded to a multiple of it.
        mode: Per-sample convolution: ``"auto"``, ``"grouped"``, ``"outputs"`` or ``"bmm"`` (all exact).
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, C_out, H', W')

    Example:
        >>> conv = DyConv2d(8, 16, stride=2)
        >>> conv(torch.randn(2, 8, 10, 10)).shape
        torch.Size([2, 16, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1, bias: bool = False,
                 num_experts: int = 4, temperature: float = 1.0, rd_ratio: float = 0.25,
                 rd_channels: Optional[int] = None, rd_divisor: int = 1, mode: str = "auto",
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        dd = {"device": device, "dtype": dtype}
        rd_channels = make_rd_channels(in_channels, rd_ratio, rd_channels, rd_divisor, DYCONV_MIN_RD_CHANNELS)
        routing = RoutingHead(in_channels, num_experts, rd_channels=rd_channels, temperature=temperature, **dd)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         num_experts, routing, mode, **dd)


register_block("dyconv")(kernel_mixing_builder("dyconv", DyConv2d))
