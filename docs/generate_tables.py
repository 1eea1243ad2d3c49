"""Write the documentation's generated tables from the code and the recorded results.

- ``results.inc.rst``: every recorded training run (``examples/cifar10/results.json``).
- ``models.inc.rst``: every registered dynconv model with its parameters, forward FLOPs at the default input size,
  K per block, block kind and the best recorded accuracy (``examples/cifar10/results.json``).
- ``recipe_flags.inc.rst`` and ``presets.inc.rst``: every flag of ``train.py`` and every preset value.
- ``bench_<name>.inc.rst``: the committed benchmark tables (``benchmarks/results/<name>.csv``).
"""
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import List, Sequence

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def list_table(header: Sequence[str], rows: List[Sequence[str]], widths: str = "auto") -> str:
    def cell(value) -> str:
        return str(value).replace("\n", " ") or " "

    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {cell(row[0])}")
        lines += [f"     - {cell(value)}" for value in row[1:]]
    return "\n".join(lines) + "\n"


def _recorded_results():
    path = ROOT / "examples" / "cifar10" / "results.json"
    return json.loads(path.read_text())["results"] if path.exists() else []


def models_table() -> str:
    import dynconv  # noqa: F401

    results = _recorded_results()
    rows = []
    for name in timm.list_models("dynconv*"):
        model = timm.create_model(name).eval()
        size = model.pretrained_cfg["input_size"]
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, *size))
        cfg = model.cfg
        ks = " / ".join(",".join(map(str, blocks)) for blocks in cfg.block_num_experts)
        # runs of this model as registered: not of a model or preset since changed, nor with another --block or
        # other --model-kwargs
        recorded = [r for r in results if r["model"] == name and "superseded" not in r
                    and re.findall(r"--block (\w+)", r["preset"]) in ([], [cfg.block])
                    and "--model-kwargs" not in r["preset"]]
        best = max(recorded, key=lambda r: r["test_acc_mean"], default=None)
        accuracy = (f"{100 * best['test_acc_mean']:.2f}% ({best['preset']}, {best['runs']} run"
                    f"{'s' if best['runs'] > 1 else ''}, {best['hardware']})" if best else "not recorded yet")
        rows.append([f"``{name}``", f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M",
                     f"{counter.get_total_flops() / 1e6:.0f} M", ks, cfg.block,
                     " x ".join(map(str, size)), accuracy])
    header = ["model", "params", "FLOPs", "K per block (per segment)", "block", "input", "recorded test accuracy"]
    return list_table(header, rows)


def recipe_tables() -> tuple:
    from cifar10_recipe.config import TrainConfig, _field_type
    from cifar10_recipe.presets import PRESETS

    flags = []
    for field in dataclasses.fields(TrainConfig):
        kind = _field_type(field)
        flag = f"``--{field.name.replace('_', '-')}``" + (" / ``--no-...``" if kind is bool else "")
        choices = field.metadata.get("choices")
        flags.append([flag, f"``{field.default!r}``", field.metadata["help"] + (
            f" (one of {', '.join(choices)})" if choices else "")])
    names = list(PRESETS)
    keys = sorted({key for values in PRESETS.values() for key in values},
                  key=[f.name for f in dataclasses.fields(TrainConfig)].index)
    def show(value):  # derived floats such as the decoupled lr (1.5000000000000002) read better rounded
        return f"``{value:.6g}``" if isinstance(value, float) else f"``{value!r}``"

    presets = [[f"``{key}``", *[show(PRESETS[n][key]) if key in PRESETS[n] else "default" for n in names]]
               for key in keys]
    return (list_table(["flag", "default", "meaning"], flags, "25 15 60"),
            list_table(["setting", *names], presets))


def results_table() -> str:
    """Every recorded run in ``examples/cifar10/results.json``."""
    rows = []
    for r in _recorded_results():
        spread = f" +- {100 * r['test_acc_std']:.2f}" if r["runs"] > 1 else ""
        tta = f"{100 * r['test_acc_tta_mean']:.2f}%" if r.get("test_acc_tta_mean") is not None else "-"
        rows.append([f"``{r['model']}``", r["preset"], str(r["runs"]), str(r["epochs"]),
                     f"{100 * r['test_acc_mean']:.2f}%{spread}", tta,
                     f"{r['wall_s']:.0f} s" if r.get("wall_s") is not None else "not comparable (shared machine)",
                     r["hardware"],
                     r["torch"], r["data"], f"``{r['command']}``"])
    if not rows:
        return "No recorded run yet.\n"
    return list_table(["model", "preset", "runs", "epochs", "test accuracy", "with TTA", "wall time", "hardware",
                       "torch", "data", "command"], rows)


def benchmark_tables() -> dict:
    from report import load_csv, ratio_summary, table

    out = {}
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.csv")):
        medians = load_csv(path)
        header, rows = table(medians)
        machine = path.with_suffix(".md").read_text().splitlines()[0] if path.with_suffix(".md").exists() else ""
        machine = machine.replace("`", "``")  # markdown code to reStructuredText literal
        summary = "\n".join(f"- {line}" for line in ratio_summary(medians))
        out[path.stem] = f"{machine}\n\n{summary}\n\n" + list_table(header, rows)
    return out


def throughput_tables() -> dict:
    """Every whole-model throughput table (``benchmarks/results/throughput/<name>.csv``), images/s per path."""
    import csv

    out = {}
    for path in sorted((ROOT / "benchmarks" / "results" / "throughput").glob("*.csv")):
        with open(path) as file:
            records = list(csv.DictReader(file))
        paths = list(dict.fromkeys(r["implementation"] for r in records))
        cells = {}
        for r in records:
            cells.setdefault((r["model"], int(r["batch"]), r["pass"]), {})[r["implementation"]] = float(
                r["images_per_s"])
        rows = [[f"``{model}``", str(batch), pass_, *[f"{values[p]:.0f}" if p in values else "-" for p in paths]]
                for (model, batch, pass_), values in sorted(cells.items())]
        markdown = path.with_suffix(".md")
        machine = markdown.read_text().split("\n\n")[0].replace("`", "``") if markdown.exists() else ""
        header = ["model", "batch", "pass", *[f"{p} (images/s)" for p in paths]]
        out[path.stem] = f"{machine}\n\n" + list_table(header, rows)
    return out


def study_table(folder: Path) -> str:
    """The equal-budget study from its records (``examples/cifar10/records/cpu-equal-budget``), and its plot."""
    import equal_budget_study as study

    records = study.DEFAULT_RECORDS
    if not (records / "timing-branch" / "metrics.jsonl").exists():
        return "No recorded run yet.\n"
    results = study.collect(records)
    rows = []
    for family, entry in results["families"].items():
        seconds = entry["seconds_per_epoch"]
        rows.append([f"``{family}``", f"{seconds:.0f} s" if seconds else "-",
                     study.percent(entry["equal_epochs"]["test_acc"]),
                     study.percent(entry["equal_epochs"]["test_acc_tta"]), str(entry["equal_time_epochs"] or "-"),
                     study.percent(entry["equal_time"]["test_acc"]),
                     study.percent(entry["equal_time"]["test_acc_tta"])])
    study.plot(records, folder / "equal_budget.png")
    header = ["block", "one epoch (timed alone)", "11 epochs: test acc", "with TTA", "equal time: epochs", "test acc",
              "with TTA"]
    return list_table(header, rows)


def pretrained_table() -> str:
    """Every shipped weight: its accuracy on the local CIFAR-10 copy, recipe and provenance (from its metadata)."""
    from cifar10_recipe.shipping import read_metadata

    rows = []
    for name in timm.list_models("dynconv*", pretrained=True):
        path = Path(timm.models.get_pretrained_cfg(name).file)
        if not path.exists():
            continue
        meta = read_metadata(path)
        rows.append([f"``{name}``", f"{100 * meta['test_acc_fp32']:.2f}%", f"{100 * meta['test_acc_recorded']:.2f}% "
                     f"({100 * meta['test_acc_tta_recorded']:.2f}% with TTA)", meta["recipe"]["preset"],
                     str(meta["recipe"]["epochs"]), f"``{meta['command']}``", meta["commit"][:10],
                     f"``{meta['record']}``"])
    if not rows:
        return "No shipped weights yet.\n"
    return list_table(["model.tag", "test accuracy (float32)", "as recorded by the run", "preset", "epochs",
                       "command", "commit", "record"], rows)


def routing_tables(folder: Path) -> dict:
    """Per recorded routing inspection (``examples/cifar10/records/routing/<name>.json``): a table of every block's
    statistics, and its figure (``generated/routing_<name>.png``); ``provenance.json`` there is not an inspection."""
    import inspect_routing

    out = {}
    for path in sorted((ROOT / "examples" / "cifar10" / "records" / "routing").glob("*.json")):
        if path.name == "provenance.json":
            continue
        result = json.loads(path.read_text())
        inspect_routing.plot(result, folder / f"routing_{path.stem}.png",
                             f"routing of {result['source']} on {result['num_images']} test images")
        rows = [[f"``{name}``", " / ".join(f"{w:.2f}" for w in stats["mean_weight"]),
                 f"{stats['normalised_entropy']:.3f}", f"{stats['variation']:.3f}", f"{stats['top_branch_share']:.2f}"]
                for name, stats in result["blocks"].items()]
        out[path.stem] = list_table(["block", "mean weight per branch", "entropy / log K", "variation (TV)",
                                     "top-branch share"], rows)
    return out


def paper_models_table() -> str:
    """The papers' architectures: our parameter and multiply-add counts (on the meta device) against the published."""
    from dynconv.models import PAPER_MODELS, PUBLISHED_COUNTS, count_parameters_and_multiply_adds
    from dynconv.models.paper_nets import RESNET50_V1_SAVING

    rows = []
    for name, (base, _, _, title) in PAPER_MODELS.items():
        params, madds = count_parameters_and_multiply_adds(timm.create_model(name, device="meta"))
        published = PUBLISHED_COUNTS.get(name)
        v1 = f" ({(madds - RESNET50_V1_SAVING) / 1e9:.3f} G as v1)" if "resnet50" in name else ""
        rows.append([f"``{name}``", title, f"``{base}``", f"{params / 1e6:.2f} M", f"{madds / 1e9:.3f} G{v1}",
                     f"{published[0] / 1e6:.2f} M / {published[1] / 1e9:.3f} G ({published[2]})" if published
                     else "not published in a table we could retrieve"])
    header = ["model", "what it is", "timm base", "params", "MAdds, 224x224", "published params / MAdds"]
    return list_table(header, rows)


def write_tables(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.inc.rst").write_text(models_table())
    (folder / "paper_models.inc.rst").write_text(paper_models_table())
    (folder / "results.inc.rst").write_text(results_table())
    flags, presets = recipe_tables()
    (folder / "recipe_flags.inc.rst").write_text(flags)
    (folder / "presets.inc.rst").write_text(presets)
    tables = benchmark_tables()
    for name, text in tables.items():
        (folder / f"bench_{name}.inc.rst").write_text(text)
    for name in ("cpu", "cuda"):
        if name not in tables:
            (folder / f"bench_{name}.inc.rst").write_text("No recorded run yet.\n")
    (folder / "study.inc.rst").write_text(study_table(folder))
    (folder / "pretrained.inc.rst").write_text(pretrained_table())
    for name, text in routing_tables(folder).items():
        (folder / f"routing_{name}.inc.rst").write_text(text)
    throughput = throughput_tables()
    for name in ("inference_cpu", "train_cpu"):
        (folder / f"throughput_{name}.inc.rst").write_text(throughput.get(name, "No recorded run yet.\n"))
