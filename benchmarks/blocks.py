"""The implementations the block benchmarks compare, each built for (in_channels, out_channels, K)."""
import time
from typing import Callable, Dict

import torch
from timm.layers import CondConv2d
from torch import nn

from dynconv.layers import DynamicBlock, create_block
from tests.reference import NaiveDynamicBlock


class TimmCondConvBlock(nn.Module):
    """timm's CondConv2d as its EfficientNet blocks use it: sigmoid routing on pooled input, then BN and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, num_experts: int):
        super().__init__()
        self.routing = nn.Linear(in_channels, num_experts)
        self.conv = CondConv2d(in_channels, out_channels, 3, padding=1, num_experts=num_experts)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.sigmoid(self.routing(x.mean(dim=(2, 3))))
        return self.act(self.bn(self.conv(x, weights)))


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timed call measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pass_function(module: nn.Module, x: torch.Tensor, mode: str, device: torch.device) -> Callable[[], None]:
    """A call that runs ``module`` on ``x`` once and waits for it: ``"forward"`` (eval mode, inference mode) or
    ``"forward_backward"`` (train mode, backward of a ones gradient)."""
    if mode == "forward":
        module.eval()

        def forward():
            with torch.inference_mode():
                module(x)
            synchronize(device)
        return forward
    module.train()
    grad = torch.ones_like(module(x))

    def forward_backward():
        module(x).backward(grad)
        synchronize(device)
    return forward_backward


def timed_rounds(run: Callable[[], None], time_budget: float) -> int:
    """Rounds of ``run`` that fill ``time_budget`` seconds, from one timed call (5 to 200)."""
    start = time.perf_counter()
    run()
    return max(5, min(200, int(time_budget / max(time.perf_counter() - start, 1e-6))))


def _folded(in_channels: int, out_channels: int, k: int) -> nn.Module:
    block = DynamicBlock(in_channels, out_channels, k).eval()
    block.reparameterize()
    return block


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


# name -> builder(in_channels, out_channels, K); "floor" is the fused block's floor: the same wide conv, BN and ReLU
# with no routing and no mixing; "static" is one Conv-BN-ReLU with C_out outputs (what K=1 costs)
IMPLEMENTATIONS: Dict[str, Callable[[int, int, int], nn.Module]] = {
    "fused": lambda i, o, k: DynamicBlock(i, o, k),
    "fused_folded": _folded,
    "naive": lambda i, o, k: NaiveDynamicBlock(i, o, [3] * k),
    "floor": lambda i, o, k: conv_bn_relu(i, k * o),
    "static": lambda i, o, k: conv_bn_relu(i, o),
    "timm_condconv": TimmCondConvBlock,
    # our kernel-mixing blocks (conv, BN, ReLU) with K experts, per-sample convolution mode "auto"
    "condconv": lambda i, o, k: create_block("condconv", i, o, num_experts=k),
    "dyconv": lambda i, o, k: create_block("dyconv", i, o, num_experts=k),
    "odconv": lambda i, o, k: create_block("odconv", i, o, num_experts=k),
}
# fused_folded has no BatchNorm left to train: inference only
INFERENCE_ONLY = {"fused_folded"}
