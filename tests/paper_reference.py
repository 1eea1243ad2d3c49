"""The kernel-mixing families written from the papers' formulas, as test oracles that share no code with the layers.

Each function takes plain tensors (the parameters, by what they mean in the paper) and convolves one sample at a
time with the kernel the paper's equations give it. Nothing here calls into ``dynconv``.

- CondConv (Yang et al. 2019, eq. 1-2): ``r(x) = sigmoid(GAP(x) R)``, ``y = (sum_k r_k W_k) * x``.
- Dynamic Convolution (Chen et al. 2020, eq. 2-5): ``pi(x) = softmax(FC2(ReLU(FC1(GAP(x)))) / tau)``,
  ``y = (sum_k pi_k W_k) * x + sum_k pi_k b_k``.
- ODConv (Li et al. 2022, eq. 4): four attentions from ``a = ReLU(FC(GAP(x)))``; the kernel is
  ``sum_k alpha_wk * alpha_fk * alpha_ck * alpha_sk * W_k``, every attention multiplied into the weight along its own
  dimension (the layer instead applies the channel and filter attentions to the activations).
"""
from typing import Optional

import torch
import torch.nn.functional as F


def _pooled(sample: torch.Tensor) -> torch.Tensor:
    """GAP over H and W of a (1, C, H, W) sample, as a (C,) vector."""
    return sample.mean(dim=(0, 2, 3))


def condconv(x: torch.Tensor, experts: torch.Tensor, bias: Optional[torch.Tensor], route_weight: torch.Tensor,
             route_bias: torch.Tensor, stride: int, padding: int, groups: int, temperature: float = 1.0
             ) -> torch.Tensor:
    """CondConv. experts (K, C_out, C_in / g, k, k), bias (K, C_out), route (K, C_in) and (K,)."""
    outputs = []
    for sample in x.split(1):
        r = torch.sigmoid((route_weight @ _pooled(sample) + route_bias) / temperature)
        weight = sum(r[k] * experts[k] for k in range(experts.shape[0]))
        b = None if bias is None else sum(r[k] * bias[k] for k in range(experts.shape[0]))
        outputs.append(F.conv2d(sample, weight, b, stride, padding, 1, groups))
    return torch.cat(outputs)


def dynamic_convolution(x: torch.Tensor, experts: torch.Tensor, bias: Optional[torch.Tensor], fc1_weight: torch.Tensor,
                        fc1_bias: torch.Tensor, fc2_weight: torch.Tensor, fc2_bias: torch.Tensor, stride: int,
                        padding: int, groups: int, temperature: float) -> torch.Tensor:
    """Dynamic Convolution. fc1 (R, C_in), fc2 (K, R)."""
    outputs = []
    for sample in x.split(1):
        hidden = torch.relu(fc1_weight @ _pooled(sample) + fc1_bias)
        pi = torch.softmax((fc2_weight @ hidden + fc2_bias) / temperature, dim=0)
        weight = sum(pi[k] * experts[k] for k in range(experts.shape[0]))
        b = None if bias is None else sum(pi[k] * bias[k] for k in range(experts.shape[0]))
        outputs.append(F.conv2d(sample, weight, b, stride, padding, 1, groups))
    return torch.cat(outputs)


def odconv(x: torch.Tensor, experts: torch.Tensor, fc_weight: torch.Tensor, fc_bias: torch.Tensor,
           channel: tuple, filters: tuple, spatial: Optional[tuple], kernel: Optional[tuple], stride: int,
           padding: int, groups: int, temperature: float = 1.0) -> torch.Tensor:
    """ODConv. fc (R, C_in); channel, filters, spatial, kernel: (weight, bias) of each attention head; filters, spatial
    and kernel ``None`` where the layer has none (depthwise, k=1, K=1)."""
    num_experts, out_channels, group_in, kh, kw = experts.shape
    outputs = []
    for sample in x.split(1):
        a = torch.relu(fc_weight @ _pooled(sample) + fc_bias)
        alpha_c = torch.sigmoid((channel[0] @ a + channel[1]) / temperature)           # (C_in,)
        alpha_f = (torch.ones(out_channels) if filters is None
                   else torch.sigmoid((filters[0] @ a + filters[1]) / temperature))  # (C_out,)
        alpha_s = (torch.ones(kh, kw) if spatial is None
                   else torch.sigmoid((spatial[0] @ a + spatial[1]) / temperature).view(kh, kw))
        alpha_w = (torch.ones(1) if kernel is None
                   else torch.softmax((kernel[0] @ a + kernel[1]) / temperature, dim=0))
        # a grouped kernel's input dimension indexes the channels of its own group
        per_filter_c = alpha_c.view(groups, group_in).repeat_interleave(out_channels // groups, dim=0)
        weight = sum(alpha_w[k] * experts[k] * alpha_f.view(-1, 1, 1, 1) * per_filter_c.view(out_channels, group_in,
                                                                                               1, 1) * alpha_s
                     for k in range(num_experts))
        outputs.append(F.conv2d(sample, weight, None, stride, padding, 1, groups))
    return torch.cat(outputs)
