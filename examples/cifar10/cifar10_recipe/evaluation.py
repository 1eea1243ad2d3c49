"""Evaluation: test loss and accuracy, with test-time augmentation and the routers' health."""
from contextlib import nullcontext
from typing import Any, Dict

import torch
import torch.nn.functional as F
from torch import nn

from dynconv import RoutingRecorder, routing_modules

from .distributed import all_reduce_sum
from .loaders import Loader
from .report import routing_health


def tta_logits(model: nn.Module, images: torch.Tensor, tta: int, logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (the model's on ``images``) averaged over test-time augmentations: level 1 adds the mirror image,
    level 2 also the image translated by one pixel up-left and down-right (reflect padding), each mirrored too
    (airbench94's level 2).

    Shape:
        - images: (B, C, H, W)
        - logits: (B, num_classes), returned likewise
    """
    if tta >= 1:
        logits = 0.5 * (logits + model(images.flip(3)).float())
    if tta == 2:
        height, width = images.shape[-2:]
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        shifted = (padded[:, :, :height, :width], padded[:, :, 2:, 2:])
        translated = sum(0.5 * (model(x).float() + model(x.flip(3)).float()) for x in shifted) / len(shifted)
        logits = 0.5 * logits + 0.5 * translated
    return logits


@torch.no_grad()
def evaluate(model: nn.Module, loader: Loader, autocast=None, tta: int = 0) -> Dict[str, Any]:
    """Test loss and accuracy of ``model`` on ``loader``; with ``tta`` > 0 also the accuracy of the
    test-time-augmented logits. For a model with routers also their health per stage on the test images (plain
    forward passes only; :func:`~cifar10_recipe.report.routing_health`). Sums over processes when there are several.
    """
    model.eval()
    autocast = autocast or nullcontext()
    recorder = RoutingRecorder(model) if routing_modules(model) else None
    total_loss = torch.zeros((), device=loader.device)
    correct = torch.zeros((), device=loader.device, dtype=torch.long)
    correct_tta = torch.zeros((), device=loader.device, dtype=torch.long)
    seen = 0
    for images, labels in loader:
        with autocast:
            with recorder or nullcontext():
                logits = model(images).float()
            if tta:
                correct_tta += (tta_logits(model, images, tta, logits).argmax(dim=1) == labels).sum()
        total_loss += F.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += len(labels)
    total_loss, correct, correct_tta, seen = all_reduce_sum(
        [total_loss.item(), correct.item(), correct_tta.item(), seen], loader.device)
    result = {"test_loss": total_loss / seen, "test_acc": correct / seen,
              "test_acc_tta": correct_tta / seen if tta else None}
    if recorder is not None:
        result["routing"] = routing_health(recorder.weights, recorder.attentions)
    return result
