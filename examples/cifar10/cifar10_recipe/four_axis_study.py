"""The four-axis study: is a dynamic network above the static front on parameters, inference MFLOPs, batch-1 latency
or training time?

Every point trains with the ``cpu`` preset (Muon, 9 epochs, the local CIFAR-10 copy), 3 seeds each; the static
front is airbench94's network at four widths. Steps:

    python examples/cifar10/four_axis_study.py train    # every point's missing seeds (shares the machine: accuracy
                                                        # after 9 epochs does not depend on load)
    python examples/cifar10/four_axis_study.py timing   # ALONE on the machine: seconds per epoch of every point, in
                                                        # alternated short runs
    python examples/cifar10/four_axis_study.py latency  # ALONE on the machine: batch-1 latency of every point's
                                                        # network, BatchNorm folded, through ONNX Runtime
    python examples/cifar10/four_axis_study.py report   # study.json and study.md from the records

Records (``config.json``, ``metrics.jsonl``, ``summary.json`` of every run) go to ``--records``; run folders with
checkpoints stay under ``--runs-dir``. The latency step times the points with :mod:`benchmarks.deploy_latency`
(alternated rounds, medians) and writes ``latency.json`` beside the runs.
"""
import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import timm

from dynconv.models import count_parameters_and_multiply_adds

from .equal_budget_study import read_metrics, run_and_record
from .report import spread

# the recipe package sits in examples/cifar10, beside the records
EXAMPLES = Path(__file__).resolve().parents[1]
DEFAULT_RECORDS = EXAMPLES / "records" / "four-axis"
STATIC = "dynconv_cifar_fast_static"
# point -> train.py flags beyond the preset: the static front (airbench94's network at width multipliers of its
# segments 64-256-256; the stem stays 24 wide), then the dynamic networks
POINTS: Dict[str, List[str]] = {
    "static_w050": ["--model", STATIC, "--model-kwargs", '{"widths": [32, 128, 128]}'],
    "static_w075": ["--model", STATIC, "--model-kwargs", '{"widths": [48, 192, 192]}'],
    "static_w100": ["--model", STATIC],
    "static_w125": ["--model", STATIC, "--model-kwargs", '{"widths": [80, 320, 320]}'],
    "kw1d4x": ["--model", "dynconv_cifar_fast_kw1d4x", "--init-blend-epochs", "1"],
    "kw1d2x": ["--model", "dynconv_cifar_fast_kw1d2x", "--init-blend-epochs", "1"],
    "kw1x": ["--model", "dynconv_cifar_fast_kw1x", "--init-blend-epochs", "1"],
    "dcd_routed": ["--model", "dynconv_cifar_fast_dcd_routed"],
    "odconv": ["--model", "dynconv_cifar_fast_odconv"],
}
FRONT = ("static_w050", "static_w075", "static_w100", "static_w125")
SEEDS = (0, 1, 2)
# seeds first across points, so that every point has one seed before any has three
PLAN = [(point, seed) for seed in SEEDS for point in POINTS]
TIMING_EPOCHS = 2
TIMING_SUBSET = 10_000  # 5 batches of 2000: the second epoch's training time scales to the 50,000 images
TRAIN_IMAGES = 50_000
LATENCY_KEY = "onnxruntime B=1"
LATENCY_ROUNDS = 7


def network_of(point: str) -> Tuple[str, Dict[str, Any]]:
    """The registered model and ``timm.create_model`` arguments of a point's network (from its train.py flags)."""
    flags = POINTS[point]
    kwargs = flags[flags.index("--model-kwargs") + 1] if "--model-kwargs" in flags else "{}"
    return flags[flags.index("--model") + 1], json.loads(kwargs)


def measure_latency(points: List[str], out: Path, rounds: int = LATENCY_ROUNDS,
                    command: Optional[List[str]] = None) -> None:
    """Batch-1 latency of each point's network (float32, BatchNorm folded; eager and ONNX Runtime), alternated
    round by round, to ``out`` (.json and .md) with its provenance (``command``: the command line to record)."""
    import torch

    from benchmarks import deploy_latency
    from dynconv.records import provenance, write_record

    specs = {point: network_of(point) for point in points}
    command = command or ["examples/cifar10/four_axis_study.py", "latency"]
    record = {"models": points, "networks": {p: {"model": m, "kwargs": k} for p, (m, k) in specs.items()},
              "rounds": rounds, "precision": "float32",
              "provenance": provenance(torch.device("cpu"), command),
              "latency": deploy_latency.latencies(points, (1,), rounds, specs)}
    write_record(out, record, deploy_latency.markdown(record))


def latency_ms(records: Path) -> Dict[str, float]:
    """Point -> its network's median batch-1 latency through ONNX Runtime in milliseconds (``latency.json``)."""
    path = records / "latency.json"
    if not path.exists():
        return {}
    return {point: seconds * 1e3 for point, seconds in json.loads(path.read_text())["latency"][LATENCY_KEY].items()}


def train_command(point: str, seed: int, out: Path, extra: List[str]) -> List[str]:
    return [sys.executable, "-m", "cifar10_recipe.cli", "--preset", "cpu", *POINTS[point], "--seed", str(seed),
            "--progress", "off", "--out", str(out), *extra]


def seconds_per_epoch(records: Path) -> Dict[str, Dict[str, float]]:
    """Training seconds of one epoch of 50,000 images per point, from the timing runs' second epochs (mean and
    values over the repeats of the alternated sitting)."""
    result = {}
    for point in POINTS:
        values = [read_metrics(path)[-1]["train_s"] * TRAIN_IMAGES / TIMING_SUBSET
                  for path in sorted(records.glob(f"timing-r*-{point}/metrics.jsonl"))]
        if values:
            result[point] = {"mean": sum(values) / len(values), "values": values}
    return result


def inference_multiply_adds(config: Dict[str, Any]) -> int:
    """Multiply-adds per 32x32 image of a record's model as the papers count them (each dynamic convolution as one
    convolution with its per-sample kernel, routing included, elementwise products not;
    :func:`dynconv.models.count_parameters_and_multiply_adds`)."""
    model = timm.create_model(config["model"], **json.loads(config.get("model_kwargs") or "{}"))
    return count_parameters_and_multiply_adds(model, (3, 32, 32))[1]


def collect(records: Path) -> Dict[str, Any]:
    """Per point: accuracy over seeds, parameters, inference multiply-adds per image and the timed seconds per epoch;
    per dynamic point, the static front's accuracy at its cost on each axis (:func:`front_comparison`)."""
    timing = seconds_per_epoch(records)
    latency = latency_ms(records)
    points = {}
    for point in POINTS:
        names = sorted(path.parent.name for path in records.glob(f"{point}-s*/summary.json"))
        if not names:
            continue
        summaries = [json.loads((records / name / "summary.json").read_text()) for name in names]
        points[point] = {
            "front": point in FRONT, "model": summaries[0]["model"], "params": summaries[0]["params"],
            "macs_per_image": inference_multiply_adds(json.loads((records / names[0] / "config.json").read_text())),
            "test_acc": spread(summaries, "test_acc"), "test_acc_tta": spread(summaries, "test_acc_tta"),
            "seconds_per_epoch": timing.get(point), "latency_ms": latency.get(point), "records": names,
            "commits": sorted({s.get("provenance", {}).get("commit") or "?" for s in summaries}),
            "machines": sorted({s.get("provenance", {}).get("machine", {}).get("cpu") or "?" for s in summaries}),
        }
    return {"points": points, "versus_front": front_comparison(points)}


#: the cost axes a dynamic point is compared with the static front on: key of a point's entry -> its value
AXES = {"params": lambda entry: entry["params"], "macs": lambda entry: entry["macs_per_image"],
        "latency": lambda entry: entry.get("latency_ms"),
        "time": lambda entry: entry["seconds_per_epoch"]["mean"] if entry["seconds_per_epoch"] else None}


def front_accuracy(front: List[Tuple[float, float]], cost: float) -> Optional[float]:
    """The static front's accuracy at ``cost``: linear in log(cost) between the two front points around it; ``None``
    outside the front's range (the front says nothing there).

    Example:
        >>> round(front_accuracy([(1.0, 0.80), (4.0, 0.90)], 2.0), 3)
        0.85
    """
    front = sorted(front)
    for (low_cost, low_acc), (high_cost, high_acc) in itertools.pairwise(front):
        if low_cost <= cost <= high_cost:
            share = math.log(cost / low_cost) / math.log(high_cost / low_cost) if high_cost > low_cost else 0.0
            return low_acc + share * (high_acc - low_acc)
    return None


def front_comparison(points: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, Optional[float]]]]:
    """dynamic point -> axis -> {metric: its accuracy minus the front's at its cost} for metrics ``test_acc`` and
    ``test_acc_tta`` (``None`` where the point's cost is outside the front's range or unmeasured)."""
    comparison: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {}
    for point, entry in points.items():
        if entry["front"]:
            continue
        comparison[point] = {}
        for axis, cost_of in AXES.items():
            comparison[point][axis] = {}
            for metric in ("test_acc", "test_acc_tta"):
                front = [(cost_of(e), e[metric]["mean"]) for e in points.values()
                         if e["front"] and cost_of(e) is not None and e[metric]]
                cost = cost_of(entry)
                level = front_accuracy(front, cost) if cost is not None and len(front) > 1 else None
                comparison[point][axis][metric] = (None if level is None or not entry[metric]
                                                   else entry[metric]["mean"] - level)
    return comparison


def percent(stats: Optional[Dict[str, Any]]) -> str:
    if stats is None:
        return "-"
    count = len(stats["values"])
    deviation = f" ± {100 * stats['std']:.2f}" if count > 1 else ""
    return f"{100 * stats['mean']:.2f}%{deviation} ({count})"


def format_seconds(seconds: Optional[Dict[str, Any]]) -> str:
    return "-" if seconds is None else f"{seconds['mean']:.0f}"


def format_latency(milliseconds: Optional[float]) -> str:
    return "-" if milliseconds is None else f"{milliseconds:.2f}"


def points_difference(value: Optional[float]) -> str:
    return "outside the front" if value is None else f"{100 * value:+.2f}"


def markdown_table(results: Dict[str, Any]) -> str:
    """Every point's costs and accuracy, then each dynamic point against the static front at its cost."""
    lines = ["| point | parameters | inference MMACs | batch-1 latency, ms | s/epoch (timed alone) | test acc | "
             "with TTA |", "|---|---|---|---|---|---|---|"]
    for point, entry in results["points"].items():
        seconds = entry["seconds_per_epoch"]
        lines.append(f"| `{point}` | {entry['params'] / 1e6:.2f} M | {entry['macs_per_image'] / 1e6:.0f} | "
                     f"{format_latency(entry.get('latency_ms'))} | {format_seconds(seconds)} | "
                     f"{percent(entry['test_acc'])} | {percent(entry['test_acc_tta'])} |")
    lines += ["", "Points above (+) or below (-) the static front at equal cost, test accuracy (with TTA):", "",
              "| point | at equal parameters | at equal inference MACs | at equal batch-1 latency | "
              "at equal training time |", "|---|---|---|---|---|"]
    for point, axes in results["versus_front"].items():
        entry = results["points"][point]
        cells = ["not measured" if cost_of(entry) is None else
                 f"{points_difference(axes[axis]['test_acc'])} ({points_difference(axes[axis]['test_acc_tta'])})"
                 for axis, cost_of in AXES.items()]
        lines.append(f"| `{point}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("train", "timing", "latency", "report"))
    parser.add_argument("--records", type=Path, default=DEFAULT_RECORDS, help="where the record files go")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/four-axis"), help="where the runs train")
    parser.add_argument("--only", nargs="*", help="only these points (train, timing, latency)")
    parser.add_argument("--repeats", type=int, default=2, help="timing: alternated rounds over the points")
    parser.add_argument("extra", nargs="*", help="extra train.py flags after --, e.g. -- --threads 1")
    args = parser.parse_intermixed_args(argv)  # so that "--only a b -- --threads 1" reaches train.py
    points = [point for point in POINTS if not args.only or point in args.only]
    if args.step == "train":
        for point, seed in PLAN:
            if point in points:
                name = f"{point}-s{seed}"
                run_and_record(name, train_command(point, seed, args.runs_dir / name, args.extra),
                               args.runs_dir / name, args.records)
    elif args.step == "timing":
        for repeat in range(args.repeats):
            for point in points:
                name = f"timing-r{repeat}-{point}"
                extra = ["--subset", str(TIMING_SUBSET), "--epochs", str(TIMING_EPOCHS), "--eval-every",
                         str(TIMING_EPOCHS), *args.extra]
                run_and_record(name, train_command(point, 0, args.runs_dir / name, extra), args.runs_dir / name,
                               args.records)
    elif args.step == "latency":
        measure_latency(points, args.records / "latency",
                        command=["examples/cifar10/four_axis_study.py", *(sys.argv[1:] if argv is None else argv)])
    else:
        results = collect(args.records)
        (args.records / "study.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.records / "study.md").write_text(markdown_table(results))
        print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
