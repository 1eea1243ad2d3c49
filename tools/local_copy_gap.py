"""How far the local CIFAR-10 copy is from the original files, measured where both exist: the first 4,000 training
images, which the local copy holds as the original pixels (from lossless strips) and the source also holds as JPEG.

    python -m tools.local_copy_gap --jpeg-root <a copy built without the lossless prefix> \\
        --out benchmarks/results/local_copy_gap

Every shipped weight file is evaluated (float32, eval mode, no test-time augmentation) on those 4,000 images twice:
as the original pixels and as their JPEG twins. The models trained on the local copy, so on 46,000 of their 50,000
training images and on every test image they saw JPEG pixels; the two accuracies show how much the JPEG error moves
their answers, and the agreement how many answers it changes. The JPEG-only copy comes from the data tool's builder
without ``--use-lossless-prefix``::

    tar xzf ../shared/data/cifar10-source/images.tar.gz -C /tmp/cifar-src
    python ../shared/tools/make_cifar10.py /tmp/cifar-src /tmp/cifar10-jpeg \\
        --train-labels ../shared/data/cifar10-source/trainLabels.csv

Writes ``<out>.json`` (with provenance) and ``<out>.md``.
"""
import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import timm
import torch

import dynconv  # noqa: F401  (registers the models and their weights)
from cifar10_recipe.data import load_cifar10
from cifar10_recipe.shipping import normalised_batches
from dynconv.records import provenance, write_record

LOSSLESS_IMAGES = 4_000


@torch.no_grad()
def predictions(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Top-1 classes of uint8 (N, 3, 32, 32) images, normalised with the model's pretrained cfg -> (N,)."""
    model.eval()
    batches = normalised_batches(images, model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    return torch.cat([model(batch).argmax(dim=1) for batch in batches])


def compare(names: List[str], original: torch.Tensor, jpeg: torch.Tensor, labels: torch.Tensor) -> Dict[str, Any]:
    """Per weight: accuracy on the original pixels, on their JPEG twins, and the share of equal answers."""
    if original.shape != jpeg.shape or len(labels) != len(original):
        raise ValueError(f"the two copies differ in shape: {tuple(original.shape)} and {tuple(jpeg.shape)}, "
                         f"{len(labels)} labels")
    results = {}
    for name in names:
        model = timm.create_model(name, pretrained=True)
        on_original, on_jpeg = predictions(model, original), predictions(model, jpeg)
        results[name] = {"original_acc": float((on_original == labels).float().mean()),
                         "jpeg_acc": float((on_jpeg == labels).float().mean()),
                         "agreement": float((on_original == on_jpeg).float().mean())}
    return results


def markdown(record: Dict[str, Any]) -> str:
    lines = [f"# Shipped weights on the {record['images']} training images held both ways", "",
             f"Command: `{record['provenance']['command']}`, commit {record['provenance']['commit']}, "
             f"mean |JPEG - original| {record['mean_abs_difference']:.2f} levels of 255.", "",
             "| weights | original pixels | JPEG twins | difference (points) | same answer |", "|---|---|---|---|---|"]
    for name, row in record["results"].items():
        lines.append(f"| `{name}` | {100 * row['original_acc']:.2f}% | {100 * row['jpeg_acc']:.2f}% | "
                     f"{100 * (row['original_acc'] - row['jpeg_acc']):+.2f} | {100 * row['agreement']:.2f}% |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="the local copy (default: $CIFAR10_ROOT or ./data)")
    parser.add_argument("--jpeg-root", required=True, help="the same images built without the lossless prefix")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .md)")
    args = parser.parse_args(argv)
    local, jpeg = load_cifar10(args.data_dir), load_cifar10(args.jpeg_root)
    original = local.train_images[:LOSSLESS_IMAGES]
    twins = jpeg.train_images[:LOSSLESS_IMAGES]
    labels = local.train_labels[:LOSSLESS_IMAGES]
    if not torch.equal(labels, jpeg.train_labels[:LOSSLESS_IMAGES]):
        raise ValueError("the two copies order their training images differently: build both from the same source")
    names = timm.list_models("dynconv*", pretrained=True)
    record = {"images": LOSSLESS_IMAGES,
              "mean_abs_difference": float((original.float() - twins.float()).abs().mean()),
              "provenance": provenance(torch.device("cpu"), ["tools/local_copy_gap.py", *(argv or sys.argv[1:])]),
              "results": compare(names, original, twins, labels)}
    write_record(args.out, record, markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
