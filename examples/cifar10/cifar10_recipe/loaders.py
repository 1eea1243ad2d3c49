"""Batch iterators over CIFAR-10 that yield normalised (images, labels) on the training device.

Two interchangeable loaders, both with ``set_epoch(epoch)`` and ``len()``:

- :class:`TorchvisionLoader`: the coursework's path, PIL transforms per image in DataLoader worker processes.
- :class:`TensorLoader`: the dataset stays on the device as uint8; whole batches are cropped, flipped and cut out
  there with per-sample randomness (:func:`~cifar10_recipe.augment.augment_batch`), with no worker processes.

Every epoch's randomness comes from a generator seeded with (seed, epoch), so a run resumed at an epoch boundary
sees exactly the batches an uninterrupted run sees, without snapshotting RNG states; ``set_epoch(epoch, start_batch)``
resumes inside an epoch, at the batch an uninterrupted run would yield next. Both loaders shard their
epoch order across ``world_size`` processes for distributed training.
"""
import math
import os
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .augment import augment_batch, draw_augmentation, torchvision_transforms
from .config import NORMALIZATIONS, TrainConfig
from .data import Cifar10
from .distributed import SINGLE_PROCESS, Distributed

Batch = Tuple[torch.Tensor, torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness (data order, augmentation, dropout)."""
    return seed * 1_000_003 + epoch


def _shard(order: torch.Tensor, batch_size: int, drop_last: bool, rank: int, world_size: int) -> torch.Tensor:
    """This rank's part of an epoch order.

    Global batch b holds ``order[b * G:(b + 1) * G]`` with G = batch_size * world_size; taking every world_size-th
    element gives each rank ``batch_size`` of them, so the ranks' consecutive batches together are exactly the
    single-process batches of size G.
    """
    if drop_last:
        global_batch = batch_size * world_size
        order = order[:len(order) // global_batch * global_batch]
    return order[rank::world_size]


def _shard_length(count: int, batch_size: int, drop_last: bool, rank: int, world_size: int) -> int:
    """``len(_shard(order of count samples, ...))``, by arithmetic."""
    if drop_last:
        global_batch = batch_size * world_size
        count = count // global_batch * global_batch
    return len(range(rank, count, world_size))


class TensorLoader:
    """Device-resident CIFAR-10 loader with per-sample batch augmentation.

    Args:
        images: uint8 images, (N, 3, H, W); moved to ``device`` once.
        labels: int64 labels, (N,).
        batch_size: Images per batch and process.
        train: Shuffle and augment (else keep order, no augmentation, keep the last partial batch).
        device: Where the data lives and the batches are produced.
        mean: Per-channel mean for normalisation (in [0, 1] units).
        std: Per-channel std for normalisation.
        crop_padding: Random-crop padding; 0 disables.
        pad_mode: ``"zeros"`` or ``"reflect"``.
        flip: ``"random"``, ``"alternate"`` or ``"none"``.
        cutout: Cutout hole side; 0 disables.
        cutout_holes: Holes per image.
        channels_last: Yield channels-last batches (free: the augmentation gather produces that layout).
        seed: Base seed of every epoch's randomness.
        drop_last: Drop the last partial batch of a training epoch.
        rank: This process's index in distributed training.
        world_size: Number of processes; each gets ``batch_size`` images of every global batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, train: bool,
                 device: torch.device, mean: Sequence[float], std: Sequence[float], crop_padding: int = 4,
                 pad_mode: str = "zeros", flip: str = "random", cutout: int = 0, cutout_holes: int = 1,
                 channels_last: bool = False, seed: int = 0, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.train = train
        self.device = device
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, -1, 1, 1)
        self.shift = (torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, -1, 1, 1)
        self.crop_padding = crop_padding
        self.pad_mode = pad_mode
        self.flip = flip
        self.cutout = cutout
        self.cutout_holes = cutout_holes
        self.channels_last = channels_last
        self.seed = seed
        self.drop_last = drop_last and train
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        base = torch.Generator(device=device).manual_seed(seed)
        self.flip_base = torch.rand(len(self.labels), generator=base, device=device) < 0.5

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``'s batches from ``start_batch`` on (the earlier ones are skipped,
        not drawn differently)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return math.ceil(_shard_length(len(self.labels), self.batch_size, self.drop_last, self.rank,
                                       self.world_size) / self.batch_size)

    def _normalise(self, images: torch.Tensor, keep: Optional[torch.Tensor]) -> torch.Tensor:
        x = images.float()
        if keep is not None:
            x = x * keep
        x = x * self.scale - self.shift
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    def __iter__(self) -> Iterator[Batch]:
        generator = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, self.epoch))
        count = len(self.labels)
        if self.train:
            order = torch.randperm(count, generator=generator, device=self.device)
            draws = draw_augmentation(
                count, height=self.images.shape[2], width=self.images.shape[3], crop_padding=self.crop_padding,
                flip=self.flip, cutout=self.cutout, cutout_holes=self.cutout_holes, epoch=self.epoch,
                flip_base=self.flip_base, generator=generator, device=self.device)
        else:
            order = torch.arange(count, device=self.device)
        order = _shard(order, self.batch_size, self.drop_last, self.rank, self.world_size)
        # not order.split: it yields one empty batch if empty
        for start in range(self.start_batch * self.batch_size, len(order), self.batch_size):
            indices = order[start:start + self.batch_size]
            images, keep = self.images[indices], None
            if self.train:
                images, keep = augment_batch(images, draws[indices], crop_padding=self.crop_padding,
                                             pad_mode=self.pad_mode, cutout=self.cutout)
            yield self._normalise(images, keep), self.labels[indices]


class _ImageDataset(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())  # HWC for PIL
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


class _ShardedRandomSampler(torch.utils.data.Sampler):
    def __init__(self, count: int, train: bool, generator: torch.Generator, batch_size: int, drop_last: bool,
                 rank: int, world_size: int):
        self.count, self.train, self.generator = count, train, generator
        self.batch_size, self.drop_last, self.rank, self.world_size = batch_size, drop_last, rank, world_size

    def _order(self) -> torch.Tensor:
        order = torch.randperm(self.count, generator=self.generator) if self.train else torch.arange(self.count)
        return _shard(order, self.batch_size, self.drop_last, self.rank, self.world_size)

    def __iter__(self):
        return iter(self._order().tolist())

    def __len__(self) -> int:
        return _shard_length(self.count, self.batch_size, self.drop_last, self.rank, self.world_size)


class TorchvisionLoader:
    """The coursework's loader: torchvision transforms per PIL image in ``workers`` DataLoader processes.

    Args: as :class:`TensorLoader`, plus ``workers`` (DataLoader worker processes) and ``persistent_workers``
    (keep workers alive across epochs: faster, but then a resumed run's augmentation differs from an
    uninterrupted one's, so deterministic runs restart them every epoch).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, train: bool,
                 device: torch.device, mean: Sequence[float], std: Sequence[float], crop_padding: int = 4,
                 pad_mode: str = "zeros", flip: str = "random", cutout: int = 0, cutout_holes: int = 1,
                 channels_last: bool = False, seed: int = 0, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1, workers: int = 4, persistent_workers: bool = True):
        if pad_mode != "zeros" or flip not in ("random", "none"):
            raise ValueError("the torchvision loader supports pad_mode='zeros' and flip 'random' or 'none' only; "
                             f"got pad_mode={pad_mode!r}, flip={flip!r} (use --loader tensor)")
        train_transform, test_transform = torchvision_transforms(
            mean, std, crop_padding=crop_padding, flip=flip == "random", cutout=cutout, cutout_holes=cutout_holes)
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0
        self.device = device
        self.channels_last = channels_last
        self.generator = torch.Generator()
        dataset = _ImageDataset(images, labels, train_transform if train else test_transform)
        sampler = _ShardedRandomSampler(len(dataset), train, self.generator, batch_size, drop_last and train,
                                        rank, world_size)
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=self.generator,
            pin_memory=device.type == "cuda", drop_last=drop_last and train,
            persistent_workers=persistent_workers and workers > 0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next iteration epoch ``epoch``'s batches from ``start_batch`` on; the earlier ones are drawn and
        dropped, so the workers' random streams stay those of an uninterrupted epoch."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        # seeds the sampler's order and the workers' base seed; with workers=0 the transforms draw from the
        # global RNG, which the trainer seeds per epoch
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for index, (images, labels) in enumerate(self.loader):
            if index < self.start_batch:
                continue
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=memory_format)
            yield images, labels.to(self.device, non_blocking=True)


Loader = Union[TensorLoader, TorchvisionLoader]


#: The most DataLoader workers the recipe starts by default (the coursework's choice).
MAX_DEFAULT_WORKERS = 4


def default_workers(world_size: int = 1) -> int:
    """DataLoader workers per process when ``--workers`` is not given: up to :data:`MAX_DEFAULT_WORKERS`, but no
    more than the CPUs this process may use shared among the ``world_size`` processes (PyTorch warns beyond that,
    and on a 2-core machine 4 workers only contend with the training process)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_DEFAULT_WORKERS, cpus // max(world_size, 1))


def build_loaders(config: TrainConfig, data: Cifar10, device: torch.device,
                  distributed: Distributed = SINGLE_PROCESS) -> Tuple[Loader, Loader]:
    """The train and test loaders ``config`` describes; with several processes each gets its share of every global
    batch. Images are normalised with ``--normalization``'s mean and std."""
    mean, std = NORMALIZATIONS[config.normalization]
    common = dict(device=device, mean=mean, std=std, crop_padding=config.crop_padding, pad_mode=config.pad_mode,
                  flip=config.flip, cutout=config.cutout, cutout_holes=config.cutout_holes,
                  channels_last=config.channels_last, seed=config.seed, rank=distributed.rank,
                  world_size=distributed.world_size)
    if config.loader == "torchvision":
        loader_cls = TorchvisionLoader
        workers = default_workers(distributed.world_size) if config.workers is None else config.workers
        common.update(workers=workers, persistent_workers=not config.deterministic)
    else:
        loader_cls = TensorLoader
    batch_size = config.batch_size // distributed.world_size
    # processes must run the same number of steps, so a distributed epoch drops its last partial global batch
    train = loader_cls(data.train_images, data.train_labels, batch_size=batch_size, train=True,
                       drop_last=distributed.enabled, **common)
    test = loader_cls(data.test_images, data.test_labels, batch_size=max(batch_size, 500), train=False, **common)
    return train, test
