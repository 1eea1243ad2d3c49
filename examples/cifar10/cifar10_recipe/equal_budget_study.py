"""The equal-budget study: does a dynamic block beat its static twin at equal epochs and at equal wall time?

Every block family (static, branch, condconv, dyconv, odconv) in the ``dynconv_cifar_tiny`` backbone, trained with
the ``tiny`` preset's recipe on the 2-core CPU (the preset was called ``cpu`` until ``cpu`` moved to airbench's
recipe; the records' commands, run before the rename, say ``--preset cpu`` and mean this recipe):

    python examples/cifar10/equal_budget_study.py timing   # ALONE on the machine: seconds per epoch of each family
    python examples/cifar10/equal_budget_study.py train    # the study's runs (resumable; finished runs are skipped)
    python examples/cifar10/equal_budget_study.py report   # table (markdown + JSON) and plot from the records

Besides the five families, the study trains **levers** (issue 13's "push for the win"): variants of a dynamic
family that could make it cheaper or better at equal time (``LEVERS``: a dynamic block only in the second position of
every segment for branch mixing, branches of kernel sizes 1 and 3, dynamic only in the two blocks whose routing
varies by content), timed and trained the same way at equal time.

``timing`` runs must have the machine to themselves (their wall time sets the equal-time budgets); ``train`` runs
may share it, since accuracy after N epochs does not depend on load; their x axis in the plot is epochs times the
family's timed seconds per epoch. The equal-time budget is the branch model's 11 epochs; each family gets the most
epochs whose timed wall time fits in it (the learning-rate schedule scales with the epoch count).

Records (``config.json``, ``metrics.jsonl``, ``summary.json`` of every run) go to ``--records``; run folders with
checkpoints stay under ``--runs-dir``.
"""
import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .report import spread

# the recipe package sits in examples/cifar10, beside the records
EXAMPLES = Path(__file__).resolve().parents[1]
DEFAULT_RECORDS = EXAMPLES / "records" / "cpu-equal-budget"
FAMILIES = ("static", "branch", "condconv", "dyconv", "odconv")
# lever name -> (family, train.py flags beyond --block): variants that could buy a dynamic block the win at equal time
LEVERS: Dict[str, tuple] = {
    # the dynamic block only in the second position of every segment (as dynconv_cifar_fast does): about half the
    # cost (branch only: K=1 of a kernel-mixing family is still a routed one-kernel layer, not a static conv)
    "branch_half": ("branch", ["--model-kwargs", '{"num_experts": [[1, 2], [1, 2], [1, 2]]}']),
    # branches of kernel sizes 1 and 3: a 3x3 and a 1x1 convolution per block instead of two 3x3 ones
    "branch_k13": ("branch", ["--model-kwargs", '{"kernel_size": [1, 3]}']),
    # dynamic only in the two blocks whose routers varied most by content in the shipped branch model
    # (stages.1.2 and stages.2.0, docs/routing.rst); the other four blocks static
    "branch_routed": ("branch", ["--model-kwargs", '{"num_experts": [[1, 1], [1, 2], [2, 1]]}']),
}
VARIANTS = (*FAMILIES, *LEVERS)
BUDGET_FAMILY, BUDGET_EPOCHS = "branch", 11
TIMING_EPOCHS = 2
TIMING_SUBSET = 12_800  # 50 full batches: the second epoch's training time scales to the 50,000 images
TRAIN_IMAGES = 50_000
RECORD_FILES = ("config.json", "metrics.jsonl", "summary.json")

# (variant, budget, seed) in the order they are trained: one seed of everything at equal time first (the question),
# then the second seeds of static and branch, then the levers at equal time, then equal epochs for the kernel-mixing
# families. branch_routed beat the static twin at equal time on its first seed, so a second seed checks it.
PLAN = [
    ("static", "epochs", 0), ("branch", "epochs", 0), ("static", "time", 0), ("condconv", "time", 0),
    ("dyconv", "time", 0), ("odconv", "time", 0), ("branch", "epochs", 1), ("static", "time", 1),
    ("static", "epochs", 1), *((lever, "time", 0) for lever in LEVERS), ("branch_routed", "time", 1),
    ("condconv", "epochs", 0), ("dyconv", "epochs", 0), ("odconv", "epochs", 0),
]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_metrics(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def variant_flags(variant: str) -> List[str]:
    """train.py flags of a family or a lever (its family's --block, then the lever's own flags)."""
    family, flags = LEVERS.get(variant, (variant, []))
    return ["--block", family, *flags]


def train_command(variant: str, epochs: int, seed: int, out: Path, extra: List[str]) -> List[str]:
    return [sys.executable, "-m", "cifar10_recipe.cli", "--preset", "tiny", *variant_flags(variant), "--epochs",
            str(epochs), "--seed", str(seed), "--progress", "off", "--out", str(out), *extra]


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


def seconds_per_epoch(records: Path) -> Dict[str, float]:
    """Wall seconds of one steady-state epoch per variant (training on all 50,000 images and the evaluation that
    follows), from the timing runs' second epoch: its training time scaled from the subset to the whole training set,
    plus its evaluation time (the wall time of the epoch that was not training)."""
    result = {}
    for family in VARIANTS:
        path = records / f"timing-{family}" / "metrics.jsonl"
        if path.exists():
            first, last = read_metrics(path)[-2:]
            evaluation = last["elapsed_s"] - first["elapsed_s"] - last["train_s"]
            result[family] = last["train_s"] * TRAIN_IMAGES / TIMING_SUBSET + evaluation
    return result


def equal_time_epochs(per_epoch: Dict[str, float]) -> Dict[str, int]:
    """Epochs of each family that fit in the budget family's ``BUDGET_EPOCHS`` epochs of wall time."""
    budget = BUDGET_EPOCHS * per_epoch[BUDGET_FAMILY]
    return {family: max(1, math.floor(budget / seconds + 1e-9)) for family, seconds in per_epoch.items()}


def run_name(family: str, epochs: int, seed: int) -> str:
    return f"{family}-e{epochs}-s{seed}"


def planned_runs(records: Path) -> List[tuple]:
    per_epoch = seconds_per_epoch(records)
    missing = [family for family in FAMILIES if family not in per_epoch]
    if missing:
        raise SystemExit(f"no timing record for {missing} in {records}: run the 'timing' step first, alone")
    time_epochs = equal_time_epochs(per_epoch)
    runs = []
    for family, budget, seed in PLAN:
        if family not in per_epoch:
            print(f"{family}: no timing record yet, not planned (run the 'timing' step alone)", flush=True)
            continue
        epochs = BUDGET_EPOCHS if budget == "epochs" else time_epochs[family]
        name = run_name(family, epochs, seed)
        if name not in [run[0] for run in runs]:
            runs.append((name, family, epochs, seed))
    return runs


def collect(records: Path) -> Dict[str, Any]:
    """The study's results from its records: per family, equal-epoch and equal-time accuracy over seeds."""
    per_epoch = seconds_per_epoch(records)
    time_epochs = equal_time_epochs(per_epoch)
    families = {}
    for family in VARIANTS:
        if family in LEVERS and family not in per_epoch:
            continue  # a lever enters the table once it is timed
        entry: Dict[str, Any] = {"seconds_per_epoch": per_epoch.get(family),
                                 "equal_time_epochs": time_epochs.get(family)}
        for budget, epochs in (("equal_epochs", BUDGET_EPOCHS), ("equal_time", time_epochs.get(family))):
            summaries = [read_json(path) for path in sorted(records.glob(f"{family}-e{epochs}-s*/summary.json"))]
            entry[budget] = {"epochs": epochs, "test_acc": spread(summaries, "test_acc"),
                             "test_acc_tta": spread(summaries, "test_acc_tta"), "train_s": spread(summaries, "train_s"),
                             "commits": sorted({s.get("provenance", {}).get("commit") or "?" for s in summaries})}
        families[family] = entry
    return {"budget": {"family": BUDGET_FAMILY, "epochs": BUDGET_EPOCHS,
                       "seconds": BUDGET_EPOCHS * per_epoch[BUDGET_FAMILY] if BUDGET_FAMILY in per_epoch else None},
            "families": families}


def percent(stats: Optional[Dict[str, Any]]) -> str:
    """``mean +- std (n=...)`` in percent, from :func:`cifar10_recipe.report.spread`."""
    if stats is None:
        return "not run yet"
    count = len(stats["values"])
    deviation = f" +- {100 * stats['std']:.2f}" if count > 1 else ""
    return f"{100 * stats['mean']:.2f}%{deviation} (n={count})"


def markdown_table(results: Dict[str, Any]) -> str:
    lines = ["| block | s/epoch (timed alone) | equal epochs (11): test acc | with TTA | equal time: epochs | "
             "test acc | with TTA |", "|---|---|---|---|---|---|---|"]
    for family, entry in results["families"].items():
        seconds = entry["seconds_per_epoch"]
        lines.append(" | ".join([
            f"| `{family}`" + (f" ({' '.join(LEVERS[family][1])})" if family in LEVERS else ""),
            f"{seconds:.1f}" if seconds else "-", percent(entry["equal_epochs"]["test_acc"]),
            percent(entry["equal_epochs"]["test_acc_tta"]), str(entry["equal_time_epochs"] or "-"),
            percent(entry["equal_time"]["test_acc"]), percent(entry["equal_time"]["test_acc_tta"])]) + " |")
    return "\n".join(lines) + "\n"


def plot(records: Path, path: Path) -> None:
    """Test accuracy against training wall time (epochs x timed seconds per epoch), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_epoch = seconds_per_epoch(records)
    figure, axis = plt.subplots(figsize=(8, 5))
    colours = dict(zip(VARIANTS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for run_dir in sorted(records.glob("*-e*-s*")):
        family = run_dir.name.split("-")[0]
        rows = [row for row in read_metrics(run_dir / "metrics.jsonl") if row.get("test_acc") is not None]
        minutes = [(row["epoch"] + 1) * per_epoch[family] / 60 for row in rows]
        axis.plot(minutes, [100 * row["test_acc"] for row in rows], marker=".", color=colours[family],
                  alpha=0.9 if run_dir.name.endswith("s0") else 0.5, label=run_dir.name)
    budget = BUDGET_EPOCHS * per_epoch[BUDGET_FAMILY] / 60
    axis.axvline(budget, color="grey", linestyle="--", linewidth=1,
                 label=f"budget: {BUDGET_FAMILY}, {BUDGET_EPOCHS} epochs")
    axis.set_xlabel("wall time (minutes; epochs x seconds per epoch timed alone on the 2-core CPU)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_ylim(60, None)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    axis.set_title("dynconv_cifar_tiny, tiny preset, per block family (local CIFAR-10 copy)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("timing", "train", "report"))
    parser.add_argument("--records", type=Path, default=DEFAULT_RECORDS, help="where the record files go")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/equal-budget"), help="where the runs train")
    parser.add_argument("--only", nargs="*", help="train only these run names (e.g. static-e22-s0)")
    parser.add_argument("--plot", type=Path, help="report: also write the plot here (PNG)")
    parser.add_argument("extra", nargs="*", help="extra train.py flags after --, e.g. -- --subset 512 (dry runs)")
    args = parser.parse_intermixed_args(argv)  # so that "--only a b -- --threads 1" reaches train.py
    if args.step == "timing":
        for family in VARIANTS:
            name = f"timing-{family}"
            extra = ["--subset", str(TIMING_SUBSET), *args.extra]
            run_and_record(name, train_command(family, TIMING_EPOCHS, 0, args.runs_dir / name, extra),
                           args.runs_dir / name, args.records)
    elif args.step == "train":
        for name, family, epochs, seed in planned_runs(args.records):
            if args.only and name not in args.only:
                continue
            run_and_record(name, train_command(family, epochs, seed, args.runs_dir / name, args.extra),
                           args.runs_dir / name, args.records)
    else:
        results = collect(args.records)
        (args.records / "study.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.records / "study.md").write_text(markdown_table(results))
        if args.plot:
            plot(args.records, args.plot)
        print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
