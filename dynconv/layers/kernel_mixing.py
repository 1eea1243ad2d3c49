"""Kernel mixing: convolutions whose kernel is a per-sample combination of K expert kernels.

    W_b = sum_k a[b, k] * W_k          # a: (B, K) routing weights
    y_b = conv(x_b, W_b) (+ sum_k a[b, k] * bias_k)

This is the family of CondConv (:mod:`~dynconv.layers.cond_conv`), Dynamic Convolution (:mod:`~dynconv.layers.dy_conv`)
and, with more attentions, ODConv (:mod:`~dynconv.layers.od_conv`). Every sample has its own kernel, so the batch
cannot run as one ordinary convolution. Three exact ways to compute it, chosen per call by :func:`select_mode` from
the device and the output size:

- ``"grouped"``: mix the kernels into (B, C_out, C_in/g, k, k) and run one grouped convolution with ``groups = B * g``
  over a (1, B * C_in, H, W) view of the input (timm's CondConv2d). One pass over the data, but per-sample weights
  cost B * C_out * C_in * k^2 memory, and each group is a small GEMM, slow on CPU at low resolution.
- ``"outputs"``: convolution is linear in its kernel, so ``conv(x, sum_k a_k W_k) = sum_k a_k conv(x, W_k)``: run one
  dense convolution with K * C_out outputs and mix the K groups of outputs per sample, as the branch-mixing block
  does. K times the FLOPs, but dense and independent of B. Only for kernels that are mixed linearly (not ODConv's
  spatial attention).
- ``"bmm"``: unfold the input into patches and run one batched matrix product with the per-sample kernels. Same FLOPs
  as a convolution and no group count, at the memory cost of the unfolded input.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import get_padding, register_notrace_module
from torch import nn

from .dynamic_block import mix_branches
from .family import DynamicConv
from .routing import RoutingHead
from .validation import check_conv_geometry, check_input

MODES = ("auto", "grouped", "outputs", "bmm")


# below this many output pixels per sample, each group of a B-group convolution is a GEMM too small for CPU backends
GROUPED_MIN_PIXELS_CPU = 128
# how many extra multiply-accumulates of a dense form cost as much as one element of a per-sample kernel on CPU (each
# element is written when mixed, read by the convolution and, in training, written and read again as a gradient):
# fitted to benchmarks/results/family_floor/xeon.json, where output mixing is the faster form at 7x7 maps and 256
# channels and slower at 14x14 (below about 200 the choice moves to a per-sample form at the cpu network's 7x7 layers,
# where output mixing is 1.4x faster; above it only 1x1 layers change, which no value fits)
MACS_PER_KERNEL_ELEMENT_CPU = 256


def exporting() -> bool:
    """Whether a model is being exported (``torch.export``, ONNX, tracing), when no form may bake the batch size in."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def select_mode(mode: str, x: torch.Tensor, *, dense: Optional[str], kernel_numel: int, dense_numel: int,
                output_pixels: int, dense_extra_macs: int = 0, in_channels_per_group: int = 2) -> str:
    """Resolve ``"auto"`` by a cost model; while exporting (``torch.export``, ONNX, tracing) pick a form with no
    batch-sized group count instead of any mode: the dense form, else the batched matmul (all are exact).

    The per-sample forms (``"grouped"``, ``"bmm"``) build a kernel per sample, ``kernel_numel`` elements (C_out *
    C_in / groups * k * k), which is what makes them slow where maps are small and channels wide: every element is
    written, read and, in training, written again as a gradient, for a convolution over few pixels. A family's dense
    form (``dense``: output mixing, or KernelWarehouse's patch mixing) builds no kernel, but ``dense_numel`` elements
    of extra activations per sample (K outputs, unfolded patches) and ``dense_extra_macs`` multiply-accumulates per
    sample beyond the per-sample convolution's (output mixing: K - 1 more convolutions). So:

    - on CPU a dense form where its extra activations, plus its extra MACs at ``MACS_PER_KERNEL_ELEMENT_CPU`` per
      element, are no more than the per-sample kernel; on a GPU always, where cuDNN and cuBLAS run dense products
      well and the grouped convolution over a (1, B * C, H, W) view is slow;
    - else a per-sample form. On CPU: the grouped convolution for a depthwise layer (one input channel per group:
      it is then a depthwise convolution over B x C channels, fast at any map size), otherwise the grouped
      convolution while each sample's output has at least ``GROUPED_MIN_PIXELS_CPU`` pixels (below that its
      per-group products are too small for the CPU backends) and the batched matmul under it. On a GPU the grouped
      convolution.

    ``benchmarks/family_floor.py`` measures every mode of every family at the shapes of the CIFAR networks and of
    ResNet-18/50 and MobileNetV2 at 224, and its test checks this choice against those timings. On a GPU the rule is
    tuned for bf16 autocast (how the recipe trains there): in float32 ODConv's grouped form can be the faster one
    (``benchmarks/results/family_floor/h200.md``); pass ``mode="grouped"`` for float32 GPU training.

    Args:
        mode: The layer's mode; anything but ``"auto"`` is returned as it is (unless exporting).
        x: The input (its device decides).
        dense: The family's dense mode, or ``None`` if it has none for this layer.
        kernel_numel: Elements of one sample's kernel.
        dense_numel: Extra activation elements per sample of the dense form.
        output_pixels: Pixels of one sample's output.
        dense_extra_macs: Multiply-accumulates per sample of the dense form beyond the per-sample convolution's.
        in_channels_per_group: C_in / groups (1: depthwise).
    """
    if exporting():
        # a grouped convolution with groups = B would bake the example's batch size into the exported graph
        return dense or "bmm"
    if mode != "auto":
        return mode
    on_cpu = x.device.type == "cpu"
    if dense is not None and (not on_cpu or
                              dense_numel + dense_extra_macs / MACS_PER_KERNEL_ELEMENT_CPU <= kernel_numel):
        return dense
    if not on_cpu or in_channels_per_group == 1:
        return "grouped"
    return "grouped" if output_pixels >= GROUPED_MIN_PIXELS_CPU else "bmm"


def output_size(size: Tuple[int, int], kernel: Tuple[int, int], stride: Tuple[int, int], padding: Tuple[int, int],
                dilation: Tuple[int, int]) -> Tuple[int, int]:
    """Spatial size of a convolution's output."""
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(size, kernel, stride, padding, dilation, strict=True))


def _patches(pixels: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
             dilation: Tuple[int, int]) -> torch.Tensor:
    """(B, H_p, W_p, C) padded channels-last pixels -> (B, H' * W', kh * kw * C): windows of (k - 1) * d + 1 rows and
    columns (views), every d-th taken, copied once."""
    windows = pixels.unfold(1, (kernel[0] - 1) * dilation[0] + 1, stride[0])
    windows = windows.unfold(2, (kernel[1] - 1) * dilation[1] + 1, stride[1])[..., ::dilation[0], ::dilation[1]]
    batch, out_h, out_w, channels = windows.shape[:4]
    return windows.permute(0, 1, 2, 4, 5, 3).reshape(batch, out_h * out_w, kernel[0] * kernel[1] * channels)


class _ChannelsLastPatches(torch.autograd.Function):
    """:func:`_patches`, whose gradient adds each tap's slice back onto the pixels.

    Autograd's own gradient of the two ``unfold`` views takes two scattering passes, 2-3x slower on CPU, and in bf16
    accumulates in bf16; this one takes kh * kw slice additions into a float32 buffer (about half-ulp accurate)."""

    @staticmethod
    def forward(ctx, pixels: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                dilation: Tuple[int, int]) -> torch.Tensor:
        ctx.geometry = (pixels.shape, kernel, stride, dilation)
        return _patches(pixels, kernel, stride, dilation)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        shape, kernel, stride, dilation = ctx.geometry
        out_h, out_w = output_size(shape[1:3], kernel, stride, (0, 0), dilation)
        grad_pixels = grad.new_zeros(shape, dtype=torch.promote_types(grad.dtype, torch.float32))
        grad = grad.reshape(shape[0], out_h, out_w, kernel[0], kernel[1], shape[3])
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                top, left = i * dilation[0], j * dilation[1]
                grad_pixels[:, top:top + (out_h - 1) * stride[0] + 1:stride[0],
                            left:left + (out_w - 1) * stride[1] + 1:stride[1]] += grad[:, :, :, i, j]
        return grad_pixels.to(grad.dtype), None, None, None


def unfold_channels_last(x: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                         padding: Tuple[int, int], dilation: Tuple[int, int]) -> torch.Tensor:
    """The input's patches with the channels innermost, ``(B, H' * W', kh * kw * C_in)``, for one dense product with
    kernels flattened as ``(C_out, kh, kw, C_in)``.

    ``F.unfold`` orders a patch (C_in, kh, kw) with the pixels last, so a product over the patches needs a transposed
    copy, and its gradient (col2im) scatters with strides of one pixel. Here the patches are windows of a padded
    channels-last view, copied once with runs of C_in contiguous elements; the output of the product is channels-last.

    Shape:
        - x: (B, C_in, H, W), any memory format
        - Output: (B, H' * W', kh * kw * C_in)
    """
    pixels = x.permute(0, 2, 3, 1)
    if padding[0] or padding[1]:
        pixels = F.pad(pixels, (0, 0, padding[1], padding[1], padding[0], padding[0]))
    if torch.is_grad_enabled() and pixels.requires_grad and not exporting():
        return _ChannelsLastPatches.apply(pixels, kernel, stride, dilation)
    return _patches(pixels, kernel, stride, dilation)  # exported graphs keep to standard operators


def mix_kernels(routing: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Per-sample kernels ``sum_k routing[b, k] * experts[k]``.

    Shape:
        - routing: (B, K)
        - experts: (K, ...)
        - Output: (B, ...), the experts' trailing shape
    """
    return (routing.to(experts.dtype) @ experts.flatten(1)).view(routing.shape[0], *experts.shape[1:])


def per_sample_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: Tuple[int, int],
                      padding: Tuple[int, int], dilation: Tuple[int, int], groups: int, mode: str) -> torch.Tensor:
    """Convolve each sample with its own kernel.

    Args:
        x: Input.
        weight: One kernel per sample.
        bias: One bias per sample, or ``None``.
        stride: Convolution stride.
        padding: Zero padding.
        dilation: Kernel dilation.
        groups: Channel groups of each sample's convolution.
        mode: ``"grouped"`` or ``"bmm"`` (see the module docstring).

    Returns:
        The convolved batch.

    Shape:
        - x: (B, C_in, H, W)
        - weight: (B, C_out, C_in / groups, kh, kw)
        - bias: (B, C_out)
        - Output: (B, C_out, H', W')
    """
    batch, channels, height, width = x.shape
    out_channels, kh, kw = weight.shape[1], weight.shape[3], weight.shape[4]
    out_h, out_w = output_size((height, width), (kh, kw), stride, padding, dilation)
    if mode == "grouped" and batch == 0:
        mode = "bmm"  # a convolution cannot have zero groups; the batched matmul handles an empty batch
    if mode == "grouped":
        # reshape, not view: x may be channels-last
        out = F.conv2d(x.reshape(1, batch * channels, height, width), weight.reshape(-1, *weight.shape[2:]),
                       None if bias is None else bias.reshape(-1), stride, padding, dilation, groups * batch)
        out = out.view(batch, out_channels, out_h, out_w)
        # the B-group convolution's output is NCHW whatever the input: a channels-last network's norm and activation
        # after it would take their slow mixed-format paths (2x, forward and backward), so it follows the input
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out
    if mode == "bmm":
        # explicit sizes rather than einops, which cannot infer a group size from an empty batch
        patches = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (B, C_in*kh*kw, L)
        patches = patches.reshape(batch * groups, channels // groups * kh * kw, out_h * out_w)
        kernels = weight.reshape(batch * groups, out_channels // groups, channels // groups * kh * kw)
        out = torch.bmm(kernels, patches).view(batch, out_channels, out_h, out_w)
        return out if bias is None else out + bias[:, :, None, None].to(out.dtype)
    raise ValueError(f"per_sample_conv2d mode must be 'grouped' or 'bmm', got {mode!r}")


def mixed_kernel_conv2d(x: torch.Tensor, routing: torch.Tensor, experts: torch.Tensor, bias: Optional[torch.Tensor],
                        stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int], groups: int,
                        mode: str) -> torch.Tensor:
    """``conv(x_b, sum_k routing[b, k] * experts[k]) + sum_k routing[b, k] * bias[k]`` for every sample b.

    Shape:
        - x: (B, C_in, H, W)
        - routing: (B, K)
        - experts: (K, C_out, C_in / groups, kh, kw)
        - bias: (K, C_out)
        - Output: (B, C_out, H', W')
    """
    if mode == "auto":
        out_h, out_w = output_size(x.shape[-2:], experts.shape[-2:], stride, padding, dilation)
        num_experts, out_channels = experts.shape[:2]
        pixels = out_h * out_w
        mode = select_mode(mode, x, dense="outputs", kernel_numel=experts[0].numel(),
                           dense_numel=num_experts * out_channels * pixels, output_pixels=pixels,
                           dense_extra_macs=(num_experts - 1) * experts[0].numel() * pixels,
                           in_channels_per_group=experts.shape[2])
    mixed_bias = None if bias is None else mix_kernels(routing, bias)
    if mode != "outputs":
        return per_sample_conv2d(x, mix_kernels(routing, experts), mixed_bias, stride, padding, dilation, groups,
                                 mode)
    num_experts = experts.shape[0]
    # order the K * C_out outputs group-major, so a grouped convolution keeps each group's outputs together; with
    # groups=1 both rearranges are views
    wide = rearrange(experts, "k (g o) c h w -> (g k o) c h w", g=groups)
    out = F.conv2d(x, wide, None, stride, padding, dilation, groups)
    out = mix_branches(rearrange(out, "b (g k o) h w -> b (k g o) h w", g=groups, k=num_experts), routing)
    return out if mixed_bias is None else out + mixed_bias[:, :, None, None].to(out.dtype)


def init_experts_(experts: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    """Initialise each expert kernel (and bias) as ``nn.Conv2d`` initialises its kernel."""
    fan_in = math.prod(experts.shape[2:])
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        experts.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


@register_notrace_module  # a leaf for torch.fx feature extraction: the per-sample form is chosen from shapes
class ExpertConv2d(DynamicConv, nn.Module):
    """K expert kernels of one convolution geometry, stored flat; subclasses make each sample's kernel from them.

    The experts are K filter banks stacked flat, not one convolution's, so the layer names no
    :meth:`~dynconv.layers.family.DynamicConv.filter_weights` and has no identity start.

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        kernel_size: Kernel size k.
        stride: Stride.
        padding: Zero padding; ``None`` gives "same" padding, ``dilation * (k - 1) // 2``.
        dilation: Kernel dilation.
        groups: Channel groups.
        bias: Learn one bias per expert.
        num_experts: Number of expert kernels K.
        mode: Per-sample convolution (see :mod:`dynconv.layers.kernel_mixing`).
        modes: The modes this layer supports, with the reason when it supports fewer than all.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: Optional[int],
                 dilation: int, groups: int, bias: bool, num_experts: int, mode: str,
                 modes: Tuple[Tuple[str, ...], str] = (MODES, ""), *, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__()
        check_conv_geometry(in_channels, out_channels, kernel_size, stride, dilation, groups,
                            num_experts=num_experts)
        supported, reason = modes
        if mode not in supported:
            raise ValueError(f"{type(self).__name__} mode must be one of {supported}, got {mode!r}{reason}")
        if padding is None and kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding (padding=None), got {kernel_size}; give "
                             f"padding explicitly for an even kernel")
        padding = get_padding(kernel_size, dilation=dilation) if padding is None else padding
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be None or an integer >= 0, got {padding!r}")
        self.supported_modes = supported
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = (kernel_size, kernel_size)
        self.stride, self.padding, self.dilation = (stride, stride), (padding, padding), (dilation, dilation)
        self.num_experts = num_experts
        self.mode = mode
        # stored flat, (K, C_out * C_in / groups * k * k): a 5-d parameter would break model.to(channels_last)
        dd = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels * in_channels // groups * kernel_size ** 2,
                                               **dd))
        self.bias = nn.Parameter(torch.empty(num_experts, out_channels, **dd)) if bias else None
        # a per-channel constant added after the mix: absent until a following BatchNorm is folded in
        self.register_parameter("shift", None)
        init_experts_(self.experts, self.bias)

    def computation_modes(self) -> Tuple[str, ...]:
        return self.supported_modes

    @torch.no_grad()
    def init_he_fan_out_(self) -> None:
        """Draw each expert He normal, fan-out: as timm draws the convolutions of its ResNets and MobileNetV2 and the
        ODConv authors their kernels (PyTorch's default convolution init is ~6x smaller in variance, which compounds
        over 50 layers)."""
        for expert in self.experts:
            nn.init.kaiming_normal_(expert, mode="fan_out", nonlinearity="relu")

    @torch.no_grad()
    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Make this layer compute ``scale * self(x) + shift`` per output channel (folding a following BatchNorm).

        Exact for every family: the scale multiplies each expert kernel (and bias), since the output is linear in
        the mixed kernel and the attentions multiply it per sample; the shift does not depend on the routing.

        Shape:
            - scale, shift: (C_out,)
        """
        if scale.shape != (self.out_channels,) or shift.shape != (self.out_channels,):
            raise ValueError(f"scale and shift must have shape ({self.out_channels},), got {tuple(scale.shape)} and "
                             f"{tuple(shift.shape)}")
        self.experts.mul_(scale.view(1, -1, 1, 1, 1).to(self.weight.dtype))
        if self.bias is not None:
            self.bias.mul_(scale.to(self.bias.dtype))
        folded_shift = shift if self.shift is None else self.shift * scale + shift
        self.shift = nn.Parameter(folded_shift.to(self.weight.dtype))

    def add_shift(self, out: torch.Tensor) -> torch.Tensor:
        """``out`` plus the folded per-channel shift, if there is one."""
        return out if self.shift is None else out + self.shift.view(1, -1, 1, 1).to(out.dtype)

    @property
    def experts(self) -> torch.Tensor:
        """The expert kernels as a (K, C_out, C_in / groups, k, k) view of the flat parameter."""
        return self.weight.view(self.num_experts, self.out_channels, self.in_channels // self.groups,
                                *self.kernel_size)

    #: Whether the dense form unfolds the input (ODConv's scales the taps there), which adds to its activations.
    unfolds_input = False

    def resolve_mode(self, x: torch.Tensor) -> str:
        """This call's form (:func:`select_mode`): output mixing where the layer has it, with K outputs (and the
        unfolded input) as its extra activations."""
        out_h, out_w = output_size(x.shape[-2:], self.kernel_size, self.stride, self.padding, self.dilation)
        pixels = out_h * out_w
        taps = self.kernel_size[0] * self.kernel_size[1]
        patches = self.in_channels * taps * pixels if self.unfolds_input else 0
        kernel_numel = self.out_channels * self.in_channels // self.groups * taps
        outputs = self.num_experts * self.out_channels * pixels
        return select_mode(self.mode, x, dense="outputs" if "outputs" in self.supported_modes else None,
                           kernel_numel=kernel_numel, dense_numel=patches + outputs, output_pixels=pixels,
                           dense_extra_macs=(self.num_experts - 1) * kernel_numel * pixels,
                           in_channels_per_group=self.in_channels // self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, num_experts={self.num_experts}, mode={self.mode}")


class MixedKernelConv2d(ExpertConv2d):
    """Convolution with K expert kernels mixed per sample by a :class:`~dynconv.layers.RoutingHead`.

    The shared machinery of :class:`~dynconv.layers.CondConv2d` and :class:`~dynconv.layers.DyConv2d`, which differ
    in their routing. Like ``nn.Conv2d`` it has no normalisation or activation; blocks add them after it.

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        kernel_size: Kernel size k (odd).
        stride: Stride.
        padding: Zero padding; ``None`` gives "same" padding, ``dilation * (k - 1) // 2``.
        dilation: Kernel dilation.
        groups: Channel groups.
        bias: Learn one bias per expert (mixed like the kernels).
        num_experts: Number of expert kernels K.
        routing: The routing head producing (B, K) weights.
        mode: How to compute the per-sample convolution: ``"auto"``, ``"grouped"``, ``"outputs"`` or ``"bmm"``
            (see :mod:`dynconv.layers.kernel_mixing`); all are exact.
        device: Device of the expert parameters (the routing head is built by the caller).
        dtype: Floating dtype of the expert parameters.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, C_out, H', W')
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: Optional[int],
                 dilation: int, groups: int, bias: bool, num_experts: int, routing: RoutingHead, mode: str, *,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         num_experts, mode, device=device, dtype=dtype)
        self.routing = routing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.weight.dtype)
        return self.add_shift(mixed_kernel_conv2d(x, self.routing(x), self.experts, self.bias, self.stride,
                                                  self.padding, self.dilation, self.groups, self.resolve_mode(x)))
