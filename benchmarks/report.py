"""Turn pytest-benchmark JSON into tables of medians and ratios (markdown for the README, CSV for the docs).

    python -m benchmarks.report results.json [more.json ...] --out benchmarks/results/cpu

writes ``cpu.md`` (machine line, ratio summary, table) and ``cpu.csv`` (one row per group and implementation).
Later files override earlier ones for the same group and implementation (to refresh part of a run).
One table row per benchmark group (a configuration); columns are the implementations' medians in milliseconds and
the ratios the targets are stated in: fused / floor (target <= 1.10), naive / fused (speed-up over the naive K-conv
loop; target >= 1.25 on CPU, >= 2 on GPU at batch 64), each kernel-mixing block / static Conv-BN-ReLU (target
<= 1.10 forward, <= 1.3 forward+backward) and timm's CondConv / ours (> 1 means ours is faster).
"""
import argparse
import csv
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

Medians = Dict[str, Dict[str, float]]  # group -> implementation -> median seconds

# (column title, numerator implementation, denominator implementation)
RATIOS = [
    ("fused/floor", "fused", "floor"),
    ("folded/floor", "fused_folded", "floor"),
    ("naive/fused", "naive", "fused"),
    ("timm_condconv/static", "timm_condconv", "static"),
    ("condconv/static", "condconv", "static"),
    ("dyconv/static", "dyconv", "static"),
    ("odconv/static", "odconv", "static"),
    ("timm_condconv/condconv", "timm_condconv", "condconv"),
]
ORDER = ["fused", "fused_folded", "floor", "naive", "static", "timm_condconv", "condconv", "dyconv", "odconv"]


def load_json(path: Path) -> Tuple[Medians, str]:
    """Medians and a one-line description of machine and versions from a pytest-benchmark JSON file."""
    data = json.loads(path.read_text())
    medians: Medians = defaultdict(dict)
    for bench in data["benchmarks"]:
        medians[bench["group"]][bench["extra_info"]["implementation"]] = bench["stats"]["median"]
    info = data.get("machine_info", {})
    devices = sorted({b["extra_info"].get("device") for b in data["benchmarks"]})
    versions = sorted({b["extra_info"].get("torch") for b in data["benchmarks"]})
    gpus = sorted({b["extra_info"].get("gpu") for b in data["benchmarks"] if b["extra_info"].get("gpu")})
    gpu_names = f" ({', '.join(gpus)})" if gpus else ""
    cpu = info.get("cpu", {})
    machine = (f"{data.get('datetime', '')[:10]}: device {', '.join(devices)}{gpu_names}, CPU "
               f"{cpu.get('brand_raw', '?')} ({cpu.get('count', '?')} logical cores), torch {', '.join(versions)}, "
               f"python {info.get('python_version', '?')}")
    return medians, machine


def load_csv(path: Path) -> Medians:
    medians: Medians = defaultdict(dict)
    with open(path) as file:
        for row in csv.DictReader(file):
            medians[row["group"]][row["implementation"]] = float(row["median_s"])
    return medians


def write_csv(medians: Medians, path: Path) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["group", "implementation", "median_s"])
        for group in sorted(medians, key=_group_order):
            for name, seconds in sorted(medians[group].items()):
                writer.writerow([group, name, f"{seconds:.6g}"])


def table(medians: Medians) -> Tuple[List[str], List[List[str]]]:
    """Header and rows: configuration, medians in ms, ratios."""
    present = {n for row in medians.values() for n in row}
    names = [n for n in ORDER if n in present] + sorted(present - set(ORDER))
    ratios = [r for r in RATIOS if r[1] in names and r[2] in names]
    header = ["configuration", *[f"{name} ms" for name in names], *[title for title, _, _ in ratios]]
    rows = []
    for group in sorted(medians, key=_group_order):
        row = medians[group]
        rows.append([group, *[f"{1e3 * row[n]:.3f}" if n in row else "" for n in names],
                     *[f"{row[a] / row[b]:.2f}" if a in row and b in row else "" for _, a, b in ratios]])
    return header, rows


def ratio_summary(medians: Medians) -> List[str]:
    """Median and range of each ratio over all groups and over the batch-64 groups."""
    lines = []
    for title, a, b in RATIOS:
        for label, keep in (("all groups", lambda g: True), ("B=64", lambda g: " B=64 " in g)):
            values = [row[a] / row[b] for g, row in medians.items() if keep(g) and a in row and b in row]
            if values:
                lines.append(f"{title} over {label} ({len(values)}): median {statistics.median(values):.2f}, "
                             f"range {min(values):.2f}-{max(values):.2f}")
    return lines


def split_suites(medians: Medians) -> Dict[str, Medians]:
    """Block groups and per-sample-convolution mode groups (named "modes ...") go to separate tables."""
    suites: Dict[str, Medians] = {"blocks": {}, "modes": {}}
    for group, row in medians.items():
        suites["modes" if group.startswith("modes ") else "blocks"][group] = row
    return {name: suite for name, suite in suites.items() if suite}


def markdown(medians: Medians, machine: str, command: str = "") -> str:
    title = f"Measured {machine}." + (f" Command: `{command}`." if command else "")
    lines = [title, "", *[f"- {line}" for line in ratio_summary(medians)]]
    for name, suite in split_suites(medians).items():
        header, rows = table(suite)
        lines += ["", f"### {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _group_order(group: str):
    batch = int(re.search(r"B=(\d+)", group).group(1))
    words = group.split(" ")
    return words[0], words[1], batch, group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, nargs="+", help="pytest-benchmark --benchmark-json output(s)")
    parser.add_argument("--out", type=Path, help="write OUT.md and OUT.csv")
    parser.add_argument("--command", default="", help="the command that measured, for the table's header")
    args = parser.parse_args()
    medians: Medians = defaultdict(dict)
    machines = []
    for path in args.json:
        part, machine = load_json(path)
        machines.append(machine)
        for group, row in part.items():
            medians[group].update(row)
    machine = "; ".join(dict.fromkeys(machines))
    text = markdown(medians, machine, args.command)
    print(text)
    if args.out:
        args.out.with_suffix(".md").write_text(text)
        write_csv(medians, args.out.with_suffix(".csv"))


if __name__ == "__main__":
    main()
