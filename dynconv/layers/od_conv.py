"""ODConv: Omni-Dimensional Dynamic Convolution.

Li, Zhou, Yao. ICLR 2022. https://arxiv.org/abs/2209.07947

Four attentions from one pooled descriptor modulate the kernel along all its dimensions: spatial (k x k taps),
input channels, output channels (filters) and kernel number (K experts)::

    W_b = sum_k a_w[b, k] * (a_s[b] * W_k)        # a_s over the k x k taps
    y_b = a_f[b] * conv(a_c[b] * x_b, W_b)         # a_c over input channels, a_f over output channels

The output-channel attention acts on the output (equivalent and cheaper than on the weights). The input-channel
attention rides on the pass that already applies the spatial one, to the per-sample kernels or to the unfolded
input, as one (B, C_in, k * k) factor: scaling the input on its own costs a pass over the activations and another in
the backward. The original attention has a BatchNorm after its first layer; we leave it out, so batch size 1 trains.
"""
from typing import Optional, Tuple

import torch
from timm.layers import SelectAdaptivePool2d
from torch import nn
from torch.amp import is_autocast_available

from .create_block import register_block
from .dynamic_block import mix_branches
from .kernel_mixing import MODES, ExpertConv2d, mix_kernels, output_size, per_sample_conv2d, unfold_channels_last
from .kernel_mixing_block import kernel_mixing_builder
from .routing import Router, make_rd_channels
from .validation import check_input, check_positive_int

#: The paper's smallest attention width.
ODCONV_MIN_RD_CHANNELS = 16


def _autocast_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype autocast computes convolutions in on ``x``'s device, or None where it is off (or has no autocast,
    like the meta device that counts multiply-adds)."""
    device = x.device.type
    if is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


class OmniAttention(Router):
    """ODConv's four attentions: pooled input -> Linear -> ReLU -> four heads.

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        kernel_size: Kernel size k; the spatial head is left out for k=1.
        num_experts: Kernels K; the kernel head is left out for K=1.
        groups: Channel groups of the convolution; for a depthwise one (C_in = groups = C_out) the filter head is left
            out, as in the authors' code, since the channel attention already scales each filter's only input.
        rd_ratio: Hidden width relative to C_in (the paper's 1/16), at least 16 (:func:`make_rd_channels`).
        rd_channels: An explicit hidden width (overrides ``rd_ratio``).
        rd_divisor: The hidden width from ``rd_ratio`` is rounded to a multiple of it.
        temperature: All heads divide their logits by it (the kernel head is a softmax, the others sigmoids).
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: channel (B, C_in), filter (B, C_out) or None, spatial (B, k * k) or None, kernel (B, K) or None
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_experts: int, *, groups: int = 1,
                 rd_ratio: float = 0.0625, rd_channels: Optional[int] = None, rd_divisor: int = 1,
                 temperature: float = 1.0, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        dd = {"device": device, "dtype": dtype}
        super().__init__(temperature, **dd)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size), ("num_experts", num_experts), ("groups", groups)):
            check_positive_int(name, value)
        depthwise = in_channels == groups == out_channels
        hidden = make_rd_channels(in_channels, rd_ratio, rd_channels, rd_divisor, ODCONV_MIN_RD_CHANNELS)
        # timm's pooling rather than einops' Reduce, which torch.fx cannot trace (it indexes by input.ndim)
        self.pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.fc = nn.Sequential(nn.Linear(in_channels, hidden, **dd), nn.ReLU(inplace=True))
        self.channel = nn.Linear(hidden, in_channels, **dd)
        self.filter = None if depthwise else nn.Linear(hidden, out_channels, **dd)
        self.spatial = nn.Linear(hidden, kernel_size * kernel_size, **dd) if kernel_size > 1 else None
        self.kernel = nn.Linear(hidden, num_experts, **dd) if num_experts > 1 else None

    def mixing_weights(self, output) -> Optional[torch.Tensor]:
        """The kernel attention (B, K) of the four (None for K=1)."""
        return output[3]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor],
                                                Optional[torch.Tensor]]:
        hidden = self.fc(self.pool(x))
        channel = torch.sigmoid(self.channel(hidden) / self.temperature)
        filters = None if self.filter is None else torch.sigmoid(self.filter(hidden) / self.temperature)
        spatial = None if self.spatial is None else torch.sigmoid(self.spatial(hidden) / self.temperature)
        kernel = None if self.kernel is None else torch.softmax(self.kernel(hidden) / self.temperature, dim=1)
        return channel, filters, spatial, kernel


class ODConv2d(ExpertConv2d):
    """Omni-dimensional dynamic convolution (no normalisation or activation).

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        kernel_size: Kernel size k (odd).
        stride: Stride.
        padding: Zero padding; ``None`` gives "same" padding, ``dilation * (k - 1) // 2``.
        dilation: Kernel dilation.
        groups: Channel groups.
        num_experts: Number of kernels K (the paper uses 1 or 4).
        rd_ratio: Attention hidden width relative to C_in (the paper's 1/16), at least 16.
        rd_channels: An explicit attention hidden width (overrides ``rd_ratio``).
        rd_divisor: The hidden width from ``rd_ratio`` is rounded to a multiple of it.
        temperature: Initial temperature of the attentions.
        mode: How to compute it: ``"auto"``, ``"grouped"`` or ``"bmm"`` (each sample's kernel built, as the authors
            do) or ``"outputs"`` (no per-sample kernels: the spatial attention scales the taps of the unfolded input,
            one dense product with the K experts side by side gives K outputs, the kernel attention mixes them;
            ungrouped layers). All exact.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, C_out, H', W')

    Example:
        >>> conv = ODConv2d(8, 16, num_experts=4)
        >>> conv(torch.randn(2, 8, 10, 10)).shape
        torch.Size([2, 16, 10, 10])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1, num_experts: int = 4,
                 rd_ratio: float = 0.0625, rd_channels: Optional[int] = None, rd_divisor: int = 1,
                 temperature: float = 1.0, mode: str = "auto", device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        dd = {"device": device, "dtype": dtype}
        modes = ((MODES, "") if groups == 1 else
                 (("auto", "grouped", "bmm"), " (output mixing of a grouped ODConv is not implemented)"))
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, False,
                         num_experts, mode, modes, **dd)
        self.attention = OmniAttention(in_channels, out_channels, kernel_size, num_experts, groups=groups,
                                       rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor,
                                       temperature=temperature, **dd)

    unfolds_input = True

    def _tap_scales(self, channel: torch.Tensor, spatial: Optional[torch.Tensor]) -> torch.Tensor:
        """The channel and spatial attentions as one factor per input channel and tap, (B, C_in, k * k)."""
        taps = self.kernel_size[0] * self.kernel_size[1]
        if spatial is None:
            return channel[:, :, None].expand(-1, -1, taps)
        return channel[:, :, None] * spatial[:, None, :]

    def _mixed_outputs(self, x: torch.Tensor, scales: torch.Tensor, kernel: Optional[torch.Tensor]) -> torch.Tensor:
        """``conv(a_c * x, sum_k a_k (s * W_k)) = sum_k a_k (W_k @ (a_c s * unfold(x)))``: the channel and spatial
        attentions scale the taps of the unfolded input instead of the kernels, one product with the K experts side
        by side gives K outputs, and the kernel attention a mixes them. K times the FLOPs of the static convolution
        and no per-sample kernel. (B, C_in, H, W) and scales (B, C_in, k * k) -> (B, C_out, H', W'), channels-last.

        Under autocast the input is cast before it is unfolded, so that the k * k times larger patches are built,
        scaled and differentiated in the low precision the product would cast them to anyway."""
        batch = x.shape[0]
        dtype = _autocast_dtype(x)
        if dtype is not None:
            x = x.to(dtype)
        out_h, out_w = output_size(x.shape[-2:], self.kernel_size, self.stride, self.padding, self.dilation)
        patches = unfold_channels_last(x, self.kernel_size, self.stride, self.padding, self.dilation)
        # the scales (B, C_in, taps) in the patches' (taps, C_in) order, the experts' taps likewise
        patches = patches * scales.transpose(1, 2).reshape(batch, 1, patches.shape[-1]).to(x.dtype)
        outputs = self.num_experts * self.out_channels
        experts = self.weight.view(outputs, self.in_channels, -1).transpose(1, 2).reshape(outputs, -1).to(x.dtype)
        out = patches.reshape(batch * out_h * out_w, patches.shape[-1]) @ experts.t()
        out = out.view(batch, out_h, out_w, outputs).permute(0, 3, 1, 2)
        return out if kernel is None else mix_branches(out, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.weight.dtype)
        channel, filters, spatial, kernel = self.attention(x)
        batch = x.shape[0]
        mode = self.resolve_mode(x)
        if mode == "outputs":
            out = self._mixed_outputs(x, self._tap_scales(channel, spatial), kernel)
        else:
            experts = self.experts
            dtype = _autocast_dtype(x)
            if dtype is not None:
                # the convolution would cast the B per-sample kernels: build them in its dtype instead
                experts = experts.to(dtype)
            weight = experts.expand(batch, *experts.shape[1:]) if kernel is None else mix_kernels(kernel, experts)
            # a grouped kernel's input channels are (C_in / groups) per group: group g's filters see channels g * n..
            scales = self._tap_scales(channel, spatial).view(batch, self.groups, 1, self.in_channels // self.groups,
                                                             *self.kernel_size)
            weight = (weight.view(batch, self.groups, self.out_channels // self.groups, *weight.shape[2:])
                      * scales.to(weight.dtype)).view(weight.shape)
            out = per_sample_conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups, mode)
        if filters is not None:
            out = out * filters[:, :, None, None].to(out.dtype)
        return self.add_shift(out)


register_block("odconv")(kernel_mixing_builder("odconv", ODConv2d))
