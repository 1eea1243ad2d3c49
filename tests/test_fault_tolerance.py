"""Faults a training run must survive: kills and stop signals at any moment, non-finite losses, bad checkpoints,
failing writes. Each is a row of the fault matrix in docs/fault_tolerance.rst."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cifar10_recipe import checkpoint
from cifar10_recipe import cli as train
from cifar10_recipe.checkpoint import CheckpointError, load_checkpoint, load_weights
from cifar10_recipe.config import resolve_config
from cifar10_recipe.run_manager import STOPPED_EXIT_STATUS
from tests.threads import run_threads

pytestmark = pytest.mark.slow  # training runs killed, stopped and resumed

HERE = Path(__file__).parent
TIMING_KEYS = {"elapsed_s", "train_s", "images_per_s"}
SUBSET, BATCH = 1024, 128
STEPS_PER_EPOCH = SUBSET // BATCH
ARGS = ["--preset", "tiny", "--subset", str(SUBSET), "--test-subset", "256", "--batch-size", str(BATCH),
        "--threads", run_threads(), "--epochs", "3", "--deterministic", "--progress", "off"]


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


def test_kill_before_the_first_manifest_resumes_from_the_complete_pair(fake_cifar_root, tmp_path, uninterrupted,
                                                                      capsys):
    run_dir = tmp_path / "run"
    _paused_run(fake_cifar_root, run_dir, tmp_path / "paused", "last.json", 1)
    assert not (run_dir / "checkpoints" / "last.json").exists()
    assert train.main(["--resume", str(run_dir)]) == 0
    assert "resuming from the previous checkpoint, epoch 1" in capsys.readouterr().out
    assert _metrics(run_dir) == uninterrupted


def test_a_run_without_any_checkpoint_says_there_is_nothing_to_resume(fake_cifar_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = resolve_config("tiny", {"data_dir": str(fake_cifar_root), "subset": 256, "test_subset": 64})
    (run_dir / "config.json").write_text(json.dumps({"preset": "tiny", **config.to_dict()}))
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


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["disk-full", "io-error"])
def test_a_failing_write_loses_nothing_saved_before(fake_cifar_root, tmp_path, monkeypatch, capsys, code):
    run_dir = tmp_path / "run"
    assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--epochs", "1", "--out", str(run_dir)]) == 0
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}

    def failing_write(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.torch, "save", failing_write)
        assert train.main(["--resume", str(run_dir), "--epochs", "2", "--allow-config-change"]) == 2
    error = capsys.readouterr().err
    assert os.strerror(code) in error and "previous checkpoint there is intact" in error
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error
    after = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    for name in ("last.json", "epoch0000.safetensors", "epoch0000.state.pt"):
        assert after[name] == before[name]
    assert not [name for name in after if name.startswith(".")]
    weights, info = load_weights(run_dir / "checkpoints" / "epoch0000.safetensors")
    assert info["epoch"] == 0
    # and it resumes once the disk works again
    assert train.main(["--resume", str(run_dir), "--epochs", "2", "--allow-config-change"]) == 0


def _signal_at_step(monkeypatch, signal_number: int, step: int) -> None:
    """Deliver ``signal_number`` to this process during the ``step``-th training loss (1-based, over the run)."""
    original, calls = torch.nn.functional.cross_entropy, {"n": 0}

    def signalling(*args, **kwargs):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signal_number)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", signalling)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_checkpoints_the_step_and_the_resumed_run_is_the_uninterrupted_one(
        fake_cifar_root, tmp_path, uninterrupted, monkeypatch, capsys, signal_number):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        _signal_at_step(patch, signal_number, STEPS_PER_EPOCH + 3)  # inside the second epoch
        status = train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--out", str(run_dir)])
    assert status == STOPPED_EXIT_STATUS == 75
    output = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"stopped by {signal.Signals(signal_number).name} at epoch 2, step 3" in output
    assert f"--resume {run_dir}" in output
    manifest = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    assert (manifest["epoch"], manifest["step"]) == (1, 3)
    assert train.main(["--resume", str(run_dir)]) == 0
    assert _metrics(run_dir) == uninterrupted


def test_periodic_checkpoints_are_bounded_and_a_kill_between_them_resumes_by_the_same_command(
        fake_cifar_root, tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    command = [sys.executable, str(HERE.parent / "examples" / "cifar10" / "train.py"), *ARGS, "--data-dir",
               str(fake_cifar_root), "--out", str(run_dir), "--resume", "auto", "--checkpoint-every", "3",
               "--keep-checkpoints", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = run_dir / "checkpoints"

    def stems():
        return {p.name.split(".")[0] for p in checkpoints.glob("epoch*")}

    # killed once the fourth checkpoint is written and the older ones pruned (a run that never prunes ends first,
    # which _kill_when reports); waiting for the pruning too keeps the kill out of the race with it
    _kill_when(process, lambda: "epoch0001-step000004" in stems() and len(stems()) <= 2)
    assert "epoch0000-step000003" not in stems() and "epoch0000" not in stems()
    # the job script relaunches the very same command
    assert subprocess.run(command, capture_output=True, timeout=600).returncode == 0
    assert _metrics(run_dir) == uninterrupted
    assert len(stems()) == 2


def test_resume_auto_starts_a_run_where_there_is_no_checkpoint_and_needs_out(fake_cifar_root, tmp_path, capsys):
    assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--resume", "auto"]) == 2
    assert "--resume auto needs --out" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")  # a run killed before its first checkpoint
    assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--epochs", "1", "--out", str(run_dir),
                       "--resume", "auto"]) == 0
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 1


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(fake_cifar_root, tmp_path, uninterrupted,
                                                                    capsys):
    run_dir = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        _signal_at_step(patch, signal.SIGTERM, 2 * STEPS_PER_EPOCH + 1)  # stop one step into the third epoch
        assert train.main([*ARGS, "--data-dir", str(fake_cifar_root), "--out", str(run_dir)]) == STOPPED_EXIT_STATUS
    newest = run_dir / "checkpoints" / "epoch0002-step000001.safetensors"
    newest.write_bytes(newest.read_bytes()[:4000])
    capsys.readouterr()
    assert train.main(["--resume", str(run_dir)]) == 0
    output = capsys.readouterr()
    assert "corrupted or truncated" in output.out and "resuming from the previous checkpoint, epoch 2" in output.out
    assert "Traceback" not in output.err
    assert _metrics(run_dir) == uninterrupted


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
