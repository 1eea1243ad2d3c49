"""Turn whole-model pytest-benchmark JSON into images/s tables (markdown and CSV), one row per (model, batch, pass).

    python -m benchmarks.throughput_report inference.json --out benchmarks/results/inference_cpu \\
        --command "pytest benchmarks/test_inference_speed.py --benchmark-enable --benchmark-json inference.json"

Columns are the implementations (deployment paths, or eager/compiled), each as images per second (batch / median
seconds per call), and each path's speed relative to the first column.
"""
import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

from benchmarks.report import load_json

Rows = Dict[Tuple[str, int, str], Dict[str, float]]  # (model, batch, pass) -> implementation -> images/s


def throughput(paths: List[Path]) -> Tuple[Rows, List[str], List[str]]:
    """Images/s per (model, batch, pass) and implementation, the implementations in first-seen order, and one
    machine line (with the commit) per file."""
    rows: Rows = defaultdict(dict)
    implementations: List[str] = []
    machines = []
    for path in paths:
        _, machine = load_json(path)
        commit = json.loads(path.read_text()).get("commit_info", {})
        dirty = " with uncommitted changes" if commit.get("dirty") else ""
        machines.append(f"{machine}, commit {commit.get('id', '?')[:10]}{dirty}")
        for bench in json.loads(path.read_text())["benchmarks"]:
            info = bench["extra_info"]
            key = (info["model"], int(info["batch"]), info["pass_"])
            rows[key][info["implementation"]] = info["batch"] / bench["stats"]["median"]
            if info["implementation"] not in implementations:
                implementations.append(info["implementation"])
    return rows, implementations, machines


def write_tables(rows: Rows, implementations: List[str], machines: List[str], out: Path, command: str) -> None:
    base = implementations[0]
    header = ["model", "batch", "pass", *[f"{name} img/s" for name in implementations],
              *[f"{name}/{base}" for name in implementations[1:]]]
    table = []
    for (model, batch, pass_), values in sorted(rows.items()):
        speeds = [f"{values[name]:.0f}" if name in values else "-" for name in implementations]
        ratios = [f"{values[name] / values[base]:.2f}" if name in values and base in values else "-"
                  for name in implementations[1:]]
        table.append([model, str(batch), pass_, *speeds, *ratios])
    lines = [f"Measured: {machine}" for machine in machines] + ([f"Command: `{command}`"] if command else []) + [""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["model", "batch", "pass", "implementation", "images_per_s"])
        for (model, batch, pass_), values in sorted(rows.items()):
            for name, speed in values.items():
                writer.writerow([model, batch, pass_, name, f"{speed:.1f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.md and .csv written)")
    parser.add_argument("--command", default="", help="the command that produced the JSON, for the header")
    args = parser.parse_args()
    rows, implementations, machines = throughput(args.json)
    write_tables(rows, implementations, machines, args.out, args.command)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
