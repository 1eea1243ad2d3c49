"""Copy finished runs' final weights and records into one folder, small enough to bring back from a lent GPU.

    python examples/cifar10/collect_weights.py /tmp/dynconv-coursework/seed0 --out $OUT/weights --half

Each run becomes ``<out>/<run name>/`` with ``config.json``, ``metrics.jsonl``, ``summary.json`` and
``checkpoints/`` holding its final weights (float16 with ``--half``: the coursework model is 77 MB in float32) and
the manifest, the layout of a run folder, so ``ship_weights.py`` ships it like a local run. Unfinished runs are
skipped with a message.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import List, Optional

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .checkpoint import MANIFEST

RECORD_FILES = ("config.json", "metrics.jsonl", "summary.json")


def collect(run_dir: Path, out: Path, half: bool) -> bool:
    """Copy one finished run; False (and a message) if it has no summary or no checkpoint."""
    manifest_path = run_dir / "checkpoints" / MANIFEST
    if not (run_dir / "summary.json").is_file() or not manifest_path.is_file():
        print(f"{run_dir}: not finished, skipped", flush=True)
        return False
    manifest = json.loads(manifest_path.read_text())
    source = run_dir / "checkpoints" / manifest["weights"]
    with safe_open(str(source), framework="pt") as file:
        metadata = file.metadata()
    weights = load_file(str(source))
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    target = out / run_dir.name
    (target / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_file(weights, str(target / "checkpoints" / manifest["weights"]), metadata=metadata)
    (target / "checkpoints" / MANIFEST).write_text(json.dumps(manifest))
    for name in RECORD_FILES:
        shutil.copy2(run_dir / name, target / name)
    size = sum(v.numel() * v.element_size() for v in weights.values()) / 1e6
    print(f"{run_dir} -> {target} ({size:.1f} MB of weights)", flush=True)
    return True


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--half", action="store_true", help="store floating-point weights as float16")
    args = parser.parse_args(argv)
    collected = [collect(run_dir, args.out, args.half) for run_dir in args.run_dirs]
    return 0 if any(collected) else 1


if __name__ == "__main__":
    sys.exit(main())
