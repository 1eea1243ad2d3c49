"""Branch-mixing dynamic convolution: the coursework block, K Conv-BN-Act branches mixed by input-dependent weights.

    a = softmax(Linear(AdaptiveAvgPool2d(x)))            # (B, K)
    O = sum_k a[:, k] * Act(BN_k(Conv_k(x)))             # (B, C_out, H', W')

Related work mixes *outputs* of parallel branches the same way, e.g. Selective Kernel Networks (Li et al., CVPR 2019,
https://arxiv.org/abs/1903.06586). Because of the per-branch BN and activation, the branches cannot be collapsed into
one kernel (that is *kernel mixing*, see the other layers), but they fuse into one wide convolution:

- K convolutions with C_out outputs each are one convolution with K * C_out outputs (weights concatenated); branches
  with smaller kernels are stored zero-padded to the largest size, which is exact for odd sizes with centred padding.
  With mixed sizes the forward runs one convolution per size on the kernels' own extent, so that a (1, 3) block
  costs a 3x3 and a 1x1 convolution, not two 3x3 ones.
- K BatchNorms over C_out channels are one BatchNorm over K * C_out channels: BN is per channel, running statistics
  included.

So the block runs one wide conv, one BN, the activation, and a per-sample weighted sum over the K groups of channels.
In eval mode the BN folds into the wide conv (:meth:`DynamicBlock.reparameterize`).
"""
import math
from typing import List, Optional, Sequence, Type, Union

import torch
import torch.nn.functional as F
from timm.layers import create_act_layer, register_notrace_module
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .create_block import register_block, reject_unknown, static_block
from .family import DynamicConv, InferenceOnceFolded
from .routing import RoutingHead
from .validation import check_input, check_positive_int, per_branch_kernel_sizes


def mix_branches(branches: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over K groups of channels: ``out[b] = sum_k weights[b, k] * branches[b, k*C:(k+1)*C]``.

    Args:
        branches: Branch outputs concatenated along channels.
        weights: Per-sample branch weights.

    Returns:
        The mixed feature map.

    Shape:
        - branches: (B, K * C, H, W)
        - weights: (B, K)
        - Output: (B, C, H, W)

    Example:
        >>> branches, weights = torch.randn(2, 3 * 4, 5, 5), torch.rand(2, 3)
        >>> mix_branches(branches, weights).shape
        torch.Size([2, 4, 5, 5])
    """
    if weights.ndim != 2 or branches.ndim != 4 or weights.shape[0] != branches.shape[0] or (
            weights.shape[1] < 1 or branches.shape[1] % weights.shape[1]):
        raise ValueError(f"mix_branches needs branches (B, K * C, H, W) and weights (B, K) with the same B and K "
                         f"dividing the channels, got branches {tuple(branches.shape)} and weights "
                         f"{tuple(weights.shape)}")
    batch, num_branches = weights.shape
    _, total_channels, height, width = branches.shape
    channels = total_channels // num_branches
    weights = weights.to(branches.dtype)
    if branches.is_contiguous():
        # one batched (1 x K) @ (K x CHW) matmul per sample: the fastest form for NCHW, measured in benchmarks/
        mixed = torch.bmm(weights.unsqueeze(1), branches.reshape(batch, num_branches, channels * height * width))
        return mixed.view(batch, channels, height, width)
    # channels_last (or other strides): a reshape to (B, K, CHW) would copy everything, so accumulate
    # channel slices in place of it; elementwise ops keep the memory format
    chunks = branches.split(channels, dim=1)
    mixed = chunks[0] * weights[:, 0, None, None, None]
    for k in range(1, num_branches):
        mixed = mixed.addcmul(chunks[k], weights[:, k, None, None, None])
    return mixed


@register_notrace_module  # a leaf for torch.fx feature extraction: its mixing branches on memory layout
class DynamicBlock(DynamicConv, InferenceOnceFolded, nn.Module):
    """K Conv-Norm-Act branches mixed per sample by a routing head (output mixing), computed as one wide conv.

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        num_experts: Number of branches K.
        kernel_size: One odd kernel size for all branches, or a sequence of K odd sizes (one per branch).
        stride: Convolution stride, shared by all branches.
        padding: ``None`` gives every branch ``kernel_size // 2`` ("same" padding at stride 1). An int is only
            accepted when all branches share one kernel size.
        rd_ratio: Width of an optional hidden layer in the routing head relative to C_in; ``None`` (with
            ``rd_channels=None``) routes with one linear layer, as the coursework did.
        rd_channels: An explicit hidden width of the routing head (overrides ``rd_ratio``).
        rd_divisor: The hidden width from ``rd_ratio`` is rounded to a multiple of it.
        temperature: Softmax temperature of the routing head.
        act_layer: Activation of each branch (a type or a timm activation name).
        norm_layer: Normalisation of each branch; a BatchNorm-like layer over K * C_out channels is built.
        device: Device of the parameters and buffers.
        dtype: Floating dtype of the parameters and buffers.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, C_out, H', W') with H' = floor((H + 2 * padding - k_max) / stride) + 1

    Example:
        >>> block = DynamicBlock(3, 16, num_experts=4, kernel_size=(1, 3, 3, 5), stride=2)
        >>> block(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 16, 16, 16])
    """

    def __init__(
            self,
            in_channels: int,
            out_channels: int,
            num_experts: int = 4,
            kernel_size: Union[int, Sequence[int]] = 3,
            stride: int = 1,
            padding: Optional[int] = None,
            *,
            rd_ratio: Optional[float] = None,
            rd_channels: Optional[int] = None,
            rd_divisor: int = 1,
            temperature: float = 1.0,
            act_layer: Union[str, Type[nn.Module]] = nn.ReLU,
            norm_layer: Type[nn.Module] = nn.BatchNorm2d,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("stride", stride)
        self.kernel_sizes = per_branch_kernel_sizes(kernel_size, num_experts)
        max_kernel = max(self.kernel_sizes)
        if padding is None:
            padding = max_kernel // 2
        elif len(set(self.kernel_sizes)) > 1:
            raise ValueError(
                f"padding must be None when branches have different kernel sizes {self.kernel_sizes} "
                f"(each branch then uses kernel_size // 2), got padding={padding!r}")
        elif isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be None or an integer >= 0, got {padding!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_experts = num_experts
        self.stride = stride
        self.padding = padding

        self.routing = RoutingHead(in_channels, num_experts, rd_ratio=rd_ratio, rd_channels=rd_channels,
                                   rd_divisor=rd_divisor, temperature=temperature, **dd)
        self.conv = nn.Conv2d(
            in_channels, num_experts * out_channels, max_kernel, stride=stride, padding=padding, bias=False, **dd)
        self.bn = norm_layer(num_experts * out_channels, **dd)
        self.act = create_act_layer(act_layer, inplace=True)
        if len(set(self.kernel_sizes)) > 1:
            # keeps the zero-padded corners of the smaller kernels at zero through training
            self.register_buffer("kernel_mask", self._kernel_mask().to(**dd), persistent=False)
        else:
            self.kernel_mask = None
        # branches of each kernel size, in order: with mixed sizes the forward runs one convolution per size
        self.size_groups = tuple((size, tuple(b for b, s in enumerate(self.kernel_sizes) if s == size))
                                 for size in sorted(set(self.kernel_sizes)))
        self.reset_parameters()

    def _kernel_mask(self) -> torch.Tensor:
        max_kernel = max(self.kernel_sizes)
        mask = torch.zeros(self.num_experts, self.out_channels, 1, max_kernel, max_kernel)
        for branch, size in enumerate(self.kernel_sizes):
            start = (max_kernel - size) // 2
            mask[branch, :, :, start:start + size, start:start + size] = 1.0
        return mask.flatten(0, 1)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise each branch exactly as ``nn.Conv2d`` initialises a kernel of its own size."""
        weight = self.conv.weight.view(self.num_experts, self.out_channels, self.in_channels, *self.conv.kernel_size)
        weight.zero_()
        max_kernel = max(self.kernel_sizes)
        for branch, size in enumerate(self.kernel_sizes):
            bound = 1.0 / math.sqrt(self.in_channels * size * size)
            start = (max_kernel - size) // 2
            weight[branch, :, :, start:start + size, start:start + size].uniform_(-bound, bound)

    def filter_weights(self) -> List[nn.Parameter]:
        """The wide convolution's weight: the K branches' filters, (K * C_out, C_in, k_max, k_max)."""
        return [self.conv.weight]

    @torch.no_grad()
    def init_identity_(self) -> None:
        """The first branch starts as the identity on its first C_in filters (airbench94's dirac initialisation of the
        wide convolution)."""
        nn.init.dirac_(self.conv.weight[:self.in_channels])

    @property
    def is_fused(self) -> bool:
        """True once :meth:`reparameterize` has folded the BatchNorm into the convolution."""
        return self.conv.bias is not None

    def branch_weight(self) -> torch.Tensor:
        """The wide convolution's weight, (K * C_out, C_in, k_max, k_max), with padded kernel corners forced to 0."""
        if self.kernel_mask is None:
            return self.conv.weight
        return self.conv.weight * self.kernel_mask

    def branch_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The K branches' convolutions, concatenated: (B, C_in, H, W) -> (B, K * C_out, H', W').

        With one kernel size this is the wide convolution. With mixed sizes it is one convolution per size, each on
        its kernels' own extent (a 1x1 branch costs a 1x1 convolution, not a zero-padded k_max x k_max one); the
        results are the same, the padded corners being zero.
        """
        if self.kernel_mask is None:
            return F.conv2d(x, self.conv.weight, self.conv.bias, self.stride, self.padding)
        max_kernel = max(self.kernel_sizes)
        weight = self.conv.weight.view(self.num_experts, self.out_channels, self.in_channels, max_kernel, max_kernel)
        bias = None if self.conv.bias is None else self.conv.bias.view(self.num_experts, self.out_channels)
        per_branch = [None] * self.num_experts
        for size, branches in self.size_groups:
            start = (max_kernel - size) // 2
            index = list(branches)
            kernel = weight[index, :, :, start:start + size, start:start + size].flatten(0, 1)
            out = F.conv2d(x, kernel, None if bias is None else bias[index].flatten(), self.stride, size // 2)
            for branch, chunk in zip(branches, out.split(self.out_channels, dim=1), strict=True):
                per_branch[branch] = chunk
        return torch.cat(per_branch, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, self.conv.weight.dtype)
        weights = self.routing(x)
        branches = self.act(self.bn(self.branch_outputs(x)))
        return mix_branches(branches, weights)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BatchNorm's running statistics and affine parameters into the wide convolution, in place.

        For inference only: outputs in eval mode are unchanged (up to float rounding), and the block afterwards has no
        BatchNorm to train. ``timm.utils.reparameterize_model(model)`` calls this on every block of a model.
        """
        if self.is_fused:
            return
        bn = self.bn
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
            raise ValueError(
                f"reparameterize needs a BatchNorm with running statistics, got norm layer {type(bn).__name__}")
        weight, bias = fuse_conv_bn_weights(self.branch_weight(), None, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias)
        self.conv.weight.copy_(weight)
        self.conv.bias = bias
        self.bn = nn.Identity()

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, num_experts={self.num_experts}, "
                f"kernel_sizes={self.kernel_sizes}, stride={self.stride}, padding={self.padding}")


@register_block("branch", pools_before_norm=lambda num_experts: num_experts == 1)
def branch_block(in_channels: int, out_channels: int, *, num_experts: int, kernel_size: Union[int, Sequence[int]],
                 stride: int, act_layer, norm_layer, device=None, dtype=None, pool_before_norm: bool = False,
                 **kwargs) -> nn.Module:
    """A :class:`DynamicBlock`; with K=1 it would be a static Conv-Norm-Act at extra cost, so that is built."""
    if num_experts == 1:
        return static_block(in_channels, out_channels, kernel_size=kernel_size, stride=stride, act_layer=act_layer,
                            norm_layer=norm_layer, device=device, dtype=dtype, pool_before_norm=pool_before_norm,
                            kind="branch (K=1)", **kwargs)
    reject_unknown("branch", kwargs, ("temperature", "rd_ratio", "rd_channels", "rd_divisor"))
    return DynamicBlock(in_channels, out_channels, num_experts, kernel_size, stride, act_layer=act_layer,
                        norm_layer=norm_layer, device=device, dtype=dtype, **kwargs)
