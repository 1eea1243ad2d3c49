"""Cutout geometry, and the batch augmentation against torchvision's per-image pipeline.

Images carry their own coordinates (channel 0 = row + 1, channel 1 = column + 1), so every augmented sample reveals
the crop offset and flip that produced it.
"""
import pytest
import torch
from torchvision import transforms

from cifar10_recipe.augment import Cutout, Draws, augment_batch, cutout_mask, draw_augmentation, hole_mask
from cifar10_recipe.loaders import TensorLoader


def _coordinate_images(batch: int) -> torch.Tensor:
    grid = torch.arange(1, 33, dtype=torch.uint8)
    image = torch.stack([grid[:, None].expand(32, 32), grid[None, :].expand(32, 32), torch.full((32, 32), 200,
                         dtype=torch.uint8)])
    return image.expand(batch, 3, 32, 32).clone()


def _offsets_and_flips(augmented: torch.Tensor, padding: int = 4):
    """Crop offsets (0..2*padding) and flips recovered from augmented coordinate images (zero padding)."""
    rows, cols = augmented[:, 0].long(), augmented[:, 1].long()
    offsets_y, offsets_x, flips = [], [], []
    for sample_rows, sample_cols in zip(rows, cols, strict=True):
        valid_row = int((sample_rows[:, 16] > 0).nonzero()[0])
        offsets_y.append(int(sample_rows[valid_row, 16]) - 1 - valid_row + padding)
        line = sample_cols[16]
        valid = (line > 0).nonzero().flatten()
        flipped = bool(line[valid[-1]] < line[valid[0]])
        first = int(valid[-1]) if flipped else int(valid[0])
        position = 31 - first if flipped else first
        offsets_x.append(int(line[first]) - 1 - position + padding)
        flips.append(flipped)
    return torch.tensor(offsets_y), torch.tensor(offsets_x), torch.tensor(flips)


def test_hole_size_inside_and_clipped_at_borders():
    centres = torch.tensor([16, 0, 31, 5])
    masks = hole_mask(centres, torch.tensor([16, 0, 31, 30]), 32, 32, length=16)
    # full 16x16 square; corner (0,0): rows [-8, 8) -> 8x8; corner (31,31): rows [23, 39) -> 9x9; (5, 30): 13x10
    assert masks.sum(dim=(1, 2)).tolist() == [256, 64, 81, 130]
    assert masks[0, 8:24, 8:24].all() and masks[0].sum() == 256


def test_number_of_holes():
    torch.manual_seed(0)
    single = cutout_mask(2000, 32, 32, length=4, n_holes=1)
    double = cutout_mask(2000, 32, 32, length=4, n_holes=2)
    assert single.sum(dim=(1, 2)).max() == 16
    # two 4x4 holes cover up to 32 pixels, and more than one hole's worth on average
    assert double.sum(dim=(1, 2)).max() == 32 and double.float().sum(dim=(1, 2)).mean() > 16


def test_cutout_transform_zeroes_one_clipped_square():
    torch.manual_seed(0)
    image = torch.ones(3, 32, 32)
    out = Cutout(n_holes=1, length=16)(image)
    zero = out[0] == 0
    assert (zero == (out == 0).all(dim=0)).all()  # same hole on every channel
    rows, cols = zero.any(dim=1).sum(), zero.any(dim=0).sum()
    assert 8 <= rows <= 16 and 8 <= cols <= 16 and zero.sum() == rows * cols
    with pytest.raises(ValueError, match="n_holes"):
        Cutout(n_holes=0)


def _expected_coverage(length: int, size: int = 32) -> float:
    per_axis = sum(min(c + length // 2, size) - max(c - length // 2, 0) for c in range(size)) / size
    return (per_axis / size) ** 2


def test_cutout_coverage_matches_the_analytic_expectation():
    generator = torch.Generator().manual_seed(0)
    coverage = cutout_mask(20_000, 32, 32, 16, generator=generator).float().mean()
    assert abs(coverage - _expected_coverage(16)) < 0.005


def _draws(count: int, epoch: int = 0, flip: str = "random", cutout: int = 0, seed: int = 0,
           flip_base=None, crop_padding: int = 4) -> Draws:
    return draw_augmentation(count, height=32, width=32, crop_padding=crop_padding, flip=flip, cutout=cutout,
                             cutout_holes=1,
                             epoch=epoch, flip_base=flip_base, generator=torch.Generator().manual_seed(seed),
                             device=torch.device("cpu"))


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
def test_batch_crop_and_flip_equal_the_per_sample_reference(pad_mode):
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    draws = _draws(64, cutout=8)
    out, keep = augment_batch(images, draws, crop_padding=4, pad_mode=pad_mode, cutout=8)
    padding = {"zeros": "constant", "reflect": "reflect"}[pad_mode]
    for i in range(64):
        reference = torch.nn.functional.pad(images[i].float(), (4, 4, 4, 4), mode=padding)
        y, x = int(draws.offsets_y[i]), int(draws.offsets_x[i])
        reference = reference[:, y:y + 32, x:x + 32]
        if draws.flip[i]:
            reference = reference.flip(2)
        holes = hole_mask(draws.hole_centres[i:i + 1, 0, 0], draws.hole_centres[i:i + 1, 0, 1], 32, 32, 8)[0]
        reference = reference.masked_fill(holes, 0)
        torch.testing.assert_close((out[i] * keep[i]).float(), reference, atol=0, rtol=0)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_batch_augmentation_matches_torchvision_statistics_per_sample():
    count = 9000
    batch, keep = augment_batch(_coordinate_images(count), _draws(count), crop_padding=4)
    batch = batch * keep
    torchvision_pipeline = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.RandomCrop(32, 4)])
    torch.manual_seed(0)
    image = _coordinate_images(1)[0]
    reference = torch.stack([torchvision_pipeline(image) for _ in range(count)])
    for augmented in (batch, reference):
        offsets_y, offsets_x, flips = _offsets_and_flips(augmented)
        for offsets in (offsets_y, offsets_x):
            frequencies = torch.bincount(offsets, minlength=9).float() / count
            assert len(frequencies) == 9 and (frequencies - 1 / 9).abs().max() < 0.02
        assert abs(flips.float().mean() - 0.5) < 0.02
    # per sample: the first 100 samples of one batch do not share one offset or one flip
    offsets_y, _, flips = _offsets_and_flips(batch[:100])
    assert len(offsets_y.unique()) == 9 and 0 < flips.sum() < 100


def test_batch_cutout_coverage_matches_the_per_image_transform():
    count = 20_000
    _, keep = augment_batch(torch.zeros(count, 1, 32, 32, dtype=torch.uint8),
                            _draws(count, cutout=16, crop_padding=0), crop_padding=0, cutout=16)
    assert abs((1 - keep.float().mean()) - _expected_coverage(16)) < 0.005


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    base = torch.rand(1000, generator=torch.Generator().manual_seed(0)) < 0.5
    even = _draws(1000, epoch=4, flip="alternate", flip_base=base).flip
    odd = _draws(1000, epoch=5, flip="alternate", flip_base=base).flip
    assert torch.equal(even, ~odd) and abs(even.float().mean() - 0.5) < 0.05
    assert _draws(10, flip="none").flip is None
    with pytest.raises(ValueError, match="flip must be one of"):
        _draws(10, flip="sometimes")


def test_tensor_loader_normalises_shards_and_reproduces_epochs():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(100)
    common = dict(batch_size=10, device=torch.device("cpu"), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                  cutout=8, seed=3)
    test_loader = TensorLoader(images, labels, train=False, **common)
    first_images, first_labels = next(iter(test_loader))
    torch.testing.assert_close(first_images, (images[:10].float() / 255 - 0.5) / 0.25)
    assert torch.equal(first_labels, labels[:10]) and len(test_loader) == 10

    loader = TensorLoader(images, labels, train=True, **common)
    loader.set_epoch(2)
    epoch_a = [batch for batch in loader]
    epoch_b = [batch for batch in loader]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch_a, epoch_b, strict=True))
    assert sorted(torch.cat([labels for _, labels in epoch_a]).tolist()) == list(range(100))
    loader.set_epoch(3)
    assert not torch.equal(next(iter(loader))[1], epoch_a[0][1])

    # two ranks with batch 5 each see exactly the single-process batches of 10
    ranks = [TensorLoader(images, labels, train=True, rank=r, world_size=2, drop_last=True,
                          **{**common, "batch_size": 5}) for r in range(2)]
    for rank_loader in ranks:
        rank_loader.set_epoch(2)
    for (_, single), (_, rank0), (_, rank1) in zip(epoch_a, *ranks, strict=True):
        assert sorted(single.tolist()) == sorted(rank0.tolist() + rank1.tolist())


@pytest.mark.parametrize("count,batch_size,world_size,drop_last", [
    (100, 10, 1, False), (103, 10, 1, False), (103, 10, 2, True), (103, 7, 3, False), (5, 8, 2, True)])
def test_loader_length_is_the_number_of_batches_it_yields(count, batch_size, world_size, drop_last):
    images = torch.zeros(count, 3, 32, 32, dtype=torch.uint8)
    for rank in range(world_size):
        loader = TensorLoader(images, torch.arange(count), batch_size=batch_size, train=True,
                              device=torch.device("cpu"), mean=(0.5,) * 3, std=(0.25,) * 3, rank=rank,
                              world_size=world_size, drop_last=drop_last)
        assert len(loader) == sum(1 for _ in loader)
