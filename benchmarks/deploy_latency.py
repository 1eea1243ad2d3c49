"""Deployment latency on CPU of the networks the study trained and the shipped ones, for the accuracy-latency chart.

    python -m benchmarks.deploy_latency --out benchmarks/results/deploy_latency   # about 5 minutes on 2 cores

Every model is timed in float32 at batch 1 and batch 256, on two paths: eager in eval mode with every BatchNorm a
block can fold folded (``timm.utils.reparameterize_model``), and ONNX Runtime (CPU provider) on the file
:func:`dynconv.export.export_onnx` writes from the folded model. The models are alternated round by round; medians.
Accuracy is not measured here: the chart takes it from the records (``examples/cifar10/results.json``).
Writes ``<out>.json`` and ``<out>.md``.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import timm
import torch
from timm.utils import reparameterize_model

import dynconv  # noqa: F401  (registers the models)
from dynconv.export import export_onnx
from dynconv.records import provenance, write_record

#: the networks of the equal-time study (airbench94's layout and its dynamic variants) and the shipped tiny family
MODELS = ("dynconv_cifar_fast_static", "dynconv_cifar_fast_dcd_routed", "dynconv_cifar_fast_dcd", "dynconv_cifar_fast",
          "dynconv_cifar_tiny_static", "dynconv_cifar_tiny_routed", "dynconv_cifar_tiny")
BATCHES = (1, 256)
PATHS = ("eager_folded", "onnxruntime")


def _runners(name: str, batch: int, folder: Path, kwargs: Optional[Dict[str, Any]] = None
             ) -> Dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    model = reparameterize_model(timm.create_model(name, **(kwargs or {})).eval())
    x = torch.randn(batch, *model.pretrained_cfg["input_size"])

    def eager():
        with torch.inference_mode():
            model(x)

    runners = {"eager_folded": eager}
    try:
        import onnxruntime
    except ImportError:
        return runners
    path = export_onnx(model, folder / f"{name}.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # ONNX Runtime's idle threads spin by default, taking the cores from the eager runs alternated with it
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = x.numpy()
    runners["onnxruntime"] = lambda: session.run(["logits"], {"images": images})
    return runners


def latencies(models, batches, rounds: int,
              specs: Optional[Mapping[str, Tuple[str, Dict[str, Any]]]] = None) -> Dict[str, Dict[str, float]]:
    """"<path> B=<batch>" -> model -> median seconds per call. ``specs`` maps a label of ``models`` that is not a
    registered name to the model it stands for and its ``timm.create_model`` arguments (e.g. a static network at
    another width)."""
    specs = specs or {}
    results: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for batch in batches:
            runners = {}
            for label in models:
                name, kwargs = specs.get(label, (label, {}))
                runners[label] = _runners(name, batch, Path(folder), kwargs)
            for path in PATHS:
                candidates = {name: r[path] for name, r in runners.items() if path in r}
                for run in candidates.values():
                    for _ in range(3):  # warm-up: oneDNN primitives, onnxruntime's first run
                        run()
                times: Dict[str, List[float]] = {name: [] for name in candidates}
                calls = 20 if batch == 1 else 2
                for _ in range(rounds):
                    for name, run in candidates.items():
                        start = time.perf_counter()
                        for _ in range(calls):
                            run()
                        times[name].append((time.perf_counter() - start) / calls)
                key = f"{path} B={batch}"
                results[key] = {name: statistics.median(values) for name, values in times.items()}
                print(key + ": " + ", ".join(f"{n} {v * 1e3:.2f} ms" for n, v in results[key].items()), flush=True)
    return results


def markdown(record: Dict) -> str:
    """The record as a Markdown table: one row per model, one column per path and batch."""
    keys = list(record["latency"])
    lines = [f"# CPU deployment latency, float32 ({record['provenance']['machine']['cpu']}, "
             f"{torch.get_num_threads()} threads)", "",
             f"Median of {record['rounds']} alternated rounds. Command: `{record['provenance']['command']}`, commit "
             f"{record['provenance']['commit']}.", "", "| model | " + " | ".join(keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for name in record["models"]:
        lines.append(f"| {name} | " + " | ".join(f"{record['latency'][k][name] * 1e3:.2f} ms"
                                                 for k in keys if name in record["latency"][k]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .md)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    args = parser.parse_args(argv)
    record = {"models": args.models, "rounds": args.rounds, "precision": "float32",
              "provenance": provenance(torch.device("cpu"), ["benchmarks/deploy_latency.py", *(argv or sys.argv[1:])]),
              "latency": latencies(args.models, args.batches, args.rounds)}
    write_record(args.out, record, markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
