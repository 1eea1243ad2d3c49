"""DCD: Dynamic Convolution Decomposition.

Li, Chen, Dai, Liu, Chen, Yu, Yuan, Liu, Chen, Vasconcelos. "Revisiting Dynamic Convolution via Matrix
Decomposition". ICLR 2021. https://arxiv.org/abs/2103.08756 (authors' code: https://github.com/liyunsheng13/dcd)

Instead of mixing K kernels, DCD writes each sample's kernel as a static kernel with a dynamic output-channel scale
plus a dynamic low-rank residual::

    W(x) = Lambda(x) W0 + P Phi(x) Q^T        # Lambda: (C_out,) diagonal, Phi: (L, L), L ~ sqrt(C_in)

and never builds W(x): it runs the static convolution, scales its output per sample and channel, and adds a thin path
of two 1x1 convolutions around a per-sample L x L matrix product (Q: C_in -> L, Phi, P: L -> C_out). So it costs
about one static convolution in training as well as inference, with no batch-sized group count.

What follows the authors' code, file by file:

- ``models/imagenet/resnet_dcd.py`` (``conv_dy``, ResNet-50): the low-rank path is a 1x1 path at the kernel's centre,
  beside a convolution of any size; for a strided convolution Q carries the stride. ``L = int(sqrt(C_in))``; the
  attention pools to 1x1, then ``Linear(C_in, h) -> SE gate``, with ``h = max(C_in, L^2) // 16``; two heads give
  ``Lambda = hsigmoid(Linear(h, C_out))`` and ``Phi = Linear(h, L^2)``. A BatchNorm follows Q, and another follows
  the product with Phi, which is added to its input: the residual is ``P (I + BN(Phi .)) BN(Q x)``.
- The same file's ``conv_basic_dy`` (ResNet-18/34): the attention pools to 2x2 (``pool_size=2`` here), so
  ``L = int(sqrt(4 C_in))`` and ``h = max(4 C_in, L^2) // 16``, at least 4.
- ``models/imagenet/mobilenetv2_dcd.py`` (``DYModule``): only the 1x1 convolutions are dynamic, the depthwise ones
  stay static (a depthwise kernel has one input per filter, so there are no channels to fuse); L and h follow a rule
  of their own, which :func:`dynconv.models.paper_nets.dcd` gives explicitly. Both networks also make the classifier
  a DCD layer of rank 32 (``DYCls``), :class:`DCDLinear` here.

Their ``hsigmoid`` is ``relu6(x + 3) / 3``, twice the usual hard sigmoid: Lambda lies in [0, 2] and starts at 1.
A grouped convolution keeps its groups in W0; the low-rank path is dense across them (the paper defines it for a
dense kernel; the authors use no grouped dynamic layer). The temperature of :class:`~dynconv.layers.Router` divides
both heads' logits: a large temperature makes the layer static (Lambda -> 1, Phi -> 0, leaving W0 and the static
low-rank path ``P Q``).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from timm.layers import get_norm_act_layer, get_padding, register_notrace_module
from torch import nn

from .create_block import register_block, reject_unknown, single_kernel_size
from .family import DynamicConv, InferenceOnceFolded
from .kernel_mixing_block import KernelMixingBlock
from .routing import Router, make_rd_channels
from .validation import check_conv_geometry, check_input, check_positive_int

#: The authors' smallest attention width (``conv_basic_dy``).
DCD_MIN_RD_CHANNELS = 4


def dcd_gate(x: torch.Tensor) -> torch.Tensor:
    """The authors' ``hsigmoid``: ``relu6(x + 3) / 3``, in [0, 2] with value 1 at 0."""
    return 2.0 * F.hardsigmoid(x)


def default_rank(in_channels: int, pool_size: int = 1) -> int:
    """The authors' latent width L: ``int(sqrt(C_in * pool_size^2))``, the square root of the attention's input.

    Example:
        >>> default_rank(256), default_rank(64, pool_size=2)
        (16, 16)
    """
    return max(1, int((in_channels * pool_size ** 2) ** 0.5))


class DCDAttention(Router):
    """DCD's dynamic branch: pooled input -> Linear -> SE gate -> two heads, the channel scale Lambda and the latent
    matrix Phi.

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out (the length of Lambda).
        rank: Latent width L (Phi is L x L).
        pool_size: The input is average-pooled to ``pool_size x pool_size`` (1, or 2 as in the authors' ResNet-18).
        rd_ratio: Hidden width relative to ``max(C_in * pool_size^2, L^2)`` (the authors' 1/16), at least 4.
        rd_channels: An explicit hidden width (overrides ``rd_ratio``).
        rd_divisor: The hidden width from ``rd_ratio`` is rounded to a multiple of it.
        temperature: Both heads divide their logits by it.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: Lambda (B, C_out) and Phi (B, L, L)
    """

    def __init__(self, in_channels: int, out_channels: int, rank: int, *, pool_size: int = 1,
                 rd_ratio: float = 1 / 16, rd_channels: Optional[int] = None, rd_divisor: int = 1,
                 temperature: float = 1.0, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        dd = {"device": device, "dtype": dtype}
        super().__init__(temperature, **dd)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("rank", rank),
                            ("pool_size", pool_size)):
            check_positive_int(name, value)
        pooled = in_channels * pool_size ** 2
        hidden = make_rd_channels(max(pooled, rank ** 2), rd_ratio, rd_channels, rd_divisor, DCD_MIN_RD_CHANNELS)
        self.rank = rank
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.fc = nn.Linear(pooled, hidden, bias=False, **dd)
        self.se = nn.Linear(hidden, hidden, bias=False, **dd)
        self.scale = nn.Linear(hidden, out_channels, bias=False, **dd)
        self.phi = nn.Linear(hidden, rank * rank, bias=False, **dd)

    def mixing_weights(self, output) -> None:
        """DCD mixes no kernels; :class:`~dynconv.RoutingRecorder` records its attentions instead."""
        return None

    def attentions(self, output) -> Dict[str, torch.Tensor]:
        """Lambda (B, C_out) and Phi flattened to (B, L * L), by name, for :class:`~dynconv.RoutingRecorder`."""
        scale, phi = output
        return {"scale": scale, "phi": phi.flatten(1)}

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        hidden = self.fc(self.pool(x).flatten(1))
        hidden = hidden * dcd_gate(self.se(hidden))
        scale = dcd_gate(self.scale(hidden) / self.temperature)
        phi = (self.phi(hidden) / self.temperature).view(-1, self.rank, self.rank)
        return scale, phi


class DCDConv2d(DynamicConv, InferenceOnceFolded, nn.Module):
    """Dynamic convolution decomposition (no normalisation or activation after it).

    ``y_b = Lambda_b * conv(x_b, W0) + P (z_b + BN(Phi_b z_b))``, with ``z_b = BN(Q x_b)`` and the low-rank path at
    the kernel's centre, i.e. each sample is convolved with ``W(x_b) = Lambda_b W0 + P (I + Phi_b) Q`` (up to the
    BatchNorms' affine maps, which :meth:`reparameterize` folds away for inference).

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        kernel_size: Kernel size k (odd).
        stride: Stride (Q carries it).
        padding: Zero padding; ``None`` gives "same" padding, the only one allowed (the low-rank path sits at the
            kernel's centre).
        dilation: Kernel dilation.
        groups: Channel groups of the static convolution W0.
        bias: Learn a bias for W0 (scaled by Lambda with it, as in the authors' ``DYCls``).
        rank: Latent width L; ``None`` gives the authors' ``int(sqrt(C_in * pool_size^2))``.
        pool_size: The attention pools its input to ``pool_size x pool_size``.
        rd_ratio: Attention hidden width relative to ``max(C_in * pool_size^2, L^2)`` (the authors' 1/16).
        rd_channels: An explicit attention hidden width (overrides ``rd_ratio``).
        rd_divisor: The hidden width from ``rd_ratio`` is rounded to a multiple of it.
        temperature: Initial temperature of the attention.
        norm_layer: The two BatchNorms of the latent path (a ``BatchNorm2d`` type, e.g. with its momentum bound).
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, C_out, H', W')

    Example:
        >>> conv = DCDConv2d(16, 32, stride=2)
        >>> conv(torch.randn(2, 16, 10, 10)).shape, conv.rank
        (torch.Size([2, 32, 5, 5]), 4)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1, bias: bool = False,
                 rank: Optional[int] = None, pool_size: int = 1, rd_ratio: float = 1 / 16,
                 rd_channels: Optional[int] = None, rd_divisor: int = 1, temperature: float = 1.0,
                 norm_layer: Type[nn.Module] = nn.BatchNorm2d, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        check_conv_geometry(in_channels, out_channels, kernel_size, stride, dilation, groups, pool_size=pool_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the low-rank path sits at the kernel's centre), got "
                             f"{kernel_size}")
        same = get_padding(kernel_size, dilation=dilation)
        if padding is not None and padding != same:
            raise ValueError(f"DCDConv2d needs 'same' padding, dilation * (kernel_size - 1) // 2 = {same}, so that the "
                             f"1x1 low-rank path lines up with the kernel's centre; got padding={padding!r}")
        rank = default_rank(in_channels, pool_size) if rank is None else check_positive_int("rank", rank)
        self.in_channels, self.out_channels, self.groups, self.rank = in_channels, out_channels, groups, rank
        self.kernel_size, self.stride = (kernel_size, kernel_size), (stride, stride)
        self.padding, self.dilation = (same, same), (dilation, dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size, **dd))
        self.bias = nn.Parameter(torch.empty(out_channels, **dd)) if bias else None
        self.q = nn.Conv2d(in_channels, rank, 1, stride, bias=False, **dd)
        self.q_norm = norm_layer(rank, **dd)
        self.phi_norm = norm_layer(rank, **dd)
        self.p = nn.Conv2d(rank, out_channels, 1, bias=False, **dd)
        self.attention = DCDAttention(in_channels, out_channels, rank, pool_size=pool_size, rd_ratio=rd_ratio,
                                      rd_channels=rd_channels, rd_divisor=rd_divisor, temperature=temperature, **dd)
        # per-channel constants added to the latent and the output once the BatchNorms are folded (reparameterize)
        self.register_parameter("phi_shift", None)
        self.register_parameter("shift", None)
        #: True once :meth:`reparameterize` has folded the latent path's BatchNorms.
        self.is_fused = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W0 and its bias as ``nn.Conv2d`` initialises them; the rest as their own modules do."""
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -fan_in ** -0.5, fan_in ** -0.5)

    def filter_weights(self) -> List[nn.Parameter]:
        """W0, the static kernel. Q and P are 1x1 projections to and from the latent space, not filters: a network of
        airbench94's layout with DCD blocks trained worse with Muon updating them."""
        return [self.weight]

    @torch.no_grad()
    def init_identity_(self) -> None:
        """W0's first C_in filters start as the identity (if ungrouped); the low-rank path keeps its initialisation."""
        if self.groups == 1:
            nn.init.dirac_(self.weight[:self.in_channels])

    @torch.no_grad()
    def init_as_the_authors_(self, near_static: bool = False, classifier: bool = False) -> None:
        """The authors' initialisation (liyunsheng13/dcd). Their convolutions (W0, Q, P) are He normal, fan-out,
        except in their classifier (``DYCls``), whose W0, Q, P are linear layers left at PyTorch's default (what this
        layer draws already). ``near_static``: their MobileNetV2 draws every linear layer, the classifier's and the
        attention's, from normal(0, 0.01), so that the layer starts nearly static (Lambda ~ 1, Phi ~ 0), and zeroes
        the classifier's bias."""
        static_path = (self.weight, self.q.weight, self.p.weight)
        if not classifier:
            for weight in static_path:
                nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
        if not near_static:
            return
        linear_weights = [m.weight for m in self.attention.modules() if isinstance(m, nn.Linear)]
        for weight in (list(static_path) if classifier else []) + linear_weights:
            nn.init.normal_(weight, 0.0, 0.01)
        if classifier and self.bias is not None:
            nn.init.zeros_(self.bias)

    def latent(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """The latent path before P: ``z + BN(Phi z)`` with ``z = BN(Q x)``, (B, L, H', W')."""
        z = self.q_norm(self.q(x))
        batch, rank, height, width = z.shape
        # (B, L, H'W') is a view for contiguous and channels-last z alike
        mixed = torch.bmm(phi.to(z.dtype), z.reshape(batch, rank, height * width)).view(batch, rank, height, width)
        mixed = self.phi_norm(mixed)
        if self.phi_shift is not None:
            mixed = mixed + self.phi_shift.view(1, -1, 1, 1).to(mixed.dtype)
        return z + mixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.weight.dtype)
        scale, phi = self.attention(x)
        out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        # the scale and the low-rank sum in one pass over the output
        out = torch.addcmul(self.p(self.latent(x, phi)), out, scale[:, :, None, None].to(out.dtype))
        return out if self.shift is None else out + self.shift.view(1, -1, 1, 1).to(out.dtype)

    @torch.no_grad()
    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Make this layer compute ``scale * self(x) + shift`` per output channel (folding a following BatchNorm).

        Exact: Lambda multiplies per channel, so the scale moves into W0 (and its bias) and into P's rows.

        Shape:
            - scale, shift: (C_out,)
        """
        if scale.shape != (self.out_channels,) or shift.shape != (self.out_channels,):
            raise ValueError(f"scale and shift must have shape ({self.out_channels},), got {tuple(scale.shape)} and "
                             f"{tuple(shift.shape)}")
        self.weight.mul_(scale.view(-1, 1, 1, 1).to(self.weight.dtype))
        if self.bias is not None:
            self.bias.mul_(scale.to(self.bias.dtype))
        self.p.weight.mul_(scale.view(-1, 1, 1, 1).to(self.p.weight.dtype))
        folded_shift = shift if self.shift is None else self.shift * scale + shift
        self.shift = nn.Parameter(folded_shift.to(self.weight.dtype))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the latent path's two BatchNorms (running statistics and affine maps) into Q, the Phi head and two
        shifts, in place. For inference only: eval-mode outputs are unchanged (up to float rounding), and the layer
        then refuses to train. ``timm.utils.reparameterize_model(model)`` calls this on every DCD layer."""
        if self.is_fused:
            return
        q_scale, q_shift = _affine_of(self.q_norm)
        phi_scale, phi_shift = _affine_of(self.phi_norm)
        # BN(Q x) = (q_scale Q) x + q_shift: a 1x1 convolution with a bias
        q = nn.Conv2d(self.in_channels, self.rank, 1, self.stride, bias=True, device=self.q.weight.device,
                      dtype=self.q.weight.dtype)
        q.weight.copy_(self.q.weight * q_scale.view(-1, 1, 1, 1))
        q.bias.copy_(q_shift)
        self.q = q
        # BN(Phi z) = (diag(phi_scale) Phi) z + phi_shift: scale Phi's rows, i.e. the head's outputs row by row
        head = self.attention.phi.weight.view(self.rank, self.rank, -1)
        head.mul_(phi_scale.view(-1, 1, 1).to(head.dtype))
        self.phi_shift = nn.Parameter(phi_shift.to(self.weight.dtype))
        self.q_norm, self.phi_norm = nn.Identity(), nn.Identity()
        self.is_fused = True

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, rank={self.rank}")


def _affine_of(norm: nn.modules.batchnorm._BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """A BatchNorm's eval-mode map as ``scale * x + shift`` per channel."""
    if not norm.track_running_stats:
        raise ValueError("reparameterize needs BatchNorms with running statistics")
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale = scale * norm.weight
        shift = shift * norm.weight + norm.bias
    return scale, shift


@register_notrace_module  # a leaf for torch.fx feature extraction: it checks its input's shape
class DCDLinear(nn.Module):
    """A linear layer with DCD's dynamic channel scale and low-rank residual: the authors' dynamic classifier
    (``DYCls`` in ``resnet_dcd.py`` and ``mobilenetv2_dcd.py``: rank 32, attention width 32, a bias), computed as a
    :class:`DCDConv2d` with a 1x1 kernel on a 1x1 map.

    Args:
        in_features: Input features.
        out_features: Output features.
        rank: Latent width L (the authors' 32).
        rd_channels: Attention hidden width (the authors' 32).
        bias: Learn a bias (scaled by Lambda with the weight).
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, in_features)
        - Output: (B, out_features)

    Example:
        >>> DCDLinear(64, 10)(torch.randn(4, 64)).shape
        torch.Size([4, 10])
    """

    def __init__(self, in_features: int, out_features: int, rank: int = 32, rd_channels: int = 32, bias: bool = True,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.conv = DCDConv2d(in_features, out_features, 1, bias=bias, rank=rank, rd_channels=rd_channels,
                              device=device, dtype=dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The static weight W0 as an (out_features, in_features) view, as ``nn.Linear`` names it."""
        return self.conv.weight.view(self.out_features, self.in_features)

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self.conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"expected input of shape (B, {self.in_features}), got a tensor of shape "
                             f"{tuple(x.shape)}")
        if self.training and x.shape[0] == 1:
            raise ValueError("DCDLinear normalises its latent path over the batch in training (the authors' "
                             "BatchNorm1d), which a batch of 1 cannot give: train with batches of 2 or more (e.g. "
                             "drop_last=True in the DataLoader), or call .eval() to use the running statistics")
        return self.conv(x[:, :, None, None]).flatten(1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


@register_block("dcd")
def dcd_block(in_channels: int, out_channels: int, *, num_experts: int, kernel_size: Union[int, Sequence[int]],
              stride: int, act_layer, norm_layer, device=None, dtype=None, **kwargs) -> nn.Module:
    """A :class:`DCDConv2d` (whose BatchNorms are ``norm_layer``), then the norm and activation. DCD has no experts:
    ``num_experts`` is ignored."""
    reject_unknown("dcd", kwargs, ("rank", "pool_size", "rd_ratio", "rd_channels", "rd_divisor", "temperature"))
    conv = DCDConv2d(in_channels, out_channels, single_kernel_size("dcd", kernel_size), stride,
                     norm_layer=norm_layer, device=device, dtype=dtype, **kwargs)
    norm_act = get_norm_act_layer(norm_layer, act_layer)(out_channels, device=device, dtype=dtype)
    return KernelMixingBlock(conv, norm_act)
