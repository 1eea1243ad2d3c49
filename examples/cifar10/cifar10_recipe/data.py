"""CIFAR-10 in torchvision's standard layout (``cifar-10-batches-py/``): find it, load it safely, validate it.

Copies whose md5 sums differ from torchvision's list (re-encoded or rebuilt copies, such as the project machines'
local one) load fine: we validate what matters (keys, shapes, dtypes, label range, counts) instead. The md5 check
runs only when downloading. The pickle files are read with a restricted unpickler that admits numpy arrays and plain
containers only, so a crafted batch file cannot run code.
"""
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGES_PER_FILE = 10_000
_PIXELS = 3 * 32 * 32

# (module, name) pairs a CIFAR-10 batch pickle may reference: numpy's array reconstruction, and the codec call with
# which Python 3 writes bytes into protocol-2 pickles (torch's weights_only unpickler admits it too); nothing else
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),
}


class DatasetError(RuntimeError):
    """CIFAR-10 is missing or malformed; the message says where we looked and how to fix it."""


@dataclass(frozen=True)
class Cifar10:
    """The whole dataset as uint8 tensors, images (N, 3, 32, 32) and labels (N,) int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    root: Path

    def subset(self, train: int = 0, test: int = 0) -> "Cifar10":
        """A fixed random selection of ``train`` training and ``test`` test images (0 keeps all), for quick runs.

        Random rather than the first N, because some copies (the local one) store the test set class by class.
        """
        for flag, keep, count in (("--subset", train, len(self.train_labels)),
                                  ("--test-subset", test, len(self.test_labels))):
            if keep > count:
                raise DatasetError(f"{flag} {keep} asks for more images than the {count} in {self.root}")

        def pick(count: int, keep: int, seed: int):
            return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:keep] if keep else slice(None)

        train_index = pick(len(self.train_labels), train, seed=0)
        test_index = pick(len(self.test_labels), test, seed=1)
        return Cifar10(self.train_images[train_index], self.train_labels[train_index],
                       self.test_images[test_index], self.test_labels[test_index], self.root)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch file")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def restricted_load(data: bytes) -> object:
    """Unpickle ``data`` admitting only numpy arrays, dtypes and plain Python containers."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def resolve_root(data_dir: Optional[str]) -> Tuple[Path, str]:
    """The folder to read: ``data_dir`` if given, else ``$CIFAR10_ROOT`` if set, else ``./data``.

    Returns the folder and a description of where it came from, for error messages.
    """
    if data_dir:
        return Path(data_dir), "--data-dir"
    if os.environ.get("CIFAR10_ROOT"):
        return Path(os.environ["CIFAR10_ROOT"]), "$CIFAR10_ROOT"
    return Path("data"), "the default ./data (no --data-dir given and $CIFAR10_ROOT unset)"


def _batch_folder(root: Path) -> Path:
    # accept both the root that holds cifar-10-batches-py/ and that folder itself
    return root if root.name == BATCH_FOLDER else root / BATCH_FOLDER


def _read_batch(path: Path, hint: str) -> Tuple[np.ndarray, np.ndarray]:
    def bad(problem: str) -> DatasetError:
        return DatasetError(f"CIFAR-10 file {path} is malformed: {problem}. {hint}")

    if not path.is_file():
        raise DatasetError(f"CIFAR-10 file {path} is missing. {hint}")
    try:
        batch = restricted_load(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise bad(f"it cannot be read as a CIFAR-10 pickle ({error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise bad("expected a dict with 'data' and 'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (IMAGES_PER_FILE, _PIXELS):
        shape = getattr(data, "shape", None)
        raise bad(f"expected 'data' as a uint8 array of shape ({IMAGES_PER_FILE}, {_PIXELS}), got "
                  f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}")
    if not isinstance(labels, list) or len(labels) != IMAGES_PER_FILE:
        raise bad(f"expected 'labels' as a list of {IMAGES_PER_FILE} ints")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(CLASSES):
        raise bad(f"labels must be integers in [0, {len(CLASSES) - 1}]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _load_split(folder: Path, files: Tuple[str, ...], hint: str) -> Tuple[torch.Tensor, torch.Tensor]:
    images: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    for name in files:
        batch_images, batch_labels = _read_batch(folder / name, hint)
        images.append(batch_images)
        labels.append(batch_labels)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def load_cifar10(data_dir: Optional[str] = None, download: bool = False) -> Cifar10:
    """Find, optionally download, load and validate CIFAR-10.

    Args:
        data_dir: Folder holding ``cifar-10-batches-py/`` (or that folder itself); see :func:`resolve_root`.
        download: Download with torchvision (md5-checked) when the files are not there.

    Returns:
        The dataset as uint8 tensors.

    Raises:
        DatasetError: The files are missing or malformed; the message names the path and the remedy.
    """
    root, source = resolve_root(data_dir)
    folder = _batch_folder(root)
    if download and not (folder / TEST_FILE).is_file():
        from torchvision.datasets import CIFAR10

        try:
            for train in (True, False):
                CIFAR10(str(root), train=train, download=True)
        except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError; a bad md5 a RuntimeError
            raise DatasetError(f"--download could not fetch CIFAR-10 into {root} ({error}). Without network access, "
                               f"copy {BATCH_FOLDER}/ there by hand or pass --data-dir pointing at a copy.") from None
    hint = (f"Looked in {folder} (from {source}). Pass --data-dir pointing at the folder that holds "
            f"{BATCH_FOLDER}/, set $CIFAR10_ROOT, or add --download to fetch it.")
    if not folder.is_dir():
        raise DatasetError(f"CIFAR-10 not found: {folder} does not exist. {hint}")
    train_images, train_labels = _load_split(folder, TRAIN_FILES, hint)
    test_images, test_labels = _load_split(folder, (TEST_FILE,), hint)
    return Cifar10(train_images, train_labels, test_images, test_labels, root.resolve())
