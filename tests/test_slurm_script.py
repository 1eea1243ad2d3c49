"""examples/cifar10/slurm.sh on one machine, with srun and scontrol stubbed: a job that finishes, and a job that gets
SLURM's SIGTERM before its time limit, writes a checkpoint, requeues itself and, relaunched, ends as the whole run."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a requeued job's two training subprocesses

SCRIPT = Path(__file__).parents[1] / "examples" / "cifar10" / "slurm.sh"
TIMING_KEYS = {"elapsed_s", "train_s", "images_per_s"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stubs(folder: Path) -> Path:
    """``srun`` runs its command here; ``scontrol`` names this host and records a requeue."""
    folder.mkdir()
    (folder / "srun").write_text('#!/usr/bin/env bash\nexec "$@"\n')
    (folder / "scontrol").write_text('#!/usr/bin/env bash\n'
                                     'if [[ $1 == show ]]; then echo 127.0.0.1; else echo "$@" >> "$REQUEUED"; fi\n')
    for stub in folder.iterdir():
        stub.chmod(0o755)
    return folder


def _job(tmp_path: Path, fake_cifar_root: Path, run_dir: Path) -> subprocess.Popen:
    stubs = tmp_path / "bin" if (tmp_path / "bin").exists() else _stubs(tmp_path / "bin")
    env = {**os.environ, "PATH": os.pathsep.join([str(stubs), str(Path(sys.executable).parent), os.environ["PATH"]]),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node1", "SLURM_NNODES": "1", "NPROC_PER_NODE": "1",
           "RUN_DIR": str(run_dir), "RDZV_PORT": str(_free_port()), "REQUEUED": str(tmp_path / "requeued"),
           "CHECKPOINT_EVERY": "0"}
    args = ["--preset", "tiny", "--subset", "512", "--test-subset", "128", "--batch-size", "64", "--epochs", "2",
            "--threads", "1", "--deterministic", "--progress", "off", "--data-dir", str(fake_cifar_root)]
    return subprocess.Popen(["bash", str(SCRIPT), *args], cwd=SCRIPT.parents[2], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _metrics(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_a_job_stopped_by_slurm_requeues_itself_and_the_requeued_job_finishes_the_run(fake_cifar_root, tmp_path):
    whole = tmp_path / "whole"
    output, _ = _job(tmp_path, fake_cifar_root, whole).communicate(timeout=600)
    assert (whole / "summary.json").is_file(), output
    assert not (tmp_path / "requeued").exists()

    run_dir = tmp_path / "run"
    job = _job(tmp_path, fake_cifar_root, run_dir)
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").exists():  # SLURM's warning comes in the second epoch
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before SLURM could stop it"
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGTERM)  # what --signal=B:TERM@120 sends: to the batch shell only
    output, _ = job.communicate(timeout=300)
    assert "stopped by SIGTERM" in output and "requeueing job 4242" in output, output
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    assert not (run_dir / "summary.json").exists()

    output, _ = _job(tmp_path, fake_cifar_root, run_dir).communicate(timeout=600)  # the requeued job, same command
    assert (run_dir / "summary.json").is_file(), output
    assert _metrics(run_dir) == _metrics(whole)
