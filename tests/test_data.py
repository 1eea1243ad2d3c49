"""Finding, validating and safely loading CIFAR-10 files."""
import os
import pickle

import numpy as np
import pytest
import torch

from cifar10_recipe.data import DatasetError, load_cifar10, resolve_root


@pytest.fixture
def cifar_copy(fake_cifar_root, tmp_path):
    """A private view of the fake dataset (links to its files) that a test may damage with :func:`_replace`."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for source in (fake_cifar_root / "cifar-10-batches-py").iterdir():
        (folder / source.name).symlink_to(source)
    return tmp_path


def _replace(path, data: bytes) -> None:
    """Write ``data`` in place of the link ``path`` (never through it into the shared dataset)."""
    path.unlink()
    path.write_bytes(data)


def test_loads_counts_shapes_and_dtypes(fake_cifar_root):
    data = load_cifar10(str(fake_cifar_root))
    assert data.train_images.shape == (50_000, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10_000, 3, 32, 32)
    assert data.train_labels.dtype == torch.int64 and int(data.train_labels.max()) <= 9
    # the batches folder itself is accepted too
    assert len(load_cifar10(str(fake_cifar_root / "cifar-10-batches-py")).test_labels) == 10_000


def test_subset_is_a_fixed_random_selection(fake_cifar_root):
    data = load_cifar10(str(fake_cifar_root))
    small, again = data.subset(100, 50), data.subset(100, 50)
    assert len(small.train_labels) == 100 and len(small.test_labels) == 50
    assert torch.equal(small.test_images, again.test_images)
    assert not torch.equal(small.test_images, data.test_images[:50])


def test_root_comes_from_flag_then_environment_then_default(monkeypatch):
    monkeypatch.setenv("CIFAR10_ROOT", "/from/env")
    assert resolve_root("/from/flag")[0].as_posix() == "/from/flag"
    assert resolve_root(None)[0].as_posix() == "/from/env"
    monkeypatch.delenv("CIFAR10_ROOT")
    assert resolve_root(None)[0].as_posix() == "data"


def test_missing_folder_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DatasetError) as error:
        load_cifar10(str(tmp_path / "nowhere"))
    message = str(error.value)
    assert "not found" in message and str(tmp_path / "nowhere") in message
    assert "--data-dir" in message and "$CIFAR10_ROOT" in message and "--download" in message


def test_missing_file(cifar_copy):
    os.remove(cifar_copy / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        load_cifar10(str(cifar_copy))


def test_truncated_file(cifar_copy):
    path = cifar_copy / "cifar-10-batches-py" / "data_batch_2"
    _replace(path, path.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="data_batch_2 is malformed: it cannot be read"):
        load_cifar10(str(cifar_copy))


def _rewrite(path, changes):
    with open(path, "rb") as file:
        batch = pickle.load(file, encoding="bytes")
    batch.update(changes)
    _replace(path, pickle.dumps(batch, protocol=2))


def test_wrong_array_shape(cifar_copy):
    _rewrite(cifar_copy / "cifar-10-batches-py" / "test_batch", {b"data": np.zeros((10_000, 1024), np.uint8)})
    with pytest.raises(DatasetError, match=r"test_batch is malformed: expected 'data' .* shape \(10000, 3072\)"):
        load_cifar10(str(cifar_copy))


def test_wrong_dtype(cifar_copy):
    _rewrite(cifar_copy / "cifar-10-batches-py" / "test_batch", {b"data": np.zeros((10_000, 3072), np.float32)})
    with pytest.raises(DatasetError, match="uint8"):
        load_cifar10(str(cifar_copy))


def test_label_out_of_range(cifar_copy):
    _rewrite(cifar_copy / "cifar-10-batches-py" / "data_batch_1", {b"labels": [10] * 10_000})
    with pytest.raises(DatasetError, match=r"labels must be integers in \[0, 9\]"):
        load_cifar10(str(cifar_copy))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_crafted_batch_file_cannot_run_code(cifar_copy, monkeypatch):
    monkeypatch.chdir(cifar_copy)
    path = cifar_copy / "cifar-10-batches-py" / "data_batch_1"
    _replace(path, pickle.dumps({b"data": _RunsCode(), b"labels": []}, protocol=2))
    with pytest.raises(DatasetError, match="'posix.system' is not allowed"):
        load_cifar10(str(cifar_copy))
    assert not (cifar_copy / "pwned").exists()
