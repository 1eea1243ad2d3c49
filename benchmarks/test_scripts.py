"""The standalone benchmark scripts run end to end at toy sizes in the default test run, so that they cannot rot."""
import csv
import json

import pytest

from benchmarks import deploy_latency, family_costs, timm_benchmark


def test_family_costs_writes_a_record_with_every_family_and_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(family_costs, "BLOCK_SHAPES", {"s3 256->256@3": (16, 16, 3)})
    assert family_costs.main(["--out", str(tmp_path / "costs"), "--rounds", "1", "--block-batch", "2",
                              "--network-batch", "4"]) == 0
    record = json.loads((tmp_path / "costs.json").read_text())
    assert set(record["blocks"]["s3 256->256@3"]) == set(family_costs.BLOCK_KINDS)
    assert set(record["networks"]) == set(family_costs.LAYOUTS) and record["network_ratios"]["static"] == 1.0
    assert "| dcd_routed |" in (tmp_path / "costs.md").read_text()


def test_deploy_latency_times_both_paths(tmp_path):
    assert deploy_latency.main(["--out", str(tmp_path / "latency"), "--rounds", "1", "--batches", "1", "--models",
                                "dynconv_cifar_tiny_routed"]) == 0
    record = json.loads((tmp_path / "latency.json").read_text())
    assert set(record["latency"]) == {"eager_folded B=1", "onnxruntime B=1"}


def test_timm_benchmark_writes_timms_columns(tmp_path):
    assert timm_benchmark.main(["--out", str(tmp_path / "bench"), "--models", "dynconv_cifar_tiny_static",
                                "dynconv_cifar_tiny", "--batch-size", "2", "--steps", "1"]) == 0
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert list(rows[0]) == timm_benchmark.COLUMNS
    assert [row["model"] for row in rows] == ["dynconv_cifar_tiny_static", "dynconv_cifar_tiny"]
    for row in rows:
        assert float(row["infer_samples_per_sec"]) > 0 and float(row["train_step_time"]) > 0
        assert row["infer_img_size"] == "32" and row["infer_batch_size"] == "2"
    static, dynamic = rows
    # the dynamic network has the same trunk plus routers and experts: more parameters, at least the same MACs
    assert float(dynamic["param_count"]) > float(static["param_count"]) > 0
    assert float(dynamic["infer_gmacs"]) >= float(static["infer_gmacs"]) > 0
    # the CSV is the JSON record's rows, nothing else
    record = json.loads((tmp_path / "bench.json").read_text())
    assert [{key: str(value) for key, value in row.items()} for row in record["rows"]] == rows


def test_timm_benchmark_rejects_unknown_models(tmp_path):
    with pytest.raises(SystemExit):
        timm_benchmark.main(["--out", str(tmp_path / "bench"), "--models", "resnet18"])


def test_the_committed_timm_benchmark_covers_every_registered_model():
    """docs/models.rst links the record: a model registered after it was measured must be measured too."""
    from pathlib import Path

    import dynconv

    path = Path(__file__).parent / "results" / "timm_benchmark" / "xeon.csv"
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == timm_benchmark.COLUMNS
    assert {row["model"] for row in rows} == set(dynconv.models.list_models())
    assert all(float(row["infer_samples_per_sec"]) > 0 and float(row["train_samples_per_sec"]) > 0 for row in rows)
