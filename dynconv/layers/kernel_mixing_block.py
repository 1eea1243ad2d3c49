"""A dynamic convolution followed by normalisation and activation: the block of every family whose layer has no norm
of its own (CondConv, DyConv, ODConv, DCD, KernelWarehouse).

For inference its BatchNorm folds into the convolution (:meth:`KernelMixingBlock.reparameterize`, through the
layer's ``fold_affine``), exactly: every family's output is linear in its kernel, and its attentions multiply per
sample and channel, so a per-channel scale moves into the kernel (or, where the kernel is shared, stays beside it).
"""
from collections import OrderedDict
from typing import Optional, Sequence, Type, Union

import torch
from timm.layers import get_norm_act_layer
from torch import nn

from .create_block import BlockBuilder, single_kernel_size
from .family import InferenceOnceFolded
from .kernel_mixing import ExpertConv2d


class KernelMixingBlock(InferenceOnceFolded, nn.Sequential):
    """``conv`` (a dynamic convolution with ``fold_affine``), optionally ``pool``, then ``bn`` (a norm-act layer,
    e.g. timm's ``BatchNormAct2d``).

    Args:
        conv: The dynamic convolution.
        norm_act: Normalisation and activation after it.
        pool: A max pool between the convolution and the norm (airbench94's conv-pool-norm order), or ``None``.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, C_out, H', W')

    Example:
        >>> from timm.layers import BatchNormAct2d
        >>> from dynconv import CondConv2d
        >>> block = KernelMixingBlock(CondConv2d(8, 16, num_experts=2), BatchNormAct2d(16)).eval()
        >>> x = torch.randn(2, 8, 6, 6)
        >>> before = block(x)
        >>> block.reparameterize()
        >>> torch.allclose(block(x), before, atol=1e-5), block.is_fused
        (True, True)
    """

    def __init__(self, conv: nn.Module, norm_act: nn.Module, pool: Optional[nn.Module] = None):
        super().__init__(OrderedDict(conv=conv, **({} if pool is None else {"pool": pool}), bn=norm_act))
        #: True once :meth:`reparameterize` has folded the BatchNorm into the convolution.
        self.is_fused = False

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BatchNorm's running statistics and affine parameters into the experts and a shift, in place.

        For inference only: eval-mode outputs are unchanged (up to float rounding), and the block then refuses to
        train. ``timm.utils.reparameterize_model(model)`` calls this on every block of a model. With a max pool
        between convolution and norm the fold is exact only if every channel's scale is positive (a max commutes
        with a positive scale only); otherwise the norm stays, unfolded.
        """
        if self.is_fused:
            return
        bn = self.bn
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
            raise ValueError(f"reparameterize needs a BatchNorm with running statistics, got {type(bn).__name__}")
        scale = torch.rsqrt(bn.running_var + bn.eps)
        shift = -bn.running_mean * scale
        if bn.affine:
            scale = scale * bn.weight
            shift = shift * bn.weight + bn.bias
        if "pool" in self._modules and not bool((scale > 0).all()):
            return
        self.conv.fold_affine(scale, shift)
        # what came after the normalisation in the norm-act layer (timm's BatchNormAct2d: drop, then act)
        self.bn = nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity()))
        self.is_fused = True


def kernel_mixing_builder(kind: str, layer: Type[ExpertConv2d]) -> BlockBuilder:
    """The block builder of a kernel-mixing family for :func:`~dynconv.layers.register_block`: ``layer`` with K
    experts, then the norm and activation, as a :class:`KernelMixingBlock`."""
    def build(in_channels: int, out_channels: int, *, num_experts: int, kernel_size: Union[int, Sequence[int]],
              stride: int, act_layer, norm_layer, device=None, dtype=None, **kwargs) -> nn.Module:
        conv = layer(in_channels, out_channels, single_kernel_size(kind, kernel_size), stride,
                     num_experts=num_experts, device=device, dtype=dtype, **kwargs)
        norm_act = get_norm_act_layer(norm_layer, act_layer)(out_channels, device=device, dtype=dtype)
        return KernelMixingBlock(conv, norm_act)

    build.__qualname__ = f"kernel_mixing_builder[{layer.__name__}]"
    return build
