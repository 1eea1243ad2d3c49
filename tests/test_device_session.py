"""tools/device_session.sh, dry-run on the CPU at a tiny size so that its stages cannot rot between lent GPUs.

The anchor stage runs the airbench package's own train94 through benchmarks/airbench_anchor.py (its full-length
numbers are records under benchmarks/results/). Every other stage (the presets, compiled or not, and the three
benchmark stages) runs once in one shared session, shrunk by the script's own EXTRA_ARGS and BENCH_SELECT.
"""
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the device script's stages, each a training subprocess

ROOT = Path(__file__).resolve().parents[1]


def _session(stages: str, out: Path, fake_cifar_root: Path, **env) -> str:
    # without pytest-xdist's worker variables, which would make the stages' own pytest runs disable benchmarking
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_XDIST")}
    environment = {**inherited, "STAGES": stages, "OUT": str(out), "DEVICE": "cpu", "PYTHON": sys.executable,
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
    assert record["provenance"]["command"].startswith("python -m benchmarks.airbench_anchor --device cpu")


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


# train.py flags that shrink every preset stage to one step on a few images
TINY_TRAINING = "--subset 64 --test-subset 32 --epochs 1 --batch-size 32 --warmup-epochs 0.5"
# one configuration of each benchmark file the stages run: the eager block suite, the compiled block suite (both
# paths) and the whole-model training benchmark
BENCH_SELECT = "tiny.s3-1-2-forward-contiguous or tiny.s1-2-64-forward-fused or dynconv_cifar_tiny_static-eager"
OTHER_STAGES = "fast fast_compile coursework benchmarks blocks_compiled throughput family_floor"


@pytest.fixture(scope="module")
def other_stages(fake_cifar_root, tmp_path_factory):
    """(log, $OUT) of one session running every stage but the anchor and airbench94 ones at a tiny size."""
    out = tmp_path_factory.mktemp("device_session") / "out"
    log = _session(OTHER_STAGES, out, fake_cifar_root, EXTRA_ARGS=TINY_TRAINING, BENCH_SELECT=BENCH_SELECT,
                   RUNS="1", FAST_COMPILE_RUNS="1", COURSEWORK_SEEDS="0", COURSEWORK_ARGS="--channels-last --workers 0",
                   FAST_S="300", FAST_COMPILE_S="300", COURSEWORK_S="300", BENCH_S="300", BLOCKS_COMPILED_S="300",
                   THROUGHPUT_S="300", FAMILY_FLOOR_S="300",
                   FAMILY_FLOOR_ARGS="--rounds 1 --batches 2 --skip-modes")
    return log, out


@pytest.mark.parametrize("stage", OTHER_STAGES.split())
def test_every_stage_finishes(other_stages, stage):
    log, _ = other_stages
    assert f"== stage {stage}: exit 0" in log, log


@pytest.mark.parametrize("name, preset, model, compiled", [
    ("fast", "fast", "dynconv_cifar_fast", "none"), ("fast_compile", "fast", "dynconv_cifar_fast", "default"),
    ("coursework", "coursework", "dynconv_cifar", "none")])  # the dry run leaves compiling the coursework model out
def test_the_preset_stages_write_their_runs_and_weights(other_stages, name, preset, model, compiled):
    _, out = other_stages
    assert (out / f"{name}.json").is_file(), sorted(p.name for p in out.iterdir())
    weights = out / "weights" / name
    (config_path,) = weights.rglob("config.json")
    config = json.loads(config_path.read_text())
    assert (config["preset"], config["model"], config["compile"]) == (preset, model, compiled)
    assert list(weights.rglob("*.safetensors")), sorted(str(p) for p in weights.rglob("*"))


def test_the_benchmark_stages_write_their_tables(other_stages):
    _, out = other_stages
    blocks = json.loads((out / "bench_cuda.json").read_text())["benchmarks"]
    assert blocks and all("tiny.s3" in b["group"] and "B=1 " in b["group"] for b in blocks)
    assert (out / "bench_cuda.md").read_text().startswith("Measured")
    compiled = json.loads((out / "blocks_compiled_cpu.json").read_text())["benchmarks"]
    assert {b["extra_info"]["path"] for b in compiled} == {"eager", "compiled"}
    (throughput,) = json.loads((out / "train_throughput.json").read_text())["benchmarks"]
    assert throughput["extra_info"]["model"] == "dynconv_cifar_tiny_static"
    floor = json.loads((out / "family_floor_cpu.json").read_text())
    assert {row["batch"] for row in floor["table"]} == {2} and "static" in floor["table"][0]["seconds"]


def test_the_carry_holds_timm_and_airbench_with_their_versions(tmp_path):
    """The device has neither package installed: the carry's pylib alone must import-path them and name their
    versions (the anchor's record reads airbench's with importlib.metadata, which failed on a lent H200 when the
    carry held the modules without their dist-info)."""
    pytest.importorskip("airbench")
    shared = ROOT.parent / "shared"
    if not (shared / "data" / "cifar10-source").is_dir():
        pytest.skip("no ../shared beside the checkout")
    dest = tmp_path / "carry"
    environment = {**os.environ, "DEST": str(dest), "PYTHON": sys.executable, "SHARED": str(shared)}
    result = subprocess.run(["bash", str(ROOT / "tools" / "prepare_device_carry.sh")], env=environment, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # -S: no site-packages, so only the carry (on PYTHONPATH, as the device session puts it) can answer
    probe = "from importlib.metadata import version; print(version('timm'), version('airbench'))"
    answer = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                            env={"PYTHONPATH": str(dest / "pylib")})
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == [version("timm"), version("airbench")]  # the installed ones
    assert (dest / "tools" / "cifar10-root").is_file() and (dest / "data" / "cifar10-source").is_dir()
