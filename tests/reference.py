"""Simple reference implementations used as test oracles for the fast paths."""
from typing import List, Optional, Sequence

import torch
from torch import nn

from dynconv.layers import DynamicBlock


class NaiveDynamicBlock(nn.Module):
    """The coursework block written the obvious way: K separate Conv-BN-ReLU modules, then the weighted sum."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int], stride: int = 1):
        super().__init__()
        self.routing_fc = nn.Linear(in_channels, len(kernel_sizes))
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, size, stride=stride, padding=size // 2, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            )
            for size in kernel_sizes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.routing_fc(x.mean(dim=(2, 3))), dim=1)
        outputs: List[torch.Tensor] = [branch(x) for branch in self.branches]
        return sum(weights[:, k, None, None, None] * out for k, out in enumerate(outputs))

    @classmethod
    @torch.no_grad()
    def from_fused(cls, block: DynamicBlock) -> "NaiveDynamicBlock":
        """A naive block with exactly the parameters and BN statistics of ``block``."""
        naive = cls(block.in_channels, block.out_channels, block.kernel_sizes, block.stride)
        naive.routing_fc.load_state_dict(block.routing.fc.state_dict())
        max_kernel = max(block.kernel_sizes)
        weight = block.branch_weight().view(block.num_experts, block.out_channels, block.in_channels, max_kernel, -1)
        bn = block.bn
        for k, (size, branch) in enumerate(zip(block.kernel_sizes, naive.branches, strict=True)):
            start = (max_kernel - size) // 2
            channels = slice(k * block.out_channels, (k + 1) * block.out_channels)
            branch[0].weight.copy_(weight[k, :, :, start:start + size, start:start + size])
            branch[1].weight.copy_(bn.weight[channels])
            branch[1].bias.copy_(bn.bias[channels])
            branch[1].running_mean.copy_(bn.running_mean[channels])
            branch[1].running_var.copy_(bn.running_var[channels])
        return naive


@torch.no_grad()
def randomize_batchnorms(model: nn.Module, seed: int = 0, calibrate_on: Optional[torch.Tensor] = None) -> nn.Module:
    """Give every BatchNorm of ``model`` non-trivial running statistics and affine parameters (so that folding them
    is really tested), and put the model in eval mode.

    Random statistics that do not match the activations compound over depth: a deep network of layers that multiply
    features (DCD's channel scale and latent product) can reach logits of 1e12, where float32 rounding alone breaks
    any comparison. Given ``calibrate_on`` (a batch of inputs), the statistics are instead measured on it after the
    affine parameters are drawn, as a trained network's would be: still non-trivial, and the logits stay in range.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    for module in norms:
        module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.5)
        module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.3)
        module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
        module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.5)
    if calibrate_on is not None:
        momenta = [module.momentum for module in norms]
        for module in norms:
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: one pass gives the batch's statistics
        model.train()(calibrate_on)
        for module, momentum in zip(norms, momenta, strict=True):
            module.momentum = momentum
    return model.eval()

