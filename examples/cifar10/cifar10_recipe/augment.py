"""Augmentations: the coursework's torchvision pipeline, and the same operations on whole batches with per-sample
randomness, for a loader that keeps the dataset on the device and needs no worker processes.

Cutout: DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout", 2017,
https://arxiv.org/abs/1708.04552. A hole is a ``length`` x ``length`` square centred on a uniformly drawn pixel and
clipped at the image borders, so holes near a border are smaller. Both pipelines draw holes with :func:`cutout_mask`.

torchvision.transforms.v2 applied to a batched tensor draws one random parameter for the whole batch; the batch path
here draws every crop offset, flip and hole per sample.
"""
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


def augment_batch(images: torch.Tensor, *, crop_padding: int = 4, pad_mode: str = "zeros",
                  flip: Optional[torch.Tensor] = None, cutout: int = 0, cutout_holes: int = 1,
                  generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random crop (from the image padded by ``crop_padding``) and flip of every sample, in one gather.

    Args:
        images: uint8 batch.
        crop_padding: Padding of the random crop; 0 disables cropping.
        pad_mode: ``"zeros"`` (torchvision's RandomCrop) or ``"reflect"``.
        flip: Boolean (B,) tensor, True where the sample is mirrored; ``None`` for no flips.
        cutout: Side of the Cutout holes; 0 disables Cutout.
        cutout_holes: Holes per sample.
        generator: Source of randomness (on the images' device).

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
    device = images.device
    offsets_y = torch.randint(2 * crop_padding + 1, (batch,), generator=generator, device=device)
    offsets_x = torch.randint(2 * crop_padding + 1, (batch,), generator=generator, device=device)
    rows, rows_valid = _source_positions(offsets_y, height, crop_padding, pad_mode)
    cols, cols_valid = _source_positions(offsets_x, width, crop_padding, pad_mode)
    if flip is not None:
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        cols_valid = torch.where(flip[:, None], cols_valid.flip(1), cols_valid)
    samples = torch.arange(batch, device=device)
    # advanced indexing around the channel slice yields (B, H, W, C): channels-last memory for free
    out = images[samples[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    keep = rows_valid[:, :, None] & cols_valid[:, None, :]
    if cutout:
        keep &= ~cutout_mask(batch, height, width, cutout, cutout_holes, generator=generator, device=device)
    return out, keep[:, None]


def flip_decisions(indices: torch.Tensor, epoch: int, mode: str, base: Optional[torch.Tensor],
                   generator: Optional[torch.Generator] = None) -> Optional[torch.Tensor]:
    """Which samples to mirror this epoch.

    ``"random"`` flips each sample with probability 1/2; ``"alternate"`` mirrors image i on the epochs where
    ``base[i]`` XOR (epoch is odd), so every image is seen both ways in any two consecutive epochs (airbench's
    alternating flip); ``"none"`` never flips.
    """
    if mode == "none":
        return None
    if mode == "alternate":
        return base[indices] ^ bool(epoch % 2)
    if mode == "random":
        return torch.rand(len(indices), generator=generator, device=indices.device) < 0.5
    raise ValueError(f"flip must be one of {FLIP_MODES}, got {mode!r}")
