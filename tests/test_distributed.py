"""train.py under torchrun: 2 CPU processes with Gloo against one process with the same global batch."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar10_recipe.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # torchrun subprocesses

TRAIN_SCRIPT = Path(__file__).parents[1] / "examples" / "cifar10" / "train.py"
CRASHING_SCRIPT = Path(__file__).parent / "crashing_train.py"
TIMING_KEYS = {"elapsed_s", "train_s", "images_per_s"}
# float32 (no bf16), no dropout, synchronised BatchNorm: two processes must then compute what one process computes
ARGS = ["--preset", "tiny", "--amp", "none", "--subset", "1024", "--test-subset", "256",
        "--batch-size", "128", "--threads", "1", "--deterministic", "--progress", "off", "--sync-bn"]


def _torchrun(*args, script: Path = TRAIN_SCRIPT, launcher_args=(), **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             *launcher_args, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    return output


def _metrics(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_two_processes_match_one_process_with_the_same_global_batch(fake_cifar_root, tmp_path):
    # two steps only: training is chaotic enough that float rounding differences (even 1 vs 2 threads in one process)
    # grow to percent-level differences within a few hundred steps. After two steps the largest weight difference
    # is about 1e-4 with --sync-bn and 1e-2 without it, so the tolerance separates right from wrong.
    common = [*ARGS, "--data-dir", str(fake_cifar_root), "--epochs", "1", "--subset", "256", "--warmup-epochs", "0"]
    single = subprocess.run([sys.executable, str(TRAIN_SCRIPT), *common, "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stdout + single.stderr
    output = _finish(_torchrun(*common, "--out", str(tmp_path / "ddp")))
    assert output.count("epoch   1/1") == 1, "only the main process prints"
    single_weights, _ = load_checkpoint(tmp_path / "single" / "checkpoints")
    ddp_weights, _ = load_checkpoint(tmp_path / "ddp" / "checkpoints")
    for name, tensor in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], tensor, atol=5e-4, rtol=1e-3, msg=name)
    for one, two in zip(_metrics(tmp_path / "single"), _metrics(tmp_path / "ddp"), strict=True):
        assert abs(one["train_loss"] - two["train_loss"]) < 1e-4 and abs(one["test_acc"] - two["test_acc"]) < 0.01
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["processes"] == 2


def _resume_args(fake_cifar_root: Path):
    return [*ARGS, "--data-dir", str(fake_cifar_root), "--epochs", "2", "--subset", "512", "--batch-size", "64"]


@pytest.fixture(scope="module")
def whole(fake_cifar_root, tmp_path_factory):
    """The metrics of an uninterrupted two-process run of :func:`_resume_args`."""
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    _finish(_torchrun(*_resume_args(fake_cifar_root), "--out", str(run_dir)))
    return _metrics(run_dir)


def test_resume_under_torchrun(fake_cifar_root, tmp_path, whole):
    common = _resume_args(fake_cifar_root)
    interrupted = tmp_path / "interrupted"
    process = _torchrun(*common, "--out", str(interrupted), start_new_session=True)
    manifest = interrupted / "checkpoints" / "last.json"
    deadline = time.monotonic() + 300
    while not (manifest.exists() and json.loads(manifest.read_text())["epoch"] == 0):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    _finish(_torchrun("--resume", str(interrupted)))
    assert _metrics(interrupted) == whole


def test_a_worker_killed_mid_epoch_is_restarted_by_torchrun_and_resumes_by_itself(fake_cifar_root, tmp_path, whole):
    # rank 1 dies (SIGKILL) at the 12th step, inside the second epoch; torchrun restarts both workers with the same
    # command, which resumes from the checkpoint of step 10 (--checkpoint-every 2)
    run_dir = tmp_path / "run"
    process = _torchrun(*_resume_args(fake_cifar_root), "--out", str(run_dir), "--resume", "auto",
                        "--checkpoint-every", "2", script=CRASHING_SCRIPT, launcher_args=("--max-restarts", "1"),
                        env={**os.environ, "CRASH_AT": "12", "CRASH_RANK": "1"})
    output = _finish(process)
    assert "resuming at epoch 2, step 2" in output
    assert _metrics(run_dir) == whole


def test_sigterm_to_torchrun_stops_every_worker_at_one_step_with_a_checkpoint(fake_cifar_root, tmp_path, whole):
    # rank 0 sends SIGTERM to torchrun (which forwards it to both workers) at its 10th step, the second of epoch 2, and
    # waits for its own copy: the processes agree on the stop every 4 steps, so they stop after step 4 of epoch 2
    run_dir = tmp_path / "run"
    process = _torchrun(*_resume_args(fake_cifar_root), "--out", str(run_dir), script=CRASHING_SCRIPT,
                        env={**os.environ, "CRASH_AT": "10", "CRASH_SIGNAL": "SIGTERM"})
    output, _ = process.communicate(timeout=600)
    assert "stopped by SIGTERM at epoch 2, step 4" in output, output
    manifest = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    assert (manifest["epoch"], manifest["step"]) == (1, 4)
    _finish(_torchrun("--resume", str(run_dir)))
    assert _metrics(run_dir) == whole


def test_a_global_batch_that_does_not_split_evenly_is_refused(fake_cifar_root, tmp_path):
    process = _torchrun(*ARGS, "--data-dir", str(fake_cifar_root), "--batch-size", "127", "--out",
                        str(tmp_path / "run"))
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "--batch-size 127 is the global batch and must be divisible by the 2 processes" in output
