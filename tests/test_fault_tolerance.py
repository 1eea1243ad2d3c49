"""Faults a training run must survive: kills at any moment, non-finite losses, bad checkpoints, failing writes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from cifar10_recipe import checkpoint
from cifar10_recipe.checkpoint import CheckpointError, load_checkpoint, load_weights

HERE = Path(__file__).parent
TIMING_KEYS = {"elapsed_s", "train_s", "images_per_s"}
SUBSET, BATCH = 1024, 128
STEPS_PER_EPOCH = SUBSET // BATCH
ARGS = ["--preset", "tiny", "--subset", str(SUBSET), "--test-subset", "256", "--batch-size", str(BATCH),
        "--threads", "2", "--epochs", "3", "--deterministic", "--progress", "off"]


def _metrics(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.fixture(scope="module")
def uninterrupted(fake_cifar_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--out", str(run_dir)]) == 0
    return _metrics(run_dir)


def _improving_epochs(metrics) -> list:
    """The epochs whose test accuracy beats every earlier one's (those that write best.safetensors)."""
    best, improved = -1.0, []
    for row in metrics:
        if row.get("test_acc") is not None and row["test_acc"] > best:
            best = row["test_acc"]
            improved.append(row["epoch"])
    return improved


def _kill_when(process: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + 120
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def _paused_run(fake_cifar_root, run_dir: Path, marker: Path, pause_before: str, pause_at: int):
    env = {**os.environ, "PAUSE_BEFORE": pause_before, "PAUSE_AT": str(pause_at), "PAUSE_MARKER": str(marker)}
    process = subprocess.Popen([sys.executable, str(HERE / "pausing_train.py"), *ARGS, "--data-dir",
                                str(fake_cifar_root), "--out", str(run_dir)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(process, marker.exists)


@pytest.mark.parametrize("pause_before,pause_at", [
    ("epoch0001.safetensors", 1),  # epoch 2's weights half written: the manifest still names epoch 1
    ("epoch0001.state.pt", 1),     # epoch 2's weights written, its resume state half written
    ("last.json", 2),              # both written, the manifest not yet switched to epoch 2
    ("best.safetensors", 2),       # the second best weights half written (epoch 2's where it improves)
])
def test_kill_while_writing_a_checkpoint_then_resume(fake_cifar_root, tmp_path, uninterrupted, pause_before,
                                                     pause_at):
    run_dir = tmp_path / "run"
    manifest_epoch = 0
    if pause_before == "best.safetensors":
        # best weights are written only when the test accuracy improves, which depends on the CPU's precision (bf16
        # where it is native): the paused write is the pause_at-th improvement's, made before that epoch's manifest
        improved = _improving_epochs(uninterrupted)
        assert len(improved) >= pause_at, f"the uninterrupted run improves only at epochs {improved}"
        manifest_epoch = improved[pause_at - 1] - 1
    _paused_run(fake_cifar_root, run_dir, tmp_path / "paused", pause_before, pause_at)
    assert json.loads((run_dir / "checkpoints" / "last.json").read_text())["epoch"] == manifest_epoch
    assert train.main(["--resume", str(run_dir)]) == 0
    assert _metrics(run_dir) == uninterrupted
    assert not list((run_dir / "checkpoints").glob(".*.tmp*")), "temporary files were left behind"


def test_kill_before_the_first_checkpoint_says_there_is_nothing_to_resume(fake_cifar_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    _paused_run(fake_cifar_root, run_dir, tmp_path / "paused", "last.json", 1)
    assert train.main(["--resume", str(run_dir)]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_kill_during_training_then_resume(fake_cifar_root, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(HERE.parent / "examples" / "cifar10" / "train.py"), *ARGS,
                                "--data-dir", str(fake_cifar_root), "--out", str(run_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = run_dir / "checkpoints" / "last.json"
    _kill_when(process, lambda: manifest.exists() and json.loads(manifest.read_text())["epoch"] == 1)
    assert train.main(["--resume", str(run_dir)]) == 0
    assert _metrics(run_dir) == uninterrupted


def test_non_finite_loss_stops_with_the_step_and_keeps_the_good_checkpoint(fake_cifar_root, tmp_path, capsys,
                                                                          monkeypatch):
    original = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def nan_in_the_second_epoch(*args, **kwargs):  # the first epoch's training steps, then the evaluation's calls
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] > STEPS_PER_EPOCH and torch.is_grad_enabled() else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_in_the_second_epoch)
    run_dir = tmp_path / "run"
    assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--epochs", "2", "--out", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert "non-finite at step" in error and "--on-nan skip" in error
    # the first epoch finished and was checkpointed; the failing second epoch must not have overwritten it
    checkpoints = run_dir / "checkpoints"
    assert json.loads((checkpoints / "last.json").read_text())["epoch"] == 0
    weights, _ = load_checkpoint(checkpoints)
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_skip_mode_skips_non_finite_steps(fake_cifar_root, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = torch.nn.functional.cross_entropy

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] % 5 == 0 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", sometimes_nan)
    run_dir = tmp_path / "run"
    assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--epochs", "1", "--on-nan", "skip",
                       "--out", str(run_dir)]) == 0
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert row["skipped_steps"] == STEPS_PER_EPOCH // 5 and row["train_loss"] == row["train_loss"]  # every 5th NaN


def test_corrupted_and_truncated_checkpoints_are_clear_errors(fake_cifar_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--epochs", "1", "--out", str(run_dir)]) == 0
    folder = run_dir / "checkpoints"
    manifest = json.loads((folder / "last.json").read_text())
    weights = folder / manifest["weights"]
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(folder)
    assert train.main(["--eval", str(weights)]) == 2
    assert "corrupted or truncated" in capsys.readouterr().err
    state = folder / manifest["state"]
    state.write_bytes(b"not a checkpoint")
    (folder / manifest["weights"]).unlink()
    (folder / "last.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="manifest .* is corrupted"):
        load_checkpoint(folder)


def test_resume_state_cannot_run_code(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"epoch": 0, "evil": RunsCode()}, folder / "epoch0000.state.pt")
    (folder / "epoch0000.safetensors").write_bytes(b"")
    checkpoint.save_weights(folder / "epoch0000.safetensors", torch.nn.Linear(2, 2), {"model": "x"}, 0)
    (folder / "last.json").write_text(json.dumps({"epoch": 0, "weights": "epoch0000.safetensors",
                                                  "state": "epoch0000.state.pt"}))
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(folder)
    assert not (tmp_path / "pwned").exists()


def test_a_failing_write_loses_nothing_saved_before(fake_cifar_root, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--epochs", "1", "--out", str(run_dir)]) == 0
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    assert train.main(["--resume", str(run_dir), "--epochs", "2", "--allow-config-change"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    for name in ("last.json", "epoch0000.safetensors", "epoch0000.state.pt"):
        assert after[name] == before[name]
    assert not [name for name in after if name.startswith(".")]
    weights, info = load_weights(run_dir / "checkpoints" / "epoch0000.safetensors")
    assert info["epoch"] == 0


def test_unwritable_output_folder_is_a_clear_error(fake_cifar_root, tmp_path, capsys):
    if os.geteuid() == 0:
        target = Path("/proc/dynconv-run")  # not even root can create folders in /proc
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "run"
    assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--out", str(target)]) == 2
    error = capsys.readouterr().err
    assert "cannot write to the run directory" in error and "Traceback" not in error
