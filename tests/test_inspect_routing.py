"""examples/cifar10/inspect_routing.py on a run trained on the fake dataset, for a branch and an ODConv model."""
import json

import pytest

from cifar10_recipe import cli as train
from cifar10_recipe import inspect_routing

pytestmark = pytest.mark.slow  # a training run per family


@pytest.mark.parametrize("block", ["branch", "odconv"])
def test_inspect_a_run_writes_statistics_and_a_figure(block, fake_cifar_root, tmp_path):
    run_dir = tmp_path / "run"
    assert train.main(["--preset", "tiny", "--block", block, "--subset", "512", "--test-subset", "256",
                       "--batch-size", "64", "--epochs", "1", "--data-dir", str(fake_cifar_root),
                       "--out", str(run_dir)]) == 0
    out = tmp_path / "routing"
    assert inspect_routing.main(["--run", str(run_dir), "--data-dir", str(fake_cifar_root), "--test-subset", "300",
                                 "--out", str(out)]) == 0
    result = json.loads((out / "routing.json").read_text())
    assert result["num_images"] == 300 and len(result["blocks"]) == 6  # every dynamic block of the tiny model
    for stats in result["blocks"].values():
        assert stats["num_samples"] == 300 and stats["num_experts"] == 2
        assert len(stats["class_mean_weight"]) == 10 and 0 <= stats["normalised_entropy"] <= 1
    assert (out / "routing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_checkpoint_is_one_clear_error(tmp_path, capsys):
    assert inspect_routing.main(["--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no " in capsys.readouterr().err


def test_inspect_a_dcd_run_summarises_lambda_and_phi(fake_cifar_root, tmp_path):
    run_dir = tmp_path / "run"
    assert train.main(["--preset", "tiny", "--block", "dcd", "--subset", "256", "--test-subset", "128",
                       "--batch-size", "64", "--epochs", "1", "--data-dir", str(fake_cifar_root),
                       "--out", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(metrics["routing"]["stages.2"]) == {"scale_spread", "phi_spread"}  # the recipe logs them too
    out = tmp_path / "routing"
    assert inspect_routing.main(["--run", str(run_dir), "--data-dir", str(fake_cifar_root), "--test-subset", "100",
                                 "--out", str(out)]) == 0
    result = json.loads((out / "routing.json").read_text())
    assert result["blocks"] == {} and len(result["attentions"]) == 6
    for attentions in result["attentions"].values():
        assert attentions["scale"]["num_samples"] == 100 and attentions["scale"]["relative_spread"] > 0
    assert (out / "routing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
