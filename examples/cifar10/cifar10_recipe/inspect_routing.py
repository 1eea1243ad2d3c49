"""What the routers of a trained model decide on the CIFAR-10 test set: statistics per block, and a figure.

    python examples/cifar10/inspect_routing.py --pretrained dynconv_cifar_tiny --out runs/routing-tiny
    python examples/cifar10/inspect_routing.py --checkpoint runs/<run>/checkpoints/best.safetensors --out runs/r
    python examples/cifar10/inspect_routing.py --run runs/<run> --out runs/r --test-subset 2000

Writes ``routing.json`` (per block: mean weight per branch, normalised entropy, cross-sample variation, share of
the most common top branch, per-class mean weights; :func:`dynconv.routing_statistics`) and ``routing.png`` (per
block a heatmap of class x branch mean weights, and the entropy and variation of every block).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import torch

from dynconv import RoutingRecorder, attention_statistics, routing_statistics

from .checkpoint import MANIFEST, CheckpointError, load_weights
from .config import NORMALIZATIONS, TrainConfig, model_arguments, upgrade_config_dict
from .data import CLASSES, DatasetError, load_cifar10
from .shipping import normalised_batches

Normalization = Tuple[Sequence[float], Sequence[float]]


def load_model(args: argparse.Namespace) -> Tuple[torch.nn.Module, Normalization]:
    """The model to inspect (shipped weights, a checkpoint, or a run folder's final weights) and the mean and std its
    inputs were normalised with in training."""
    if args.pretrained:
        model = timm.create_model(args.pretrained, pretrained=True)
        return model, (model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    path = Path(args.checkpoint) if args.checkpoint else None
    if args.run:
        manifest = Path(args.run) / "checkpoints" / MANIFEST
        if not manifest.is_file():
            raise CheckpointError(f"--run {args.run}: no {manifest}; is it a run folder with a checkpoint?")
        path = manifest.parent / json.loads(manifest.read_text())["weights"]
    weights, info = load_weights(path)
    config = TrainConfig(**upgrade_config_dict(info["config"]))
    model = timm.create_model(config.model, **model_arguments(config))
    model.load_state_dict(weights)
    return model, NORMALIZATIONS[config.normalization]


@torch.no_grad()
def record_routing(model: torch.nn.Module, images: torch.Tensor, normalization: Normalization) -> RoutingRecorder:
    """The recorder after every router's decisions on uint8 ``images``, normalised with ``normalization``: (N, K)
    mixing weights per block, and DCD's attentions."""
    model.eval()
    with RoutingRecorder(model) as recorder:
        for batch in normalised_batches(images, *normalization):
            model(batch)
    return recorder


def inspect(model: torch.nn.Module, normalization: Normalization, images: torch.Tensor, labels: torch.Tensor
            ) -> Dict[str, Any]:
    recorder = record_routing(model, images, normalization)
    return {"num_images": len(labels), "classes": list(CLASSES),
            "blocks": {name: routing_statistics(w, labels, len(CLASSES)).to_dict()
                       for name, w in recorder.weights.items()},
            "attentions": {name: {key: attention_statistics(values).to_dict() for key, values in attentions.items()}
                           for name, attentions in recorder.attentions.items()}}


def plot(result: Dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = result["blocks"]
    if not blocks:
        _plot_attentions(result, path, title)
        return
    columns = len(blocks) + 1
    figure, axes = plt.subplots(1, columns, figsize=(2.2 * columns + 1, 4.2))
    for axis, (name, stats) in zip(axes, blocks.items(), strict=False):
        image = axis.imshow(torch.tensor(stats["class_mean_weight"]).numpy(), aspect="auto", cmap="viridis", vmin=0)
        axis.set_title(f"{name}\nH={stats['normalised_entropy']:.2f} TV={stats['variation']:.2f}", fontsize=8)
        axis.set_xlabel("branch")
        axis.set_xticks(range(stats["num_experts"]))
        axis.set_yticks(range(len(result["classes"])))
        axis.set_yticklabels(result["classes"] if axis is axes[0] else [], fontsize=7)
        figure.colorbar(image, ax=axis, fraction=0.05)
    axis = axes[-1]
    names = list(blocks)
    axis.plot(range(len(names)), [blocks[n]["normalised_entropy"] for n in names], marker="o", label="entropy / log K")
    axis.plot(range(len(names)), [blocks[n]["variation"] for n in names], marker="s", label="variation (TV)")
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=60, fontsize=7)
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=7)
    axis.set_title("per block", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_attentions(result: Dict[str, Any], path: Path, title: str) -> None:
    """DCD's attentions: each block's relative spread across images of Lambda and of Phi (``plot`` has set the
    backend)."""
    import matplotlib.pyplot as plt

    names = list(result["attentions"])
    figure, axis = plt.subplots(figsize=(1.2 * len(names) + 3, 4))
    for index, key in enumerate(("scale", "phi")):
        axis.bar([i + 0.4 * index for i in range(len(names))],
                 [result["attentions"][n][key]["relative_spread"] for n in names], 0.4, label=f"{key} spread")
    axis.set_xticks([i + 0.2 for i in range(len(names))], names, rotation=30, fontsize=7)
    axis.set_ylabel("spread across images / mean magnitude")
    axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained", metavar="MODEL", help="a registered model with shipped weights")
    source.add_argument("--checkpoint", metavar="FILE", help="a .safetensors checkpoint written by train.py")
    source.add_argument("--run", metavar="RUN_DIR", help="a run folder (its last checkpoint)")
    parser.add_argument("--out", type=Path, required=True, help="folder for routing.json and routing.png")
    parser.add_argument("--data-dir", help="CIFAR-10 root (default: $CIFAR10_ROOT, else ./data)")
    parser.add_argument("--test-subset", type=int, default=0, help="a fixed random selection of N test images")
    args = parser.parse_args(argv)
    if args.test_subset < 0:
        parser.error(f"--test-subset must be >= 0, got {args.test_subset}")
    import dynconv  # noqa: F401  (registers the models)

    try:
        model, normalization = load_model(args)
        data = load_cifar10(args.data_dir).subset(0, args.test_subset)
        result = inspect(model, normalization, data.test_images, data.test_labels)
    except (CheckpointError, DatasetError, RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    source = args.pretrained or args.checkpoint or args.run
    result["source"] = source
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "routing.png", f"routing of {source} on {result['num_images']} test images")
    for name, stats in result["blocks"].items():
        print(f"{name}: entropy/logK {stats['normalised_entropy']:.3f}, variation {stats['variation']:.3f}, "
              f"top-branch share {stats['top_branch_share']:.2f}, mean weights "
              + " ".join(f"{w:.2f}" for w in stats["mean_weight"]))
    for name, attentions in result["attentions"].items():
        print(f"{name}: " + ", ".join(f"{key} mean {stats['mean']:.3f}, relative spread {stats['relative_spread']:.3f}"
                                      for key, stats in attentions.items()))
    print(f"wrote {args.out / 'routing.json'} and {args.out / 'routing.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
