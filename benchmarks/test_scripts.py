"""The standalone benchmark scripts run end to end at toy sizes in the default test run, so that they cannot rot."""
import json

from benchmarks import deploy_latency, family_costs


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
