"""Inference and training throughput of every registered model at its default input size, in the columns of timm's
``benchmark.py`` results (``infer_samples_per_sec``, ``infer_step_time`` in ms, ``param_count`` in millions,
``infer_gmacs``, and the ``train_`` equivalents), so that dynconv's models read like timm's own tables:

    python -m benchmarks.timm_benchmark --out benchmarks/results/timm_benchmark/<machine>   # alone on the machine

Each model: eval mode under ``torch.inference_mode`` for inference; one SGD step (cross-entropy on random labels) for
training; one warm-up step, then the median of ``--steps`` timed steps. Writes ``<out>.csv`` (timm's columns),
``<out>.json`` (the rows with the machine, versions, commit and command) and a ``<out>.md`` table. Batches are small
(2-core CPU): compare samples/s only within one file.
"""
import argparse
import csv
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dynconv
from dynconv.records import provenance, write_record

#: timm's benchmark.py result columns (its ``infer_macts`` has no counterpart here and is left out)
COLUMNS = ["model", "infer_samples_per_sec", "infer_step_time", "infer_batch_size", "infer_img_size", "infer_gmacs",
           "param_count", "train_samples_per_sec", "train_step_time", "train_batch_size", "train_img_size"]


def _median_seconds(step: Callable[[], None], steps: int) -> float:
    step()  # warm-up: allocator, oneDNN primitives, the automatic forms' first choice
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _gmacs(model: nn.Module, input_size) -> float:
    """Multiply-accumulates of one image's forward pass, in billions (FlopCounterMode counts a MAC as two FLOPs)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *input_size))
    return counter.get_total_flops() / 2e9


def benchmark_model(name: str, batch_size: int, steps: int) -> Dict[str, object]:
    """One CSV row: ``name`` at its default input size, inference and one training step at ``batch_size``."""
    torch.manual_seed(0)
    model = timm.create_model(name)
    input_size = model.pretrained_cfg["input_size"]
    num_classes = model.num_classes
    images = torch.randn(batch_size, *input_size)
    labels = torch.randint(0, num_classes, (batch_size,))

    model.eval()
    gmacs = _gmacs(model, input_size)

    def infer() -> None:
        with torch.inference_mode():
            model(images)

    infer_s = _median_seconds(infer, steps)

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()

    train_s = _median_seconds(train, steps)
    return {"model": name, "infer_samples_per_sec": round(batch_size / infer_s, 2),
            "infer_step_time": round(infer_s * 1e3, 3), "infer_batch_size": batch_size,
            "infer_img_size": input_size[-1], "infer_gmacs": round(gmacs, 3),
            "param_count": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "train_samples_per_sec": round(batch_size / train_s, 2), "train_step_time": round(train_s * 1e3, 3),
            "train_batch_size": batch_size, "train_img_size": input_size[-1]}


def to_csv(rows: List[Dict[str, object]]) -> str:
    """The rows in timm's column order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _markdown(record: Dict[str, object]) -> str:
    machine = record["provenance"]["machine"]
    title = f"# Every registered model in timm's benchmark columns ({machine['cpu']}, {record['threads']} threads)"
    lines = [title, "",
             f"Median of {record['steps']} steps after one warm-up; step times in ms. Command: "
             f"`{record['provenance']['command']}`, commit {record['provenance']['commit']}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    lines += ["| " + " | ".join(str(row[key]) for key in COLUMNS) + " |" for row in record["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.csv and .json)")
    parser.add_argument("--models", nargs="*", help="these registered models (default: every one)")
    parser.add_argument("--batch-size", type=int, default=32, help="CIFAR-sized models (default 32)")
    parser.add_argument("--batch-size-large", type=int, default=8,
                        help="models with inputs larger than 64 pixels, the papers' ImageNet networks (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement, after one warm-up")
    args = parser.parse_args(argv)
    registered = dynconv.models.list_models()
    models = args.models or registered
    unknown = sorted(set(models) - set(registered))
    if unknown:
        parser.error(f"not registered dynconv models: {unknown}; see dynconv.models.list_models()")
    if args.steps < 1 or args.batch_size < 1 or args.batch_size_large < 1:
        parser.error("--steps, --batch-size and --batch-size-large must be at least 1")
    rows = []
    for name in models:
        size = timm.get_pretrained_cfg(name).input_size[-1]
        rows.append(benchmark_model(name, args.batch_size if size <= 64 else args.batch_size_large, args.steps))
        print(", ".join(f"{key} {rows[-1][key]}" for key in COLUMNS), flush=True)
    record = {"steps": args.steps, "threads": torch.get_num_threads(), "provenance": provenance(torch.device("cpu")),
              "rows": rows}
    write_record(args.out, record, _markdown(record))
    args.out.with_suffix(".csv").write_text(to_csv(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
