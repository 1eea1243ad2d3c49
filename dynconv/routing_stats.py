"""What the routers decide, in a few numbers per block: do they route, or did routing collapse or saturate?

A dynamic block pays for itself only if its router gives different samples different mixes. Two failures are known:
*collapse* (every sample gets nearly the same weights: the block is a static ensemble at K times the cost) and
*saturation* (one branch takes all the weight: the other K-1 are dead). :func:`routing_statistics` measures both
from the (N, K) weights that :class:`~dynconv.RoutingRecorder` collects.

Sigmoid routers (CondConv) give independent weights that need not sum to one; the distribution-based statistics
(entropy, variation, top branch) use the weights normalised to sum to one per sample, the means use them as given.
"""
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import torch

__all__ = ["AttentionStatistics", "RoutingStatistics", "attention_statistics", "routing_statistics"]


@dataclass(frozen=True)
class RoutingStatistics:
    """Summary of one block's routing weights over N samples.

    Attributes:
        num_samples: N.
        num_experts: K.
        mean_weight: Mean weight of each branch, K values.
        normalised_entropy: Mean over samples of the entropy of the normalised weights divided by log K: 1 is a
            uniform mix for every sample, 0 one branch per sample.
        variation: Mean total-variation distance of each sample's normalised weights from their mean over the
            samples: 0 when every sample gets the same mix (collapse), 1 - 1/K for one-hot routing spread evenly
            over the K branches.
        top_branch_share: Share of samples whose heaviest branch is the most common heaviest branch (1: one branch
            leads for everybody).
        class_mean_weight: Per class, the mean weight of each branch (C lists of K values); None without labels.
    """

    num_samples: int
    num_experts: int
    mean_weight: List[float]
    normalised_entropy: float
    variation: float
    top_branch_share: float
    class_mean_weight: Optional[List[List[float]]] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def routing_statistics(weights: torch.Tensor, labels: Optional[torch.Tensor] = None,
                       num_classes: Optional[int] = None) -> RoutingStatistics:
    """Summarise one block's routing weights.

    Args:
        weights: Non-negative mixing weights, one row per sample.
        labels: Class of each sample, for the per-class means.
        num_classes: Number of classes C (default: the largest label + 1).

    Returns:
        The block's :class:`RoutingStatistics`.

    Shape:
        - weights: (N, K)
        - labels: (N,)

    Example:
        >>> stats = routing_statistics(torch.full((8, 4), 0.25))
        >>> round(stats.normalised_entropy, 6), round(stats.variation, 6)
        (1.0, 0.0)
    """
    if weights.ndim != 2 or weights.shape[0] < 1 or weights.shape[1] < 2:
        raise ValueError(f"weights must be (N, K) with N >= 1 samples and K >= 2 branches, got shape "
                         f"{tuple(weights.shape)}")
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise ValueError("weights must be finite and non-negative (routing weights)")
    weights = weights.detach().double().cpu()
    count, experts = weights.shape
    probabilities = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1) / math.log(experts)
    variation = 0.5 * (probabilities - probabilities.mean(dim=0)).abs().sum(dim=1)
    top = probabilities.argmax(dim=1)
    top_share = (top == top.mode().values).double().mean()
    class_means = None
    if labels is not None:
        labels = labels.detach().cpu().long()
        if labels.shape != (count,):
            raise ValueError(f"labels must have one entry per sample, shape ({count},), got {tuple(labels.shape)}")
        if (labels < 0).any():
            raise ValueError("labels must be >= 0")
        classes = int(labels.max()) + 1 if num_classes is None else num_classes
        if int(labels.max()) >= classes:
            raise ValueError(f"num_classes={classes} is too small for label {int(labels.max())}")
        sums = torch.zeros(classes, experts, dtype=torch.double).index_add_(0, labels, weights)
        counts = torch.bincount(labels, minlength=classes).double().unsqueeze(1)
        class_means = (sums / counts.clamp_min(1)).where(counts > 0, torch.nan).tolist()
    return RoutingStatistics(
        num_samples=count, num_experts=experts, mean_weight=weights.mean(dim=0).tolist(),
        normalised_entropy=float(entropy.mean()), variation=float(variation.mean()),
        top_branch_share=float(top_share), class_mean_weight=class_means)


@dataclass(frozen=True)
class AttentionStatistics:
    """Summary of one attention that is not a mixing weight (DCD's Lambda or Phi) over N samples.

    Attributes:
        num_samples: N.
        size: D, the attention's values per sample.
        mean: Mean value over samples and entries.
        spread: Mean over the D entries of each entry's standard deviation over the samples: 0 when every sample
            gets the same attention (a static layer in disguise).
        relative_spread: ``spread`` over the mean absolute value, comparable across layers and attention kinds.
    """

    num_samples: int
    size: int
    mean: float
    spread: float
    relative_spread: float

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def attention_statistics(values: torch.Tensor) -> AttentionStatistics:
    """Summarise one attention's per-sample values: how much do they vary between samples?

    Args:
        values: One row per sample (e.g. :attr:`~dynconv.RoutingRecorder.attentions`' ``"scale"`` or ``"phi"``).

    Returns:
        The attention's :class:`AttentionStatistics`.

    Shape:
        - values: (N, D)

    Example:
        >>> stats = attention_statistics(torch.tensor([[1.0, 2.0], [3.0, 2.0]]))
        >>> stats.mean, stats.spread
        (2.0, 0.5)
    """
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"values must be (N, D) with N >= 1 samples and D >= 1 entries, got shape "
                         f"{tuple(values.shape)}")
    if not torch.isfinite(values).all():
        raise ValueError("values must be finite")
    values = values.detach().double().cpu()
    spread = float(values.std(dim=0, unbiased=False).mean())
    magnitude = float(values.abs().mean())
    return AttentionStatistics(num_samples=values.shape[0], size=values.shape[1], mean=float(values.mean()),
                               spread=spread, relative_spread=spread / magnitude if magnitude > 0 else 0.0)
