"""The airbench94 anchor script runs the package's own code on the CPU, at a dry-run size (its full-length numbers
are records under benchmarks/results/)."""
import json

import pytest

pytest.importorskip("airbench")

import airbench_anchor  # noqa: E402


def test_the_anchor_trains_airbench94_on_the_local_copy_and_writes_a_record(fake_cifar_root, tmp_path):
    out = tmp_path / "anchor.json"
    assert airbench_anchor.main(["--epochs", "1", "--subset", "2048", "--test-subset", "200", "--data-dir",
                                 str(fake_cifar_root), "--work-dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    run = record["runs"][0]
    # two steps only (each 1024-image step takes seconds on 2 cores): the plumbing is what is tested here
    assert 0 <= run["test_acc"] <= 1 and 0 <= run["test_acc_tta"] <= 1 and run["train_s"] > 0 and run["eval_s"] > 0
    assert record["epochs"] == 1 and record["subset"] == 2048 and len(record["runs"]) == 1
    assert record["precision"] in ("float32", "bf16") and record["provenance"]["command"].startswith(
        "python benchmarks/airbench_anchor.py")
    assert (tmp_path / "work" / "cifar10" / "train.pt").is_file()
