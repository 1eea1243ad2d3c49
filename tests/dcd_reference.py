"""Dynamic Convolution Decomposition written from the paper's formula, as a test oracle that shares no code with
:class:`dynconv.layers.DCDConv2d`: nothing here calls into ``dynconv``.

Li et al. 2021 (eq. 6 and section 4): ``W(x) = Lambda(x) W0 + P Phi(x) Q^T``. The authors' layer (resnet_dcd.py,
``conv_dy``) adds an identity to Phi and a BatchNorm after Q and after Phi, so that per sample b::

    W_b = Lambda_b W0 + P (I + D2 Phi_b) D1 Q          at the kernel's centre tap
    c_b = Lambda_b bias + P ((I + D2 Phi_b) s1 + s2)    a per-sample bias

with ``D1 z + s1`` and ``D2 z + s2`` the two BatchNorms' affine maps (running statistics in eval mode; in train mode
the statistics of this batch, which the oracle computes itself from Q x and Phi_b Q x). Lambda and Phi come from the
pooled input through ``h = fc(pool(x))``, ``h = h * g(se(h))``, ``Lambda = g(scale(h) / T)``, ``Phi = phi(h) / T``
with ``g(v) = clamp(v + 3, 0, 6) / 3``. Each sample is then convolved with its own materialised kernel.
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F


def _gate(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(v + 3.0, 0.0, 6.0) / 3.0


def _affine(norm: Dict[str, torch.Tensor], values: torch.Tensor, training: bool, eps: float
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A BatchNorm's map ``D v + s`` as (D, s) per channel; ``values`` (N, L) are what it normalises in train mode."""
    if training:
        mean, var = values.mean(dim=0), values.var(dim=0, unbiased=False)
    else:
        mean, var = norm["running_mean"], norm["running_var"]
    scale = norm["weight"] / torch.sqrt(var + eps)
    return scale, norm["bias"] - mean * scale


def dcd_conv(x: torch.Tensor, params: Dict[str, torch.Tensor], *, stride: int, dilation: int, groups: int,
             pool_size: int, temperature: float, training: bool, eps: float = 1e-5) -> torch.Tensor:
    """DCD by materialised per-sample kernels.

    Args:
        x: (B, C_in, H, W).
        params: ``weight`` W0 (C_out, C_in / groups, k, k), ``bias`` (C_out,) or absent, ``q`` (L, C_in),
            ``p`` (C_out, L), ``q_norm`` and ``phi_norm`` (dicts of weight, bias, running_mean, running_var),
            ``fc`` (R, C_in * pool_size^2), ``se`` (R, R), ``scale`` (C_out, R), ``phi`` (L * L, R).
        stride, dilation, groups: The convolution's geometry ("same" padding).
        pool_size: The attention's pooled size.
        temperature: Divides both heads' logits.
        training: Use this batch's statistics in the two BatchNorms.
        eps: The BatchNorms' epsilon.
    """
    w0, q, p = params["weight"], params["q"], params["p"]
    out_channels, group_in, k, _ = w0.shape
    in_channels, rank = q.shape[1], q.shape[0]
    centre, padding = k // 2, dilation * (k // 2)
    # W0 as a dense kernel: block-diagonal over the groups
    dense = torch.zeros(out_channels, in_channels, k, k, dtype=x.dtype)
    group_out = out_channels // groups
    for g in range(groups):
        rows = slice(g * group_out, (g + 1) * group_out)
        dense[rows, g * group_in:(g + 1) * group_in] = w0[rows]
    # the attentions, sample by sample
    scales, phis = [], []
    for sample in x.split(1):
        pooled = F.adaptive_avg_pool2d(sample, pool_size).reshape(-1)
        h = params["fc"] @ pooled
        h = h * _gate(params["se"] @ h)
        scales.append(_gate(params["scale"] @ h / temperature))
        phis.append((params["phi"] @ h / temperature).reshape(rank, rank))
    # Q x at the strided centre positions, for the BatchNorm statistics of train mode
    qx = torch.einsum("lc,bchw->blhw", q, x[:, :, ::stride, ::stride])
    d1, s1 = _affine(params["q_norm"], qx.permute(0, 2, 3, 1).reshape(-1, rank), training, eps)
    z = d1[None, :, None, None] * qx + s1[None, :, None, None]
    phi_z = torch.stack([torch.einsum("ij,jhw->ihw", phis[b], z[b]) for b in range(x.shape[0])]) if len(x) else z
    d2, s2 = _affine(params["phi_norm"], phi_z.permute(0, 2, 3, 1).reshape(-1, rank), training, eps)
    outputs = []
    for b, sample in enumerate(x.split(1)):
        latent = torch.eye(rank, dtype=x.dtype) + d2[:, None] * phis[b]
        kernel = scales[b][:, None, None, None] * dense
        kernel[:, :, centre, centre] += p @ latent @ (d1[:, None] * q)
        bias = p @ (latent @ s1 + s2)
        if params.get("bias") is not None:
            bias = bias + scales[b] * params["bias"]
        outputs.append(F.conv2d(sample, kernel, bias, stride, padding, dilation))
    return torch.cat(outputs) if outputs else torch.empty(0, out_channels, *z.shape[-2:], dtype=x.dtype)


def dcd_params(layer: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The parameters of a ``DCDConv2d`` by what they mean in the formula (read by attribute, not computed)."""
    def norm(module):
        return {name: getattr(module, name) for name in ("weight", "bias", "running_mean", "running_var")}

    attention = layer.attention
    return {"weight": layer.weight, "bias": layer.bias, "q": layer.q.weight[:, :, 0, 0],
            "p": layer.p.weight[:, :, 0, 0], "q_norm": norm(layer.q_norm), "phi_norm": norm(layer.phi_norm),
            "fc": attention.fc.weight, "se": attention.se.weight, "scale": attention.scale.weight,
            "phi": attention.phi.weight}
