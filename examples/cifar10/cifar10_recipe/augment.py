"""Augmentations: the coursework's torchvision pipeline, and the same operations on whole batches with per-sample
randomness, for a loader that keeps the dataset on the device and needs no worker processes.

Cutout: DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout", 2017,
https://arxiv.org/abs/1708.04552. A hole is a ``length`` x ``length`` square centred on a uniformly drawn pixel and
clipped at the image borders, so holes near a border are smaller. Both pipelines draw holes with :func:`cutout_mask`.

torchvision.transforms.v2 applied to a batched tensor draws one random parameter for the whole batch; the batch path
here draws every crop offset, flip and hole per sample.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torchvision import transforms

PAD_MODES = ("zeros", "reflect")
FLIP_MODES = ("random", "alternate", "none")


def hole_mask(centre_y: torch.Tensor, centre_x: torch.Tensor, height: int, width: int, length: int) -> torch.Tensor:
    """Boolean (B, height, width) mask of one square hole per sample: rows ``[cy - length // 2, cy + length // 2)``
    and the same for columns, clipped at the borders (DeVries & Taylor's reference implementation)."""
    rows = torch.arange(height, device=centre_y.device)
    cols = torch.arange(width, device=centre_x.device)
    in_rows = (rows >= centre_y[:, None] - length // 2) & (rows < centre_y[:, None] + length // 2)
    in_cols = (cols >= centre_x[:, None] - length // 2) & (cols < centre_x[:, None] + length // 2)
    return in_rows[:, :, None] & in_cols[:, None, :]


def cutout_mask(batch: int, height: int, width: int, length: int, n_holes: int = 1, *,
                generator: Optional[torch.Generator] = None, device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """Boolean (batch, height, width) mask, True inside the holes; each sample gets ``n_holes`` independent holes
    centred on uniformly drawn pixels."""
    mask = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
    for _ in range(n_holes):
        centre_y = torch.randint(height, (batch,), generator=generator, device=device)
        centre_x = torch.randint(width, (batch,), generator=generator, device=device)
        mask |= hole_mask(centre_y, centre_x, height, width, length)
    return mask


class Cutout:
    """torchvision-style transform: zero ``n_holes`` squares of side ``length`` in a (C, H, W) tensor image."""

    def __init__(self, n_holes: int = 1, length: int = 16):
        if n_holes < 1 or length < 1:
            raise ValueError(f"Cutout needs n_holes >= 1 and length >= 1, got n_holes={n_holes}, length={length}")
        self.n_holes = n_holes
        self.length = length

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        mask = cutout_mask(1, image.shape[-2], image.shape[-1], self.length, self.n_holes, device=image.device)
        return image.masked_fill(mask, 0)

    def __repr__(self) -> str:
        return f"Cutout(n_holes={self.n_holes}, length={self.length})"


def torchvision_transforms(mean: Sequence[float], std: Sequence[float], *, crop_padding: int = 4,
                           flip: bool = True, cutout: int = 16, cutout_holes: int = 1,
                           ) -> Tuple[transforms.Compose, transforms.Compose]:
    """The coursework's train and test pipelines (PIL image in, normalised tensor out).

    Train: RandomHorizontalFlip, RandomCrop(32, padding), ToTensor, Cutout, Normalize. Test: ToTensor, Normalize.
    """
    train = [transforms.RandomHorizontalFlip()] if flip else []
    if crop_padding:
        train.append(transforms.RandomCrop(32, padding=crop_padding))
    train.append(transforms.ToTensor())
    if cutout:
        train.append(Cutout(cutout_holes, cutout))
    normalize = transforms.Normalize(mean, std)
    return (transforms.Compose([*train, normalize]),
            transforms.Compose([transforms.ToTensor(), normalize]))


def _source_positions(offsets: torch.Tensor, size: int, padding: int, pad_mode: str,
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Source pixel index and validity for every output position of a crop at ``offsets`` into the padded image."""
    positions = offsets[:, None] - padding + torch.arange(size, device=offsets.device)
    if pad_mode == "reflect":
        positions = positions.abs()
        positions = torch.where(positions >= size, 2 * (size - 1) - positions, positions)
        return positions, torch.ones_like(positions, dtype=torch.bool)
    valid = (positions >= 0) & (positions < size)
    return positions.clamp(0, size - 1), valid


@dataclass(frozen=True)
class Draws:
    """The random choices of one epoch's augmentation, one entry per sample of the dataset.

    Drawn for the whole dataset at the start of an epoch and indexed by sample, so what a sample gets does not depend
    on which batch or which process it lands in (a distributed run augments exactly like a single process).
    """

    offsets_y: torch.Tensor               # (N,) crop offset into the padded image, 0 .. 2 * padding
    offsets_x: torch.Tensor               # (N,)
    flip: Optional[torch.Tensor]          # (N,) bool, or None for no flips
    hole_centres: Optional[torch.Tensor]  # (N, holes, 2) Cutout centres (row, column), or None for no Cutout

    def __getitem__(self, indices: torch.Tensor) -> "Draws":
        return Draws(self.offsets_y[indices], self.offsets_x[indices],
                     None if self.flip is None else self.flip[indices],
                     None if self.hole_centres is None else self.hole_centres[indices])


def draw_augmentation(count: int, *, height: int, width: int, crop_padding: int, flip: str, cutout: int,
                      cutout_holes: int, epoch: int, flip_base: Optional[torch.Tensor], generator: torch.Generator,
                      device: torch.device) -> Draws:
    """Draw one epoch's crop offsets, flips and Cutout centres for ``count`` samples.

    Flips: ``"random"`` mirrors each sample with probability 1/2; ``"alternate"`` mirrors sample i on the epochs where
    ``flip_base[i]`` XOR (epoch is odd), so every image is seen both ways in any two consecutive epochs (airbench's
    alternating flip); ``"none"`` never mirrors.
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"flip must be one of {FLIP_MODES}, got {flip!r}")
    offsets = torch.randint(2 * crop_padding + 1, (2, count), generator=generator, device=device)
    flips = None
    if flip == "random":
        flips = torch.rand(count, generator=generator, device=device) < 0.5
    elif flip == "alternate":
        flips = flip_base ^ bool(epoch % 2)
    centres = None
    if cutout:
        size = torch.tensor([height, width], device=device)
        centres = (torch.rand(count, cutout_holes, 2, generator=generator, device=device) * size).long()
    return Draws(offsets[0], offsets[1], flips, centres)


def augment_batch(images: torch.Tensor, draws: Draws, *, crop_padding: int = 4, pad_mode: str = "zeros",
                  cutout: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Crop (from the image padded by ``crop_padding``) and flip every sample as ``draws`` say, in one gather.

    Args:
        images: uint8 batch.
        draws: This batch's random choices (:func:`draw_augmentation`, indexed by the batch's samples).
        crop_padding: Padding of the crop; 0 disables cropping.
        pad_mode: ``"zeros"`` (torchvision's RandomCrop) or ``"reflect"``.
        cutout: Side of the Cutout holes; 0 disables Cutout.

    Returns:
        The augmented uint8 images, laid out channels-last in memory, and a (B, 1, H, W) keep-mask (0 where a
        zero-padded border or a Cutout hole must be blanked once the images are floats).

    Shape:
        - images: (B, C, H, W)
        - Output: (B, C, H, W) and (B, 1, H, W)
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    batch, _, height, width = images.shape
    rows, rows_valid = _source_positions(draws.offsets_y, height, crop_padding, pad_mode)
    cols, cols_valid = _source_positions(draws.offsets_x, width, crop_padding, pad_mode)
    if draws.flip is not None:
        cols = torch.where(draws.flip[:, None], cols.flip(1), cols)
        cols_valid = torch.where(draws.flip[:, None], cols_valid.flip(1), cols_valid)
    samples = torch.arange(batch, device=images.device)
    # advanced indexing around the channel slice yields (B, H, W, C): channels-last memory for free
    out = images[samples[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    keep = rows_valid[:, :, None] & cols_valid[:, None, :]
    if cutout and draws.hole_centres is not None:
        for hole in draws.hole_centres.unbind(1):
            keep &= ~hole_mask(hole[:, 0], hole[:, 1], height, width, cutout)
    return out, keep[:, None]
