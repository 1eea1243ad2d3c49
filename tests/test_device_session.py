"""tools/device_session.sh, dry-run on the CPU at a tiny size so that its stages cannot rot between lent GPUs.

The anchor stage runs the airbench package's own train94 through benchmarks/airbench_anchor.py (its full-length
numbers are records under benchmarks/results/).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _session(stages: str, out: Path, fake_cifar_root: Path, **env) -> str:
    environment = {**os.environ, "STAGES": stages, "OUT": str(out), "DEVICE": "cpu", "PYTHON": sys.executable,
                   "CIFAR10_ROOT": str(fake_cifar_root), **env}
    result = subprocess.run(["bash", str(ROOT / "tools" / "device_session.sh")], env=environment, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return (out / "session.log").read_text()


def test_the_anchor_stage_trains_airbench94_and_writes_its_record(fake_cifar_root, tmp_path):
    pytest.importorskip("airbench")
    log = _session("anchor", tmp_path / "out", fake_cifar_root,
                   ANCHOR_ARGS="--epochs 1 --subset 1024 --test-subset 200")
    assert "== stage anchor: exit 0" in log, log
    record = json.loads((tmp_path / "out" / "airbench94_cpu.json").read_text())
    run = record["runs"][0]
    # one 1024-image step only (seconds on 2 cores): the plumbing is what is tested here
    assert 0 <= run["test_acc"] <= 1 and 0 <= run["test_acc_tta"] <= 1 and run["train_s"] > 0 and run["eval_s"] > 0
    assert record["epochs"] == 1 and record["subset"] == 1024 and record["precision"] in ("float32", "bf16")
    assert record["provenance"]["command"].startswith("python benchmarks/airbench_anchor.py --device cpu")


def test_the_preset_stage_trains_and_collects_weights(fake_cifar_root, tmp_path):
    """The airbench94 stage (our reproduction beside the anchor) on a few images; the fast stages run the same script
    (examples/cifar10/gpu_fast.sh) with another preset, each of which the recipe's own tests train."""
    out = tmp_path / "out"
    log = _session("airbench94", out, fake_cifar_root, AIRBENCH94_RUNS="2", AIRBENCH94_S="300",
                   EXTRA_ARGS="--subset 64 --test-subset 32 --epochs 1 --batch-size 32 --warmup-epochs 0.5")
    assert "== stage airbench94: exit 0" in log, log
    record = json.loads((out / "airbench94.json").read_text())
    assert (record["preset"], record["model"], record["runs"]) == ("airbench94", "dynconv_cifar_fast_static", 2)
    assert any((out / "weights" / "airbench94").rglob("*.safetensors"))
