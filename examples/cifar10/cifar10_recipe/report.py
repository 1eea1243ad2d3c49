"""Run outputs: the per-epoch metrics log, the summary line, and the coursework's loss/accuracy plot."""
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import matplotlib
import torch

from dynconv import attention_statistics, routing_statistics

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def spread(summaries: List[Dict[str, Any]], key: str) -> Optional[Dict[str, Any]]:
    """Mean, sample standard deviation and values of ``key`` over the run summaries that have it (None if none)."""
    values = [summary[key] for summary in summaries if summary.get(key) is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def _stage_of(block_name: str) -> str:
    """``stages.<i>`` of a block's module name (``stages.1.blocks.0`` -> ``stages.1``)."""
    return ".".join(block_name.split(".")[:2])


def routing_health(weights: Dict[str, torch.Tensor],
                   attentions: Optional[Dict[str, Dict[str, torch.Tensor]]] = None) -> Dict[str, Dict[str, float]]:
    """Per stage (``stages.<i>``), the mean over its blocks of the routers' normalised entropy (1: uniform mix, 0: one
    branch per sample) and cross-sample variation (0: every sample gets the same mix, i.e. collapsed routing), from
    :class:`~dynconv.RoutingRecorder` weights (block name -> (N, K)). Routers of one expert (K=1, e.g. a one-kernel
    DyConv) have nothing to mix and are left out. For DCD's attentions (block name -> ``"scale"``, ``"phi"``), the
    relative spread across samples of the channel scale and of the latent matrix (0: the same for every image)."""
    stages: Dict[str, List[Any]] = defaultdict(list)
    for name, block_weights in weights.items():
        if block_weights.shape[-1] < 2:
            continue
        stages[_stage_of(name)].append(routing_statistics(block_weights))
    health = {stage: {"entropy": statistics.fmean(s.normalised_entropy for s in blocks),
                      "variation": statistics.fmean(s.variation for s in blocks)} for stage, blocks in stages.items()}
    spreads: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    for name, values in (attentions or {}).items():
        for key, tensor in values.items():
            spreads[_stage_of(name)][f"{key}_spread"].append(attention_statistics(tensor).relative_spread)
    for stage, by_key in spreads.items():
        health.setdefault(stage, {}).update({key: statistics.fmean(v) for key, v in by_key.items()})
    return health


def write_metrics(path: Path, history: List[Dict[str, Any]]) -> None:
    """Rewrite the JSON-lines metrics file from the whole history (so a resumed run drops stale epochs)."""
    path.write_text("".join(json.dumps(row) + "\n" for row in history))


def epoch_line(row: Dict[str, Any], epochs: int) -> str:
    test = (f"test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:.2f}%"
            if row.get("test_acc") is not None else "test -")
    if row.get("test_acc_tta") is not None:
        test += f" (tta {100 * row['test_acc_tta']:.2f}%)"
    return (f"epoch {row['epoch'] + 1:>3}/{epochs} | train loss {row['train_loss']:.4f} acc "
            f"{100 * row['train_acc']:.2f}% | {test} | lr {row['lr']:.2e} | {row['images_per_s']:.0f} img/s | "
            f"elapsed {row['elapsed_s']:.0f}s")


def plot_curves(history: List[Dict[str, Any]], path: Path, title: str) -> None:
    """Train and test loss and accuracy per epoch, side by side."""
    epochs = [row["epoch"] + 1 for row in history]
    evaluated = [row for row in history if row.get("test_acc") is not None]
    test_epochs = [row["epoch"] + 1 for row in evaluated]
    routed = [row for row in evaluated if row.get("routing")]
    figure, axes = plt.subplots(1, 3 if routed else 2, figsize=(16 if routed else 11, 4))
    loss_axis, acc_axis = axes[:2]
    loss_axis.plot(epochs, [row["train_loss"] for row in history], label="train")
    loss_axis.plot(test_epochs, [row["test_loss"] for row in evaluated], label="test", marker=".")
    acc_axis.plot(epochs, [100 * row["train_acc"] for row in history], label="train")
    acc_axis.plot(test_epochs, [100 * row["test_acc"] for row in evaluated], label="test", marker=".")
    for axis, name in ((loss_axis, "loss"), (acc_axis, "accuracy (%)")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend()
    if routed:
        routing_axis = axes[2]
        routed_epochs = [row["epoch"] + 1 for row in routed]
        styles = {"entropy": ("-", "entropy / log K"), "variation": ("--", "variation"),
                  "scale_spread": (":", "DCD scale spread"), "phi_spread": ("-.", "DCD Phi spread")}
        for index, stage in enumerate(routed[-1]["routing"]):
            for key, (linestyle, label) in styles.items():
                if key in routed[-1]["routing"][stage]:
                    routing_axis.plot(routed_epochs, [row["routing"].get(stage, {}).get(key) for row in routed],
                                      color=f"C{index}", linestyle=linestyle, marker=".", label=f"{stage} {label}")
        routing_axis.set_xlabel("epoch")
        routing_axis.set_ylabel("routing (test images)")
        routing_axis.grid(alpha=0.3)
        routing_axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
