"""docs/own_data.rst's plain PyTorch loop, run as written on a tiny ImageFolder of two learnable classes."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SNIPPET = Path(__file__).resolve().parents[1] / "docs" / "snippets" / "own_data_loop.py"


def _image_folder(root: Path) -> Path:
    """Two classes of 48x48 images (resized to 32 by the loop): dark and bright, 24 each."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(("dark", "bright")):
        (root / name).mkdir(parents=True)
        for number in range(24):
            pixels = rng.integers(0, 100, (48, 48, 3)) + 150 * index
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{number}.png")
    return root


@pytest.mark.slow
def test_the_plain_loop_trains_on_an_image_folder(tmp_path):
    folder = _image_folder(tmp_path / "images")
    result = subprocess.run([sys.executable, str(SNIPPET), str(folder), "3"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    losses = [float(line.split("loss ")[1]) for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(losses) == 3 and (tmp_path / "model.pt").is_file()
