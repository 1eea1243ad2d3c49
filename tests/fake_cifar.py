"""Write a small, learnable stand-in for CIFAR-10 in torchvision's on-disk layout."""
import pickle
from pathlib import Path

import numpy as np

IMAGES_PER_FILE = 10_000


def write_fake_cifar10(root: Path, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py/`` with 50000 training and 10000 test images.

    Each class has its own mean colour and a bright square at a class-specific place, plus noise, so a small model
    learns it within a few hundred images. Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    colours = rng.integers(40, 215, size=(10, 3, 1, 1), dtype=np.int16)
    noise = rng.integers(-40, 40, size=(500, 3, 32, 32), dtype=np.int16)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, size=IMAGES_PER_FILE)
        images = np.clip(colours[labels] + noise[rng.integers(0, len(noise), size=IMAGES_PER_FILE)], 0, 255)
        for label in range(10):
            y, x = divmod(label, 4)
            images[labels == label, :, 4 + 8 * y:8 + 8 * y, 4 + 8 * x:8 + 8 * x] = 255
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(),
                 b"data": images.astype(np.uint8).reshape(IMAGES_PER_FILE, -1), b"filenames": []}
        with open(folder / name, "wb") as file:
            pickle.dump(batch, file, protocol=2)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, file, protocol=2)
    return root
