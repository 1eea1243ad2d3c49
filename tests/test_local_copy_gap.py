"""tools/local_copy_gap.py: shipped weights on the same images held two ways."""
import pytest
import torch

from tools.local_copy_gap import compare, markdown

WEIGHTS = "dynconv_cifar_tiny_static.cpu_cifar10local"


def _images(count: int = 40) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_the_same_pixels_twice_agree_everywhere():
    images, labels = _images(), torch.arange(40) % 10
    row = compare([WEIGHTS], images, images.clone(), labels)[WEIGHTS]
    assert row["agreement"] == 1.0 and row["original_acc"] == row["jpeg_acc"]


def test_changed_pixels_change_answers_and_the_table_shows_the_difference():
    images, labels = _images(), torch.arange(40) % 10
    inverted = 255 - images
    row = compare([WEIGHTS], images, inverted, labels)[WEIGHTS]
    assert row["agreement"] < 1.0
    record = {"images": 40, "mean_abs_difference": 127.5, "results": {WEIGHTS: row},
              "provenance": {"command": "python tools/local_copy_gap.py", "commit": "0" * 40}}
    assert f"{100 * (row['original_acc'] - row['jpeg_acc']):+.2f}" in markdown(record)


def test_copies_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        compare([WEIGHTS], _images(40), _images(30), torch.arange(40) % 10)
