"""DynamicBlock (fused wide-conv path) against the per-branch reference, in train and eval mode."""
import copy

import pytest
import timm
import torch
from timm.utils import reparameterize_model
from torch import nn

from dynconv.layers import DynamicBlock, mix_branches
from tests.reference import NaiveDynamicBlock

CASES = [
    # (in_channels, out_channels, num_experts, kernel_size, stride, batch, size)
    (3, 8, 2, 3, 1, 4, 16),
    (8, 16, 2, (3, 3), 2, 2, 15),
    (16, 8, 3, (1, 3, 5), 1, 3, 9),
    (5, 7, 4, (5, 1, 3, 3), 2, 1, 12),
    (8, 8, 1, 1, 1, 5, 7),
    (4, 6, 4, 5, 3, 2, 13),
]


def _perturb_bn(block: DynamicBlock, generator: torch.Generator) -> None:
    """Give the BatchNorm non-trivial affine parameters and statistics, so eval-mode checks mean something."""
    with torch.no_grad():
        bn = block.bn
        bn.weight.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=generator))
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=generator))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=generator) + 0.5)


def _blocks(case, seed):
    in_channels, out_channels, num_experts, kernel_size, stride, _, _ = case
    torch.manual_seed(seed)
    block = DynamicBlock(in_channels, out_channels, num_experts, kernel_size, stride)
    _perturb_bn(block, torch.Generator().manual_seed(seed))
    return block, NaiveDynamicBlock.from_fused(block)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_in_train_mode(case, seed):
    block, naive = _blocks(case, seed)
    *_, batch, size = case
    x = torch.randn(batch, case[0], size, size, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, ref = block(x), naive(x_ref)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=0)
    # running statistics of the one wide BN equal those of the K branch BNs
    means = torch.cat([branch[1].running_mean for branch in naive.branches])
    torch.testing.assert_close(block.bn.running_mean, means, atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference_in_eval_mode(case):
    block, naive = _blocks(case, seed=2)
    block.eval(), naive.eval()
    *_, batch, size = case
    x = torch.randn(batch, case[0], size, size)
    torch.testing.assert_close(block(x), naive(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reparameterize_keeps_eval_output(case):
    block, _ = _blocks(case, seed=3)
    block.eval()
    *_, batch, size = case
    x = torch.randn(batch, case[0], size, size)
    expected = block(x)
    block.reparameterize()
    assert block.is_fused and isinstance(block.bn, nn.Identity)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=0)
    block.reparameterize()  # a second call is a no-op
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=0)


def test_timm_reparameterize_model_fuses_every_block():
    model = timm.create_model("dynconv_cifar_tiny").eval()
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, DynamicBlock):
            _perturb_bn(module, generator)
    x = torch.randn(3, 3, 32, 32)
    fused = reparameterize_model(model)
    assert all(m.is_fused for m in fused.modules() if isinstance(m, DynamicBlock))
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


def test_single_branch_equals_conv_bn_relu():
    torch.manual_seed(0)
    block = DynamicBlock(6, 10, num_experts=1, kernel_size=3, stride=2)
    _perturb_bn(block, torch.Generator().manual_seed(0))
    static = nn.Sequential(nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(10), nn.ReLU())
    static[0].weight.data.copy_(block.conv.weight)
    static[1].load_state_dict(block.bn.state_dict())
    x = torch.randn(4, 6, 11, 11)
    for train in (True, False):
        block.train(train), static.train(train)
        torch.testing.assert_close(block(x), static(x), atol=1e-5, rtol=0)


def test_padded_kernel_corners_stay_zero_through_training():
    torch.manual_seed(0)
    block = DynamicBlock(4, 6, num_experts=3, kernel_size=(1, 3, 5))
    optimizer = torch.optim.AdamW(block.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        block(torch.randn(2, 4, 8, 8)).square().mean().backward()
        optimizer.step()
    effective = block.branch_weight().view(3, 6, 4, 5, 5)
    assert effective[0, :, :, 2, 2].abs().sum() > 0
    # everything outside each branch's own kernel is exactly zero (compared entry by entry: sums in another order
    # would differ in the last bit)
    outside_1x1, outside_3x3 = torch.ones(5, 5, dtype=torch.bool), torch.ones(5, 5, dtype=torch.bool)
    outside_1x1[2, 2], outside_3x3[1:4, 1:4] = False, False
    assert (effective[0][:, :, outside_1x1] == 0).all() and (effective[1][:, :, outside_3x3] == 0).all()


def test_branches_are_initialised_like_their_own_conv2d():
    torch.manual_seed(0)
    block = DynamicBlock(64, 64, num_experts=2, kernel_size=(1, 5))
    weight = block.conv.weight.view(2, 64, 64, 5, 5)
    # nn.Conv2d draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in * k * k
    assert weight[0, :, :, 2, 2].abs().max() <= 1 / 64 ** 0.5
    assert weight[0, :, :, 2, 2].abs().max() > 0.9 / 64 ** 0.5
    assert weight[1].abs().max() <= 1 / (64 * 25) ** 0.5


@pytest.mark.parametrize("batch,channels,num_branches,size", [(3, 5, 2, 4), (1, 8, 4, 3), (2, 3, 3, 1)])
def test_mix_branches_agrees_across_memory_formats(batch, channels, num_branches, size):
    branches = torch.randn(batch, num_branches * channels, size, size)
    weights = torch.softmax(torch.randn(batch, num_branches), dim=1)
    expected = sum(weights[:, k, None, None, None] * branches[:, k * channels:(k + 1) * channels]
                   for k in range(num_branches))
    torch.testing.assert_close(mix_branches(branches, weights), expected, atol=1e-6, rtol=0)
    channels_last = mix_branches(branches.contiguous(memory_format=torch.channels_last), weights)
    torch.testing.assert_close(channels_last, expected, atol=1e-6, rtol=0)


def test_channels_last_block_matches_contiguous():
    torch.manual_seed(0)
    block = DynamicBlock(8, 12, num_experts=3, kernel_size=(1, 3, 3))
    x = torch.randn(4, 8, 10, 10)
    reference = copy.deepcopy(block)(x)
    block = block.to(memory_format=torch.channels_last)
    out = block(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_bf16_autocast_runs_and_stays_close():
    torch.manual_seed(0)
    block = DynamicBlock(8, 8, num_experts=2)
    x = torch.randn(2, 8, 8, 8)
    reference = block(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)


def test_batch_size_one_trains():
    torch.manual_seed(0)
    block = DynamicBlock(3, 4, num_experts=2, rd_channels=8)
    out = block(torch.randn(1, 3, 6, 6))
    out.sum().backward()
    assert all(p.grad is not None for p in block.parameters())
