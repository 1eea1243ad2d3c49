"""The four-axis study: is a dynamic network above the static front on parameters, inference MFLOPs, batch-1 latency
or training time?

Every point trains with the ``cpu`` preset (Muon, 9 epochs, the local CIFAR-10 copy), 3 seeds each; the static
front is airbench94's network at four widths. Steps:

    python examples/cifar10/four_axis_study.py train    # every point's missing seeds (shares the machine: accuracy
                                                        # after 9 epochs does not depend on load)
    python examples/cifar10/four_axis_study.py timing   # ALONE on the machine: seconds per epoch of every point, in
                                                        # alternated short runs
    python examples/cifar10/four_axis_study.py report   # study.json and study.md from the records

Records (``config.json``, ``metrics.jsonl``, ``summary.json`` of every run) go to ``--records``; run folders with
checkpoints stay under ``--runs-dir``. Batch-1 latency comes from ``benchmarks/deploy_latency.py`` (its record is
named in the report).
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

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
RECORD_FILES = ("config.json", "metrics.jsonl", "summary.json")


def train_command(point: str, seed: int, out: Path, extra: List[str]) -> List[str]:
    return [sys.executable, "-m", "cifar10_recipe.cli", "--preset", "cpu", *POINTS[point], "--seed", str(seed),
            "--progress", "off", "--out", str(out), *extra]


def run_and_record(name: str, command: List[str], run_dir: Path, records: Path) -> None:
    """Run (or resume) one training run, then copy its record files to ``records/name``."""
    if (records / name / "summary.json").exists():
        print(f"{name}: recorded already", flush=True)
        return
    if (run_dir / "checkpoints" / "last.json").exists():
        command = [sys.executable, "-m", "cifar10_recipe.cli", "--resume", str(run_dir), "--progress", "off"]
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # started but never checkpointed: nothing to resume
    print(f"{name}: {' '.join(command)}", flush=True)
    subprocess.run(command, check=True)
    (records / name).mkdir(parents=True, exist_ok=True)
    for file in RECORD_FILES:
        shutil.copy2(run_dir / file, records / name / file)


def read_metrics(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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


def collect(records: Path) -> Dict[str, Any]:
    """Per point: accuracy over seeds, parameters, multiply-adds per image and the timed seconds per epoch."""
    timing = seconds_per_epoch(records)
    points = {}
    for point in POINTS:
        summaries = [json.loads(path.read_text()) for path in sorted(records.glob(f"{point}-s*/summary.json"))]
        if not summaries:
            continue
        points[point] = {
            "front": point in FRONT, "model": summaries[0]["model"], "params": summaries[0]["params"],
            "mflops_per_image": summaries[0]["flops_per_image"] / 1e6,
            "test_acc": spread(summaries, "test_acc"), "test_acc_tta": spread(summaries, "test_acc_tta"),
            "seconds_per_epoch": timing.get(point),
            "commits": sorted({s.get("provenance", {}).get("commit") or "?" for s in summaries}),
            "machines": sorted({s.get("provenance", {}).get("machine", {}).get("cpu") or "?" for s in summaries}),
        }
    return {"points": points}


def percent(stats: Optional[Dict[str, Any]]) -> str:
    if stats is None:
        return "-"
    count = len(stats["values"])
    deviation = f" ± {100 * stats['std']:.2f}" if count > 1 else ""
    return f"{100 * stats['mean']:.2f}%{deviation} ({count})"


def format_seconds(seconds: Optional[Dict[str, Any]]) -> str:
    return "-" if seconds is None else f"{seconds['mean']:.0f}"


def markdown_table(results: Dict[str, Any]) -> str:
    lines = ["| point | parameters | MFLOPs | s/epoch (timed alone) | test acc | with TTA |",
             "|---|---|---|---|---|---|"]
    for point, entry in results["points"].items():
        seconds = entry["seconds_per_epoch"]
        lines.append(f"| `{point}` | {entry['params'] / 1e6:.2f} M | {entry['mflops_per_image']:.0f} | "
                     f"{format_seconds(seconds)} | "
                     f"{percent(entry['test_acc'])} | {percent(entry['test_acc_tta'])} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("train", "timing", "report"))
    parser.add_argument("--records", type=Path, default=DEFAULT_RECORDS, help="where the record files go")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/four-axis"), help="where the runs train")
    parser.add_argument("--only", nargs="*", help="only these points (train, timing)")
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
    else:
        results = collect(args.records)
        (args.records / "study.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.records / "study.md").write_text(markdown_table(results))
        print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
