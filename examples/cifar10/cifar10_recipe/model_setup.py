"""The configured model: checked before a run writes anything, built seeded, its patch stem whitened, its FLOPs
counted."""
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dynconv.models import list_models

from .config import NORMALIZATIONS, TrainConfig, model_arguments
from .whitening import init_patch_whitening

WHITENING_IMAGES = 5000  # training images whose patch covariance initialises a whitened stem


def check_model(config: TrainConfig) -> None:
    """Build the configured model on the meta device (no memory, no compute), so that a bad model name, override or
    ``--whiten`` on a model without a patch stem fails before anything is written to the run folder."""
    if not timm.is_model(config.model):
        raise ValueError(f"--model {config.model!r} is not a registered model; dynconv's are "
                         f"{', '.join(list_models())}")
    arguments = model_arguments(config)
    try:
        model = timm.create_model(config.model, device="meta", **arguments)
    except ValueError:
        raise
    except Exception as error:  # an override the model does not take, e.g. --block for a timm ResNet
        raise ValueError(f"--model {config.model} cannot be built with {arguments}: {error}") from None
    if config.whiten:
        patch_stem(model)


def build_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """The configured model on ``device`` (channels-last with ``--channels-last``)."""
    model = timm.create_model(config.model, **model_arguments(config)).to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def patch_stem(model: nn.Module) -> nn.Conv2d:
    """The convolution of ``model``'s patch stem (``stem="patch"``: unpadded, with a bias), which ``--whiten``
    initialises; ``ValueError`` if the model has none."""
    conv = getattr(getattr(model, "stem", None), "conv", None)
    if not isinstance(conv, nn.Conv2d) or conv.bias is None or conv.padding != (0, 0):
        raise ValueError("--whiten needs a model with a patch stem (stem='patch'), such as dynconv_cifar_fast")
    return conv


def whiten_stem(model: nn.Module, images: torch.Tensor, normalization: str) -> None:
    """Initialise ``model``'s patch stem by patch whitening of ``images`` (uint8, (N, 3, H, W)), normalised as the
    loaders normalise them, and freeze its weights (its bias trains; ``--whiten-bias-epochs`` freezes it later)."""
    conv = patch_stem(model)
    mean, std = (torch.tensor(v, device=images.device).view(1, -1, 1, 1) for v in NORMALIZATIONS[normalization])
    init_patch_whitening(conv, (images.float() / 255 - mean) / std)
    conv.weight.requires_grad_(False)


def count_flops(model: nn.Module, device: torch.device) -> int:
    """Forward FLOPs for one 3x32x32 image (eval mode; multiply-adds count as two)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32, device=device))
    model.train(was_training)
    return counter.get_total_flops()
