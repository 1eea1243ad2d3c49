"""Collect run directories (finished or not) into one JSON file and print mean and std of their final accuracy.

    python examples/cifar10/collect_runs.py runs/a runs/b runs/c --out results.json

Each run contributes its config, its per-epoch metrics and, when it finished, its summary; unfinished runs are
listed with the last epoch they reached, and left out of the mean.
"""
import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

from .report import spread


def collect(run_dirs: List[Path]) -> Dict[str, Any]:
    runs = []
    for run_dir in run_dirs:
        metrics_path = run_dir / "metrics.jsonl"
        history = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
        summary_path = run_dir / "summary.json"
        runs.append({
            "run_dir": str(run_dir),
            "config": json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {},
            "summary": json.loads(summary_path.read_text()) if summary_path.exists() else None,
            "history": history,
        })
    finished = [run["summary"] for run in runs if run["summary"] is not None]
    aggregate: Dict[str, Any] = {"runs": len(runs), "finished": len(finished)}
    for key in ("test_acc", "test_acc_tta", "train_s", "wall_s"):
        if (values := spread(finished, key)) is not None:
            aggregate[key] = values
    return {"aggregate": aggregate, "runs": runs}


def describe(collected: Dict[str, Any]) -> str:
    aggregate = collected["aggregate"]
    lines = [f"{aggregate['finished']} of {aggregate['runs']} runs finished"]
    for run in collected["runs"]:
        history = run["history"]
        last = history[-1] if history else None
        state = (f"test acc {100 * run['summary']['test_acc']:.2f}%, wall {run['summary']['wall_s']:.0f}s"
                 if run["summary"] else f"unfinished after {len(history)} epochs" + (
                     f" (last test acc {100 * last['test_acc']:.2f}%)" if last and last.get("test_acc") else ""))
        lines.append(f"  {run['run_dir']}: {state}")
    for key in ("test_acc", "test_acc_tta"):
        if key in aggregate:
            lines.append(f"  {key}: {100 * aggregate[key]['mean']:.2f}% +- {100 * aggregate[key]['std']:.2f} "
                         f"(n={len(aggregate[key]['values'])})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="write the collected JSON here")
    args = parser.parse_args()
    collected = collect(args.run_dirs)
    if args.out:
        args.out.write_text(json.dumps(collected, indent=1) + "\n")
    print(describe(collected))


if __name__ == "__main__":
    main()
