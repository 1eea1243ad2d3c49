"""examples/cifar10/train.py end to end, on the fake dataset (and the real one where available)."""
import json
import os
import statistics
from pathlib import Path

import pytest
import torch

from cifar10_recipe import cli as train
from cifar10_recipe.checkpoint import load_weights
from cifar10_recipe.config import TrainConfig, resolve_config
from cifar10_recipe.optimization import lr_factor
from cifar10_recipe.presets import PRESETS
from tests.threads import run_threads

pytestmark = pytest.mark.slow  # command-line training runs

TRAIN_SCRIPT = Path(__file__).parents[1] / "examples" / "cifar10" / "train.py"
TIMING_KEYS = {"elapsed_s", "train_s", "images_per_s"}
QUICK = ["--preset", "tiny", "--subset", "1024", "--test-subset", "512", "--batch-size", "64",
         "--threads", run_threads()]


def _history(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_timings(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_cli_run_writes_well_formed_outputs_and_learns(fake_cifar_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main([*QUICK, "--data-dir", str(fake_cifar_root), "--epochs", "3", "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("epoch ") >= 3 and "done: test accuracy" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["preset"] == "tiny" and config["epochs"] == 3 and config["subset"] == 1024
    history = _history(run_dir)
    assert [row["epoch"] for row in history] == [0, 1, 2]
    for row in history:
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s", "elapsed_s"} <= set(row)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for row in history:  # routing health of each stage of the tiny model's dynamic blocks
        assert sorted(row["routing"]) == ["stages.0", "stages.1", "stages.2"]
        assert all(0 <= v["entropy"] <= 1 and 0 <= v["variation"] <= 1 for v in row["routing"].values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_acc"] == history[-1]["test_acc"] and summary["test_acc"] > 0.5
    assert summary["params"] > 0 and summary["flops_per_image"] > 0 and summary["torch"] == torch.__version__
    assert summary["precision"] in ("float32", "bf16 autocast") and summary["compile"] == "none"
    steady = statistics.median(row["train_s"] for row in history[1:])
    assert summary["first_epoch_overhead_s"] == pytest.approx(history[0]["train_s"] - steady)
    origin = summary["provenance"]
    assert origin["command"] == "python examples/cifar10/train.py " + " ".join(
        [*QUICK, "--data-dir", str(fake_cifar_root), "--epochs", "3", "--out", str(run_dir)])
    assert origin["versions"]["torch"] == torch.__version__ and origin["machine"]["cores"] >= 1
    assert origin["commit"] is None or len(origin["commit"].removesuffix("-dirty")) == 40
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights, info = load_weights(run_dir / "checkpoints" / "best.safetensors")
    assert info["config"]["model"] == "dynconv_cifar_tiny" and "head.fc.weight" in weights
    manifest = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    # --keep-checkpoints' default: the last two epochs, so a corrupted newest one has a fallback
    assert manifest["epoch"] == 2 and sorted(p.name for p in (run_dir / "checkpoints").glob("epoch*")) == [
        "epoch0001.safetensors", "epoch0001.state.pt", "epoch0002.safetensors", "epoch0002.state.pt"]


def test_temperature_annealing_reaches_every_routing_head_once_per_new_value(fake_cifar_root, tmp_path,
                                                                             monkeypatch):
    from dynconv.layers import RoutingHead

    calls = []
    original = RoutingHead.set_temperature

    def recording_set_temperature(head, value):
        calls.append((id(head), value))
        original(head, value)

    monkeypatch.setattr(RoutingHead, "set_temperature", recording_set_temperature)
    run_dir = tmp_path / "run"
    args = [*QUICK, "--data-dir", str(fake_cifar_root), "--subset", "256", "--batch-size", "64", "--epochs", "2",
            "--block", "dyconv", "--temperature-start", "30", "--temperature-epochs", "1", "--out", str(run_dir)]
    assert train.main(args) == 0
    heads = {head for head, _ in calls}
    values = [value for head, value in calls if head == min(heads)]
    # 4 steps per epoch: 30 -> 1 over the first epoch, then 1 once (not again at every later step)
    assert len(heads) == 6 and values == [30.0, 22.75, 15.5, 8.25, 1.0]
    assert all(sum(1 for h, _ in calls if h == head) == len(values) for head in heads)


def test_eval_only_reproduces_the_recorded_accuracy(fake_cifar_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main([*QUICK, "--data-dir", str(fake_cifar_root), "--epochs", "1", "--out", str(run_dir)]) == 0
    capsys.readouterr()
    assert train.main(["--eval", str(run_dir / "checkpoints" / "best.safetensors")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["test_acc"] == pytest.approx(_history(run_dir)[-1]["test_acc"])


def test_coursework_pipeline_runs_with_worker_processes(fake_cifar_root, tmp_path):
    run_dir = tmp_path / "run"
    code = train.main(["--preset", "coursework", "--data-dir", str(fake_cifar_root), "--subset", "256",
                       "--test-subset", "128", "--epochs", "1", "--workers", "2", "--num-classes", "20",
                       "--out", str(run_dir)])
    assert code == 0
    row = _history(run_dir)[0]
    assert row["lr"] == pytest.approx(1e-3) and row["test_acc"] is not None
    assert json.loads((run_dir / "config.json").read_text())["loader"] == "torchvision"


def test_coursework_preset_is_the_coursework_recipe():
    config = resolve_config("coursework", {})
    assert (config.model, config.epochs, config.batch_size, config.optimizer, config.lr, config.weight_decay) == (
        "dynconv_cifar", 50, 64, "adam", 1e-3, 1e-4)
    assert (config.schedule, config.step_size, config.gamma, config.label_smoothing) == ("step", 30, 0.1, 0.0)
    assert (config.crop_padding, config.flip, config.cutout, config.cutout_holes) == (4, "random", 16, 1)
    factor = lr_factor(config, steps_per_epoch=10)
    assert [factor(epoch * 10) for epoch in (0, 29, 30, 49)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1)]


def test_every_preset_resolves_and_every_field_has_a_flag(capsys):
    for name in PRESETS:
        resolve_config(name, {})
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    help_text = capsys.readouterr().out
    for field in TrainConfig.__dataclass_fields__:
        assert f"--{field.replace('_', '-')}" in help_text
    assert "coursework:" in help_text and "cpu:" in help_text


def test_same_seed_gives_identical_metrics_in_deterministic_mode(fake_cifar_root, tmp_path):
    runs = []
    for name in ("a", "b"):
        args = [*QUICK, "--data-dir", str(fake_cifar_root), "--subset", "512", "--epochs", "2", "--deterministic",
                "--out", str(tmp_path / name)]
        assert train.main(args) == 0
        runs.append(_without_timings(_history(tmp_path / name)))
    assert runs[0] == runs[1]


def test_resume_rejects_a_changed_configuration(fake_cifar_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main([*QUICK, "--data-dir", str(fake_cifar_root), "--epochs", "1", "--out", str(run_dir)]) == 0
    assert train.main(["--resume", str(run_dir), "--lr", "0.5", "--model", "dynconv_cifar"]) == 2
    error = capsys.readouterr().err
    assert "lr: 0.2 -> 0.5" in error and "model: 'dynconv_cifar_tiny' -> 'dynconv_cifar'" in error
    assert "--allow-config-change" in error


def test_data_errors_are_one_clear_message(tmp_path, capsys):
    assert train.main([*QUICK, "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: CIFAR-10 not found") and "Traceback" not in error


def test_an_existing_run_directory_is_not_overwritten(fake_cifar_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main([*QUICK, "--data-dir", str(fake_cifar_root), "--epochs", "1", "--out", str(run_dir)]) == 0
    assert train.main([*QUICK, "--data-dir", str(fake_cifar_root), "--out", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("CIFAR10_ROOT"), reason="CIFAR10_ROOT is unset: no real CIFAR-10 copy")
def test_real_data_smoke_run_is_well_above_chance(tmp_path):
    """A few hundred steps of the fastest model on the real (local) CIFAR-10 copy (the dynamic models meet the real
    data in tests/test_pretrained.py; the static twin takes 40% of the dynamic model's time)."""
    run_dir = tmp_path / "run"
    args = ["--preset", "tiny", "--block", "static", "--subset", "12800",
            "--test-subset", "2000", "--epochs", "2", "--batch-size", "64", "--lr", "0.1", "--out", str(run_dir)]
    assert train.main(args) == 0
    accuracy = json.loads((run_dir / "summary.json").read_text())["test_acc"]
    assert accuracy >= 0.40, f"{accuracy:.3f} after 400 steps"  # its speed is the benchmarks' business, not a test's


def test_runs_aggregates_the_seeds_and_each_seed_folder_resumes(fake_cifar_root, tmp_path):
    run_dir = tmp_path / "runs"
    assert train.main([*QUICK, "--data-dir", str(fake_cifar_root), "--subset", "256", "--test-subset", "128",
                       "--epochs", "1", "--runs", "2", "--seed", "3", "--out", str(run_dir)]) == 0
    aggregate = json.loads((run_dir / "runs.json").read_text())
    seeds = [json.loads((run_dir / f"seed{seed}" / "summary.json").read_text()) for seed in (3, 4)]
    assert aggregate["runs"] == 2
    assert aggregate["test_acc"]["mean"] == pytest.approx(sum(s["test_acc"] for s in seeds) / 2)
    for seed in (3, 4):
        config = json.loads((run_dir / f"seed{seed}" / "config.json").read_text())
        assert config["seed"] == seed and config["runs"] == 1 and config["preset"] == "tiny"
    # a seed's folder is a run folder of its own: it resumes (here: one more epoch)
    assert train.main(["--resume", str(run_dir / "seed4"), "--epochs", "2", "--allow-config-change"]) == 0
    assert len((run_dir / "seed4" / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((run_dir / "seed4" / "config.json").read_text())["epochs"] == 2  # the accepted change is kept
