"""Multi-process training with torch.distributed, as launched by ``torchrun --nproc_per_node N train.py ...``.

One process per device (GPU, or a share of the CPU cores), NCCL on CUDA and Gloo on CPU. ``--batch-size`` is the
global batch: each of the N processes takes batch_size / N images of every step (the loaders shard each global
batch), DistributedDataParallel averages the gradients, so N processes compute the same update as one process with
the whole batch, up to BatchNorm statistics, which each process computes over its own images unless ``--sync-bn``.

SyncBatchNorm: with ``--sync-bn`` every BatchNorm computes its batch statistics over the global batch. The dynamic
blocks' wide BatchNorm over K * C_out channels is one BatchNorm, so it synchronises like any other, per branch and
channel. On CUDA this is torch's ``SyncBatchNorm`` (through timm's converter, which keeps timm's BatchNormAct2d
activations); torch's has no CPU kernels, so on CPU :func:`convert_sync_batchnorm_cpu` swaps in an exact
implementation that all-reduces the statistics with the process group.
"""
import os
from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import nn


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process prints, plots and writes files."""
        return self.rank == 0


SINGLE_PROCESS = Distributed()


def init_distributed(device: torch.device) -> Tuple[Distributed, torch.device]:
    """Join the process group torchrun describes in the environment (no-op for a single process).

    Returns the process's place and the device it trains on (``cuda:LOCAL_RANK`` on CUDA).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return SINGLE_PROCESS, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # torchrun's store outlives a restart of the workers (--max-restarts), keys and all: without a prefix of its
        # own, a restarted group would read the dead processes' Gloo addresses and never connect
        store, _, _ = next(dist.rendezvous("env://"))
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                store=dist.PrefixStore(f"dynconv/restart{restart}", store), rank=rank,
                                world_size=world_size)
    return Distributed(rank, world_size, local_rank), device


def all_reduce_sum(values: List[float], device: torch.device) -> List[float]:
    """Sum plain numbers over all processes (identity for a single process)."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch normalisation with statistics over every process's batch; backward all-reduces the two gradient sums."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        dims = (0, 2, 3)
        x32 = x.float()
        count = torch.tensor([x32.numel() / x32.shape[1]], device=x.device)
        stats = torch.cat([x32.sum(dims), (x32 * x32).sum(dims), count])
        dist.all_reduce(stats)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        x_hat = (x32 - mean[:, None, None]) * invstd[:, None, None]
        ctx.save_for_backward(x_hat, weight, invstd, total)
        ctx.input_dtype = x.dtype
        return (x_hat * weight[:, None, None] + bias[:, None, None]).to(x.dtype), mean, var, total

    @staticmethod
    def backward(ctx, grad_out, *_):
        x_hat, weight, invstd, total = ctx.saved_tensors
        dims = (0, 2, 3)
        grad_out = grad_out.float()
        sum_dy, sum_dy_xhat = grad_out.sum(dims), (grad_out * x_hat).sum(dims)
        global_sums = torch.cat([sum_dy, sum_dy_xhat])
        dist.all_reduce(global_sums)
        mean_dy, mean_dy_xhat = (global_sums / total).chunk(2)
        grad_x = (grad_out - mean_dy[:, None, None] - x_hat * mean_dy_xhat[:, None, None]) * (
            invstd * weight)[:, None, None]
        # parameter gradients stay local: DistributedDataParallel averages them like every other gradient
        return grad_x.to(ctx.input_dtype), sum_dy_xhat, sum_dy, None


def _sync_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if not (bn.training and dist.is_initialized() and dist.get_world_size() > 1):
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                            bn.training or bn.running_mean is None, bn.momentum or 0.0, bn.eps)
    out, mean, var, total = _SyncBatchNormFunction.apply(x, bn.weight, bn.bias, bn.eps)
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked.item()
        bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
        bn.running_var.lerp_((var * total / (total - 1)).to(bn.running_var.dtype), momentum)
    return out


class CpuSyncBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training statistics span all processes (CPU and Gloo included)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _sync_batch_norm(self, x)


class CpuSyncBatchNormAct2d(BatchNormAct2d):
    """timm's BatchNormAct2d whose training statistics span all processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(_sync_batch_norm(self, x)))


def convert_sync_batchnorm_cpu(model: nn.Module) -> nn.Module:
    """Make every affine, tracking BatchNorm2d (and timm BatchNormAct2d) of ``model`` synchronise across processes,
    in place (the modules keep their parameters and buffers; only their class changes)."""
    for module in model.modules():
        if not (getattr(module, "affine", False) and getattr(module, "track_running_stats", False)):
            continue
        if type(module) is nn.BatchNorm2d:
            module.__class__ = CpuSyncBatchNorm2d
        elif type(module) is BatchNormAct2d:
            module.__class__ = CpuSyncBatchNormAct2d
    return model


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """SyncBatchNorm for ``model`` on ``device``: torch's (via timm) on CUDA, ours elsewhere."""
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm as timm_convert

        return timm_convert(model)
    return convert_sync_batchnorm_cpu(model)
