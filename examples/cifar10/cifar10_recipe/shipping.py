"""Shipped weights: what their metadata records, and the fixed check that proves a shipped file still classifies.

The check evaluates a model in float32, eval mode, without test-time augmentation, on a fixed part of the test set
(every fifth image: 2,000 images, all classes, since some copies store the test set class by class). The number of
correct answers is recorded in the weights' metadata when they are shipped, and CI recomputes it from the installed
package with ``timm.create_model(name, pretrained=True)``.
"""
import json
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence, Tuple

import torch
from safetensors import safe_open
from torch import nn

CHECK_STRIDE = 5
EVAL_BATCH = 500


def check_part(images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The fixed part of a test set that the shipped-weights check evaluates: every ``CHECK_STRIDE``-th image."""
    return images[::CHECK_STRIDE], labels[::CHECK_STRIDE]


def normalised_batches(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> Iterator[torch.Tensor]:
    """uint8 (N, C, H, W) images as float32 batches of ``EVAL_BATCH``, normalised with per-channel ``mean`` and
    ``std`` (of pixel values in [0, 1])."""
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    for start in range(0, len(images), EVAL_BATCH):
        yield (images[start:start + EVAL_BATCH].float() / 255 - mean) / std


@torch.no_grad()
def count_correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> int:
    """Correct top-1 answers of ``model`` (eval mode, float32, normalised with its pretrained cfg) on uint8 images.

    Shape:
        - images: (N, 3, 32, 32) uint8
        - labels: (N,) int64
    """
    model.eval()
    batches = normalised_batches(images, model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    predictions = torch.cat([model(batch).argmax(dim=1) for batch in batches])
    return int((predictions == labels).sum())


def read_metadata(path: Path) -> Dict[str, Any]:
    """The metadata of a shipped weights file, JSON values decoded."""
    with safe_open(str(path), framework="pt") as file:
        return {key: json.loads(value) for key, value in (file.metadata() or {}).items()}
