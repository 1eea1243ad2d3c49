"""examples/cifar10/four_axis_study.py: the points' networks, the records it reads (runs, timing, latency), the
static front's interpolation on every axis, its report and its chart."""
import json

import pytest
import timm

import dynconv  # noqa: F401  (registers the models)
from cifar10_recipe import four_axis_study as study
from docs.generate_charts import draw_four_axis


@pytest.mark.parametrize("point", list(study.POINTS))
def test_every_point_names_a_network_timm_builds(point):
    name, kwargs = study.network_of(point)
    model = timm.create_model(name, device="meta", **kwargs)
    assert model.num_classes == 10


def test_the_static_front_grows_with_its_width():
    networks = [study.network_of(point) for point in study.FRONT]
    counts = [sum(p.numel() for p in timm.create_model(name, device="meta", **kwargs).parameters())
              for name, kwargs in networks]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


def _run(records, point, seed, acc, tta):
    folder = records / f"{point}-s{seed}"
    folder.mkdir(parents=True)
    name, kwargs = study.network_of(point)
    model = timm.create_model(name, device="meta", **kwargs)
    summary = {"model": name, "params": sum(p.numel() for p in model.parameters()), "test_acc": acc,
               "test_acc_tta": tta, "provenance": {"commit": "0" * 40, "machine": {"cpu": "test CPU"}}}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "config.json").write_text(json.dumps({"model": name, "model_kwargs": json.dumps(kwargs)}))


def _timing(records, point, subset_seconds):
    folder = records / f"timing-r0-{point}"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_s": subset_seconds}) + "\n")


@pytest.fixture
def records(tmp_path):
    """Two front widths (two seeds each), one dynamic point between them on every axis, timing and latency."""
    _run(tmp_path, "static_w050", 0, 0.87, 0.88)
    _run(tmp_path, "static_w050", 1, 0.89, 0.90)
    _run(tmp_path, "static_w100", 0, 0.90, 0.91)
    _run(tmp_path, "static_w100", 1, 0.90, 0.91)
    _run(tmp_path, "dcd_routed", 0, 0.895, 0.905)
    for point, seconds in (("static_w050", 2.0), ("static_w100", 8.0), ("dcd_routed", 4.0)):
        _timing(tmp_path, point, seconds)
    latency = {"models": ["static_w050", "static_w100", "dcd_routed"], "latency": {
        study.LATENCY_KEY: {"static_w050": 0.001, "static_w100": 0.004, "dcd_routed": 0.002}}}
    (tmp_path / "latency.json").write_text(json.dumps(latency))
    return tmp_path


def test_each_dynamic_point_is_compared_with_the_front_at_its_cost_on_every_axis(records):
    results = study.collect(records)
    front_mean = {"static_w050": 0.88, "static_w100": 0.90}
    assert results["points"]["static_w050"]["test_acc"]["mean"] == pytest.approx(front_mean["static_w050"])
    assert results["points"]["dcd_routed"]["latency_ms"] == pytest.approx(2.0)
    assert results["points"]["dcd_routed"]["seconds_per_epoch"]["mean"] == pytest.approx(
        4.0 * study.TRAIN_IMAGES / study.TIMING_SUBSET)
    versus = results["versus_front"]["dcd_routed"]
    # latency and time sit halfway between the widths in log cost (2 between 1 and 4 ms; 4 between 2 and 8 s):
    # the front there is the mean of the two widths' accuracies, 0.89, and the point is 0.005 above it
    for axis in ("latency", "time"):
        assert versus[axis]["test_acc"] == pytest.approx(0.895 - 0.89)
        assert versus[axis]["test_acc_tta"] == pytest.approx(0.905 - 0.90)
    # parameters and multiply-adds: wherever the point falls, it is compared with the front's value at that cost
    for axis in ("params", "macs"):
        cost = study.AXES[axis](results["points"]["dcd_routed"])
        front = [(study.AXES[axis](results["points"][p]), front_mean[p]) for p in front_mean]
        level = study.front_accuracy(front, cost)
        assert versus[axis]["test_acc"] == (None if level is None else pytest.approx(0.895 - level))


def test_the_report_has_a_column_per_axis_and_says_what_was_not_measured(records):
    (records / "latency.json").unlink()
    results = study.collect(records)
    table = study.markdown_table(results)
    assert "batch-1 latency" in table and "at equal training time" in table
    row = next(line for line in table.splitlines() if line.startswith("| `dcd_routed` |") and "not measured" in line)
    assert row.count("not measured") == 1  # latency only: the other three axes were measured


def test_the_chart_draws_one_panel_per_measured_axis(records, tmp_path):
    assert draw_four_axis(study.collect(records), tmp_path / "four_axis.png")
    assert (tmp_path / "four_axis.png").stat().st_size > 0


@pytest.mark.slow  # exports two networks to ONNX and times them
def test_latency_is_measured_for_the_points_asked_and_recorded_with_provenance(tmp_path):
    pytest.importorskip("onnxruntime")
    study.measure_latency(["static_w050", "static_w100"], tmp_path / "latency", rounds=1)
    record = json.loads((tmp_path / "latency.json").read_text())
    assert set(record["latency"][study.LATENCY_KEY]) == {"static_w050", "static_w100"}
    assert record["networks"]["static_w050"]["kwargs"] == {"widths": [32, 128, 128]}
    assert record["provenance"]["command"].endswith("latency")
    assert set(study.latency_ms(tmp_path)) == {"static_w050", "static_w100"}
