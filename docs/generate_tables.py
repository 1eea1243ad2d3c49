"""Write every generated table: the documentation's, and the marked blocks of README.md and the recipe README.

    python -m docs.generate_tables --readmes          # rewrite the generated blocks of the two READMEs
    python -m docs.generate_tables --readmes --check  # exit 1 if a block is stale (tests/test_docs.py runs this)

One source of truth: results come from ``examples/cifar10/results.json`` (its ``groups`` name the configurations
summarised, as mean ± sd over their runs), the shipped weights' metadata, and the benchmark records. The Sphinx build
writes the ``.inc.rst`` tables (``docs/generated/``) from the same functions:

- ``ledger.inc.rst``: every recorded training run, superseded ones marked.
- ``models.inc.rst``: every registered dynconv model with its parameters, FLOPs, block kinds and its recipe's accuracy.
- ``presets_results.inc.rst``: one row per preset with its hardware, time and accuracy, and the anchor.
- ``recipe_flags.inc.rst`` and ``presets.inc.rst``: every flag of ``train.py`` and every preset value.
- ``bench_<name>.inc.rst``: the committed benchmark tables (``benchmarks/results/<name>.csv``).
"""
import argparse
import dataclasses
import functools
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]


def list_table(header: Sequence[str], rows: List[Sequence[str]], widths: str = "auto") -> str:
    def cell(value) -> str:
        # a lone "-" would open a bullet list inside the cell
        return "—" if str(value) == "-" else str(value).replace("\n", " ") or " "

    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {cell(row[0])}")
        lines += [f"     - {cell(value)}" for value in row[1:]]
    return "\n".join(lines) + "\n"


RESULTS_PATH = ROOT / "examples" / "cifar10" / "results.json"
READMES = {"README.md": ROOT / "README.md", "examples/cifar10/README.md": ROOT / "examples" / "cifar10" / "README.md"}


def _results_file() -> Dict[str, Any]:
    return json.loads(RESULTS_PATH.read_text()) if RESULTS_PATH.exists() else {"results": [], "groups": {}}


def _recorded_results():
    return _results_file()["results"]


def group_stats(group_id: str) -> Optional[Dict[str, Any]]:
    """Accuracy (mean, sample sd, n) with and without TTA, and the time range, of one ``groups`` entry of results.json;
    None for a group without runs. Entries that aggregate several runs count with their own mean, sd and n."""
    data = _results_file()
    group = data["groups"][group_id]
    entries = [next(r for r in data["results"] if r["record"] == record) for record in group["records"]]
    if not entries:
        return None
    if len(entries) == 1:
        entry = entries[0]
        acc = (entry["test_acc_mean"], entry.get("test_acc_std", 0.0), entry["runs"])
        tta = (entry.get("test_acc_tta_mean"), None if entry["runs"] > 1 else 0.0, entry["runs"])
    else:
        values = [e["test_acc_mean"] for e in entries]
        ttas = [e["test_acc_tta_mean"] for e in entries if e.get("test_acc_tta_mean") is not None]
        acc = (statistics.fmean(values), statistics.stdev(values), len(values))
        tta = (statistics.fmean(ttas), statistics.stdev(ttas), len(ttas)) if ttas else (None, None, 0)
    walls = [e["wall_s"] for e in entries if e.get("wall_s") is not None]
    trains = [e["train_s"] for e in entries if e.get("train_s") is not None]
    return {"group": group, "acc": acc, "tta": tta, "wall_s": (min(walls), max(walls)) if walls else None,
            "train_s": (min(trains), max(trains)) if trains else None, "hardware": entries[0]["hardware"],
            "epochs": entries[0]["epochs"]}


def relative_time(group_id: str) -> Optional[float]:
    """A group's training time relative to the ``cpu`` preset's, on one machine: its step-time ratio to the static
    network (``cost.step_ratio``, from an alternated timing record) times its epochs over the preset's; None if not
    timed that way (airbench's own code ran in other sittings)."""
    from cifar10_recipe.presets import PRESETS

    data = _results_file()
    cost = data["groups"][group_id].get("cost")
    stats = group_stats(group_id)
    if cost is None or stats is None:
        return None
    return cost["step_ratio"] * stats["epochs"] / PRESETS["cpu"]["epochs"]


def mean_sd(stat) -> str:
    """``89.78% ± 0.20 (3)``: mean, sample standard deviation and number of runs; the sd left out when unknown."""
    mean, sd, n = stat
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}%" + (f" ± {100 * sd:.2f}" if sd is not None and n > 1 else "") + f" ({n})"


def _duration(seconds) -> str:
    low, high = seconds
    if high < 120:
        return f"{low:.1f} s" if low == high else f"{low:.1f}-{high:.1f} s"
    low, high = round(low / 60), round(high / 60)
    return f"{low} min" if low == high else f"{low}-{high} min"


def _time_of(stats: Dict[str, Any]) -> str:
    """A GPU group's training time (each run times itself with CUDA events), or a CPU group's wall time from the one
    run its ``timed_alone`` names (a 2-core VM's speed drifts between sittings, so only a run recorded as alone and as
    the README's command counts); ``-`` otherwise."""
    if "H200" in stats["hardware"]:
        if stats["train_s"]:
            return _duration(stats["train_s"]) + " training"
        return _duration(stats["wall_s"]) + " wall" if stats["wall_s"] else "-"
    record = stats["group"].get("timed_alone")
    if record is None:
        return "-"
    entry = _entry(record)
    return _duration((entry["wall_s"], entry["wall_s"])) + " wall, alone"


def _short_command(group: Dict[str, Any]) -> str:
    """A preset's command without the script's path: ``train.py --preset cpu``."""
    return group["command"].replace("python examples/cifar10/", "")


def _preset_rows():
    """(group, its stats or None, its anchor's stats or None) for every preset group, in results.json's order."""
    for group_id, group in _results_file()["groups"].items():
        if group["kind"] == "preset":
            yield group, group_stats(group_id), group_stats(group["anchor"]) if group.get("anchor") else None


def presets_markdown() -> str:
    """The README's training table: one row per preset, with airbench's own code on the same machine."""
    rows = ["| preset | command | hardware | time | test accuracy | with TTA | airbench's own code, same machine "
            "(TTA) |", "|---|---|---|---|---|---|---|"]
    for group, stats, anchor in _preset_rows():
        anchor_text = f"{mean_sd(anchor['acc'])} ({mean_sd(anchor['tta'])})" if anchor else "-"
        if stats is None:
            rows.append(f"| `{group['title']}` | `{_short_command(group)}` | {group['hardware']} | not run yet | - | "
                        "- | - |")
            continue
        rows.append(f"| `{group['title']}` | `{_short_command(group)}` | {group['hardware']} | {_time_of(stats)} | "
                    f"{mean_sd(stats['acc'])} | {mean_sd(stats['tta'])} | {anchor_text} |")
    return "\n".join(rows) + "\n"


def _newest_record(benchmark: str) -> Dict[str, Any]:
    """The last (by name) record of ``benchmarks/results/<benchmark>/*.json``, or {} if there is none."""
    paths = sorted((ROOT / "benchmarks" / "results" / benchmark).glob("*.json"))
    return json.loads(paths[-1].read_text()) if paths else {}


def _latency_record() -> Dict[str, Any]:
    """The newest deployment-latency record (``benchmarks/results/deploy_latency/*.json``), or {}."""
    return _newest_record("deploy_latency")


def _params_and_mflops(name: str):
    import dynconv  # noqa: F401

    model = timm.create_model(name).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *model.pretrained_cfg["input_size"]))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 1e6


def _shipped_weights() -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(``model.tag``, metadata) of every shipped weight file, in timm's order."""
    import dynconv  # noqa: F401  (registers the models and their weights)
    from cifar10_recipe.shipping import read_metadata

    for name in timm.list_models("dynconv*", pretrained=True):
        path = Path(timm.models.get_pretrained_cfg(name).file)
        if path.exists():
            yield name, read_metadata(path)


def weights_markdown() -> str:
    """The README's table of shipped weights: their accuracy (from their metadata), size, cost and recipe."""
    latency = _latency_record().get("latency", {}).get("onnxruntime B=1", {})
    rows = ["| weights (`model.tag`) | test accuracy of the file, float32 | as trained (TTA) | params | MFLOPs | "
            "CPU latency, batch 1 | recipe |", "|---|---|---|---|---|---|---|"]
    for name, meta in _shipped_weights():
        model = name.split(".")[0]
        params, mflops = _params_and_mflops(model)
        recipe = meta["recipe"]
        time = f"{latency[model] * 1e3:.1f} ms" if model in latency else "-"
        trained = (f"{100 * meta['test_acc_recorded']:.2f}% ({100 * meta['test_acc_tta_recorded']:.2f}%)"
                   if "test_acc_recorded" in meta else f"- ({100 * meta['test_acc_tta_recorded']:.2f}%)")
        rows.append(f"| `{name}` | {100 * meta['test_acc_fp32']:.2f}% | {trained} | "
                    f"{params / 1e6:.2f} M | {mflops:.0f} | {time} | `{recipe['preset']}`, {recipe['epochs']} epochs |")
    return "\n".join(rows) + "\n"


def weights_csv() -> str:
    """The shipped weights' results in the columns of timm's ``results-imagenet.csv`` (no top-5: not recorded):
    top-1 of the float32 file on the local CIFAR-10 copy's 10,000 test images, parameters in millions."""
    rows = ["model,img_size,top1,top1_err,param_count,crop_pct,interpolation"]
    for name, meta in _shipped_weights():
        cfg = timm.models.get_pretrained_cfg(name)
        params, _ = _params_and_mflops(name.split(".")[0])
        top1 = 100 * meta["test_acc_fp32"]
        rows.append(f"{name},{cfg.input_size[-1]},{top1:.3f},{100 - top1:.3f},{params / 1e6:.2f},"
                    f"{cfg.crop_pct},{cfg.interpolation}")
    return "\n".join(rows) + "\n"


#: The groups the equal-time comparison shows, in order: the static preset first, then the candidates, the anchor last.
WORTH_IT_GROUPS = ("cpu", "airbench94_muon", "dcd-e8", "dcd-routed-e9", "branch-last-e8", "anchor-xeon")


def worth_it_rows() -> List[Dict[str, Any]]:
    """The equal-time comparison on the ``cpu`` recipe: each group's relative training time and accuracy."""
    data = _results_file()
    rows = []
    for group_id in WORTH_IT_GROUPS:
        stats = group_stats(group_id)
        if stats is None:
            continue
        group = data["groups"][group_id]
        rows.append({"group": group_id, "title": group.get("label", group["title"]),
                     "relative_time": relative_time(group_id), "acc": stats["acc"], "tta": stats["tta"],
                     "hardware": group["hardware"]})
    return rows


def _difference(a, b) -> str:
    return f"{100 * (a[0] - b[0]):+.2f}"


def worth_it_markdown() -> str:
    """The README's answer to "are dynamic convolutions worth it?", from the study's groups and the cost records."""
    rows = worth_it_rows()
    if not rows:
        return "No recorded run yet.\n"
    static = rows[0]
    lines = [f"On the `cpu` recipe (airbench94's network, 2-core CPU), training time relative to the static "
             f"preset's 9 epochs, from each layout's step time alternated with the static network's alone on one "
             f"machine. {machine_spread_sentence()}", "",
             "| network | relative training time | test accuracy | with TTA | vs static, 9 epochs (TTA) |",
             "|---|---|---|---|---|"]
    for row in rows:
        time = f"{row['relative_time']:.2f}x" if row["relative_time"] is not None else "-"
        versus = "" if row is static else (f"{_difference(row['acc'], static['acc'])} "
                                           f"({_difference(row['tta'], static['tta'])})")
        lines.append(f"| {row['title']} | {time} | {mean_sd(row['acc'])} | {mean_sd(row['tta'])} | {versus} |")
    lines += ["", *[f"- {bullet}" for bullet in worth_it_bullets(rows)]]
    return "\n".join(lines) + "\n\n![accuracy against training time](docs/images/worth_it.png)\n"


#: the same command and seed on the two kinds of 2-core machine the CPU study ran on
SAME_RUN_ON_TWO_MACHINES = ("records/cpu-recipe/xeon-muon-e9-s0", "records/cpu-recipe/epyc-cpu-readme-s0")
#: airbench's own code and the cpu preset, alone on one machine on the same day (not alternated)
SAME_DAY_ANCHOR = ("../../benchmarks/results/airbench94_cpu_bf16_reuse_epyc.json",
                   "records/cpu-recipe/epyc-cpu-readme-s0")


def _entry(record: str) -> Dict[str, Any]:
    return next(e for e in _recorded_results() if e["record"] == record)


def machine_spread_sentence() -> str:
    """How far one command and seed lands apart on the study's two CPUs, from their records."""
    xeon, epyc = (_entry(record) for record in SAME_RUN_ON_TWO_MACHINES)
    return (f"The DCD rows' seeds ran on a 2-core AMD EPYC, the others on a 2-core Intel Xeon; the same command and "
            f"seed gave {100 * xeon['test_acc_mean']:.2f}% (TTA {100 * xeon['test_acc_tta_mean']:.2f}%) on the Xeon "
            f"and {100 * epyc['test_acc_mean']:.2f}% ({100 * epyc['test_acc_tta_mean']:.2f}%) on the EPYC, so gaps "
            f"of that size between the two are not results:")


def worth_it_bullets(rows: List[Dict[str, Any]]) -> List[str]:
    """The answer in a few sentences, every number from the groups and the cost records."""
    static = rows[0]
    dynamic = [row for row in rows[1:] if row["group"] not in ("airbench94_muon", "anchor-xeon")]
    best = max(dynamic, key=lambda row: row["acc"][0] + row["tta"][0])
    ahead = best["acc"][0] > static["acc"][0] and best["tta"][0] > static["tta"][0]
    spread = max(best["acc"][1] or 0.0, static["acc"][1] or 0.0, best["tta"][1] or 0.0, static["tta"][1] or 0.0)
    within = max(abs(best["acc"][0] - static["acc"][0]), abs(best["tta"][0] - static["tta"][0])) <= spread
    verdict = ("**At equal training time on the 2-core CPU, yes.** The best dynamic layout beats the static preset"
               if ahead else "**At equal training time on the 2-core CPU, not yet.** No dynamic layout beats the "
               "static preset; the closest is")
    bullets = [f"{verdict} {best['title']} ({best['relative_time']:.2f}x the time): "
               f"{_difference(best['acc'], static['acc'])} points ({_difference(best['tta'], static['tta'])} with TTA) "
               f"over {best['acc'][2]} seeds" + (", within the seeds' spread" if within else "") + "."]
    anchor, preset = (_entry(record) for record in SAME_DAY_ANCHOR)
    bullets.append(f"**airbench's own code** trained in {anchor['train_s']:.0f} s against the preset's "
                   f"{preset['train_s']:.0f} s alone on the 2-core EPYC the same day "
                   f"({anchor['train_s'] / preset['train_s']:.2f}x; not alternated), to "
                   f"{100 * anchor['test_acc_mean']:.2f}% (TTA {100 * anchor['test_acc_tta_mean']:.2f}%) against "
                   f"{100 * preset['test_acc_mean']:.2f}% ({100 * preset['test_acc_tta_mean']:.2f}%).")
    costs = _newest_record("family_costs")
    if costs:
        ratios = costs["network_ratios"]
        mixing = ", ".join(f"{name} {ratios[key]:.2f}x" for key, name in (
            ("condconv", "CondConv"), ("dyconv", "DyConv"), ("odconv", "ODConv"), ("branch", "branch mixing"),
            ("kw1d4x", "KernelWarehouse 1/4x in every convolution after the stem"))
            if key in ratios)
        bullets.append(f"**DCD is the cheap family**: {ratios['dcd_routed']:.2f}x (last two segments) and "
                       f"{ratios['dcd']:.2f}x (every segment) a static training step, where the other families in "
                       f"the same places cost {mixing} (one alternated run of a `cpu`-recipe step on a 2-core "
                       f"{costs['provenance']['machine']['cpu']}, {costs['provenance']['date'][:10]}, commit "
                       f"{costs['provenance']['commit'][:7]}).")
    if four_axis_results()["versus_front"]:
        bullets += four_axis_bullets()
    fast, anchor = group_stats("fast"), group_stats("anchor-h200")
    if fast and anchor:
        bullets.append(f"**On a GPU the dynamic block pays epoch for epoch**: the `fast` preset leads airbench's own "
                       f"code on an H200 by {_difference(fast['acc'], anchor['acc'])} points "
                       f"({fast['acc'][2]} against {anchor['acc'][2]} runs) at "
                       f"{fast['train_s'][0] / anchor['train_s'][0]:.1f}x its training time.")
    return bullets


def deploy_points() -> List[Dict[str, Any]]:
    """For the latency chart: each timed model's ONNX Runtime latency at batch 1 and 256 and its accuracy (its
    recipe's mean over runs, else its shipped weights')."""
    from cifar10_recipe.shipping import read_metadata

    record = _latency_record()
    points = []
    for name in record.get("models", []):
        # accuracy from one recipe per family: the cpu recipe's study groups, or the shipped weights' (tiny recipe)
        groups = [g for g in model_groups(name) if g in WORTH_IT_GROUPS]
        acc = group_stats(groups[0])["acc"][0] if groups else None
        if acc is None:
            weights = [m for m in timm.list_models(f"{name}.*", pretrained=True)]
            if weights and Path(timm.models.get_pretrained_cfg(weights[0]).file).exists():
                acc = read_metadata(Path(timm.models.get_pretrained_cfg(weights[0]).file))["test_acc_fp32"]
        if acc is None:
            continue
        latency = {key.split()[-1]: values[name] * 1e3 for key, values in record["latency"].items()
                   if key.startswith("onnxruntime") and name in values}
        points.append({"model": name, "acc": acc, "latency_ms": latency})
    return points


README_CHART = ROOT / "docs" / "images" / "worth_it"
#: the shipped weights' results in timm's CSV columns (regenerated with the READMEs)
WEIGHTS_CSV = ROOT / "benchmarks" / "results" / "results-cifar10-local.csv"


def readme_blocks() -> Dict[str, str]:
    """Name -> the generated text of every ``<!-- generated:NAME -->`` block of the READMEs."""
    return {"weights": weights_markdown(), "presets": presets_markdown(), "worth-it": worth_it_markdown()}


def replace_blocks(text: str, blocks: Dict[str, str]) -> str:
    """``text`` with the content between each ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` replaced
    by ``blocks[NAME]``."""
    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in blocks:
            raise ValueError(f"no generator for the README block {name!r}; known: {sorted(blocks)}")
        return f"<!-- generated:{name} -->\n{blocks[name]}<!-- /generated:{name} -->"

    return re.sub(r"<!-- generated:([\w-]+) -->\n.*?<!-- /generated:\1 -->", fill, text, flags=re.S)


def _chart_data() -> str:
    return json.dumps(worth_it_rows(), indent=1) + "\n"


def stale_readmes() -> List[str]:
    """The READMEs (and the README's chart, by the data it was drawn from) that differ from what the records give."""
    blocks = readme_blocks()
    stale = [name for name, path in READMES.items() if replace_blocks(path.read_text(), blocks) != path.read_text()]
    if not WEIGHTS_CSV.exists() or WEIGHTS_CSV.read_text() != weights_csv():
        stale.append(str(WEIGHTS_CSV.relative_to(ROOT)))
    chart_data = README_CHART.with_suffix(".json")
    if not chart_data.exists() or chart_data.read_text() != _chart_data():
        stale.append(str(chart_data.relative_to(ROOT)))
    return stale


def write_readmes() -> None:
    from docs.generate_charts import draw_worth_it

    blocks = readme_blocks()
    for path in READMES.values():
        path.write_text(replace_blocks(path.read_text(), blocks))
    README_CHART.parent.mkdir(parents=True, exist_ok=True)
    draw_worth_it(worth_it_rows(), README_CHART.with_suffix(".png"))
    README_CHART.with_suffix(".json").write_text(_chart_data())
    WEIGHTS_CSV.write_text(weights_csv())


def model_groups(name: str) -> List[str]:
    """The results.json groups that trained ``name`` as registered (presets first), for the zoo's accuracy column."""
    groups = _results_file()["groups"]
    found = [g for g, group in groups.items() if group.get("model") == name and group["records"]
             and not group.get("model_kwargs")]
    return sorted(found, key=lambda g: groups[g]["kind"] != "preset")


def _block_label(kind: str, num_experts: int) -> str:
    """A block's kind in a few characters: ``S`` static, ``B2`` branch with K=2, ``DCD``, ``Cond4``, ``Dy4``."""
    if kind == "static" or (kind == "branch" and num_experts == 1):
        return "S"
    short = {"branch": "B", "condconv": "Cond", "dyconv": "Dy", "odconv": "OD"}
    return "DCD" if kind == "dcd" else f"{short.get(kind, kind)}{num_experts}"


def models_table() -> str:
    """Every registered dynconv model: parameters, FLOPs, block kinds, and the accuracy its recipe reached (mean ± sd
    over runs, with the preset or study group); short cells, the full record in the ledger."""
    import dynconv  # noqa: F401

    rows = []
    for name in timm.list_models("dynconv*"):
        model = timm.create_model(name).eval()
        params, mflops = _params_and_mflops(name)
        cfg = model.cfg
        kinds = " / ".join("+".join(_block_label(kind, k) for kind, k in zip(ks, es, strict=True))
                           for ks, es in zip(cfg.block_kinds, cfg.block_num_experts, strict=True))
        groups = model_groups(name)
        accuracy = "-"
        if groups:
            stats = group_stats(groups[0])
            accuracy = f"{mean_sd(stats['acc'])}, ``{stats['group']['title']}``"
        rows.append([f"``{name}``", f"{params / 1e6:.2f} M", f"{mflops:.0f} M", kinds, accuracy])
    header = ["model", "params", "FLOPs", "blocks per segment", "test accuracy (runs), recipe"]
    return (list_table(header, rows, "30 8 8 28 26") + "\nBlocks: S static Conv-BN-Act, B2 branch mixing with K=2, "
            "DCD, Cond4 / Dy4 / OD4 kernel mixing with K=4 (CondConv, Dynamic Convolution, ODConv).\n")


def presets_results_table() -> str:
    """The presets table of the README, for the docs (reStructuredText)."""
    rows = []
    for group, stats, anchor in _preset_rows():
        anchor_text = f"{mean_sd(anchor['acc'])}, TTA {mean_sd(anchor['tta'])}" if anchor else "-"
        if stats is None:
            rows.append([f"``{group['title']}``", group["hardware"], "not run yet", "-", "-", "-"])
            continue
        rows.append([f"``{group['title']}``", group["hardware"], _time_of(stats), mean_sd(stats["acc"]),
                     mean_sd(stats["tta"]), anchor_text])
    return list_table(["preset", "hardware", "time", "test accuracy", "with TTA", "airbench's own code, same machine"],
                      rows)


def ledger_table() -> str:
    """Every recorded run, newest first; superseded ones marked."""
    rows = []
    for r in sorted(_recorded_results(), key=lambda r: r.get("date", ""), reverse=True):
        spread = f" ± {100 * r['test_acc_std']:.2f}" if r["runs"] > 1 and r.get("test_acc_std") else ""
        tta = f"{100 * r['test_acc_tta_mean']:.2f}%" if r.get("test_acc_tta_mean") is not None else "-"
        status = "superseded: " + r["superseded"] if r.get("superseded") else "current"
        rows.append([r.get("date", "-"), f"``{r['model']}``", r["preset"], str(r["runs"]), str(r["epochs"]),
                     f"{100 * r['test_acc_mean']:.2f}%{spread}", tta, r["hardware"], f"``{r['record']}``", status])
    if not rows:
        return "No recorded run yet.\n"
    return list_table(["date", "model", "preset / flags", "runs", "epochs", "test accuracy", "with TTA", "hardware",
                       "record", "status"], rows)


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


def benchmark_tables() -> dict:
    from benchmarks.report import load_csv, ratio_summary, table

    out = {}
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.csv")):
        if path == WEIGHTS_CSV:  # the shipped weights' accuracy, not a block benchmark
            continue
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
    from cifar10_recipe import equal_budget_study as study

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
    """Every shipped weight: its accuracy on the local CIFAR-10 copy, recipe and record (from its metadata)."""
    from cifar10_recipe.shipping import read_metadata

    rows = []
    for name in timm.list_models("dynconv*", pretrained=True):
        path = Path(timm.models.get_pretrained_cfg(name).file)
        if not path.exists():
            continue
        meta = read_metadata(path)
        rows.append([f"``{name}``", f"{100 * meta['test_acc_fp32']:.2f}%",
                     f"{100 * meta['test_acc_tta_recorded']:.2f}%",
                     f"``{meta['recipe']['preset']}``, {meta['recipe']['epochs']} epochs",
                     f"``{meta['record'].removeprefix('examples/cifar10/')}``"])
    if not rows:
        return "No shipped weights yet.\n"
    return list_table(["model.tag", "test accuracy (float32)", "with TTA", "recipe", "record"], rows)


def routing_tables(folder: Path) -> dict:
    """Per recorded routing inspection (``examples/cifar10/records/routing/<name>.json``): a table of every block's
    statistics, and its figure (``generated/routing_<name>.png``); ``provenance.json`` there is not an inspection."""
    from cifar10_recipe import inspect_routing

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


def worth_it_table() -> str:
    """The equal-time comparison on the cpu recipe (the README's), for the study page, with each group's records."""
    data = _results_file()
    rows = []
    static = None
    for row in worth_it_rows():
        static = static or row
        group = data["groups"][row["group"]]
        time = f"{row['relative_time']:.2f}x" if row["relative_time"] is not None else "-"
        versus = "-" if row is static else (f"{_difference(row['acc'], static['acc'])} "
                                            f"({_difference(row['tta'], static['tta'])})")
        records = ", ".join(f"``{Path(r).name}``" for r in group["records"])
        rows.append([row["title"], time, mean_sd(row["acc"]), mean_sd(row["tta"]), versus, group["hardware"],
                     records])
    return list_table(["network", "relative training time", "test accuracy (runs)", "with TTA", "vs static 9 epochs",
                       "runs on", "records"], rows, "22 10 14 14 12 14 14")


def family_costs_tables() -> Dict[str, str]:
    """The block families' costs and the layouts' step times (``benchmarks/results/family_costs/``), as ratios."""
    record = _newest_record("family_costs")
    if not record:
        return {"blocks": "No recorded run yet.\n", "networks": "No recorded run yet.\n"}
    kinds = list(next(iter(record["blocks"].values())))
    blocks = [[shape, *[f"{row[k] * 1e3:.1f} ms ({row[k] / row['static']:.2f}x)" for k in kinds]]
              for shape, row in record["blocks"].items()]
    networks = [[f"``{name}``", f"{seconds:.2f} s", f"{record['network_ratios'][name]:.3f}"]
                for name, seconds in record["networks"].items()]
    provenance = record["provenance"]
    machine = (f"{provenance['machine']['cpu']}, {provenance['machine']['cores']} cores, {record['precision']}, torch "
               f"{provenance['versions']['torch']}; median of {record['rounds']} alternated rounds; "
               f"``{provenance['command']}`` at commit ``{provenance['commit'][:10]}``.")
    return {"blocks": machine + "\n\n" + list_table([f"shape, batch {record['block_batch']}", *kinds], blocks),
            "networks": machine + "\n\n" + list_table(
                [f"layout, batch {record['network_batch']}", "one training step", "ratio to static"], networks)}


def deploy_latency_table() -> str:
    """CPU latency per model and path (``benchmarks/results/deploy_latency/``)."""
    record = _latency_record()
    if not record:
        return "No recorded run yet.\n"
    keys = list(record["latency"])
    rows = [[f"``{name}``", *[f"{record['latency'][k][name] * 1e3:.2f} ms" if name in record["latency"][k] else "-"
                             for k in keys]] for name in record["models"]]
    provenance = record["provenance"]
    return (f"{provenance['machine']['cpu']}, {provenance['machine']['cores']} cores, float32, torch "
            f"{provenance['versions']['torch']}; median of {record['rounds']} alternated rounds; "
            f"``{provenance['command']}``.\n\n" + list_table(["model", *keys], rows))


FOUR_AXIS_RECORDS = ROOT / "examples" / "cifar10" / "records" / "four-axis"
FOUR_AXIS_LABELS = {"kw1d4x": "KernelWarehouse 1/4x", "kw1d2x": "KernelWarehouse 1/2x", "kw1x": "KernelWarehouse 1x",
                    "dcd_routed": "DCD in the last two segments", "odconv": "ODConv (K=1) second in every segment"}


@functools.cache
def four_axis_results() -> Dict[str, Any]:
    """The four-axis study's points and their distance to the static front (from its run records)."""
    from cifar10_recipe import four_axis_study

    return four_axis_study.collect(FOUR_AXIS_RECORDS)


def four_axis_table() -> str:
    """The study's points (costs, accuracy over seeds) and each dynamic point against the static front."""
    from cifar10_recipe import four_axis_study as study

    results = four_axis_results()
    rows = [[f"``{point}``", f"{entry['params'] / 1e6:.2f} M", f"{entry['macs_per_image'] / 1e6:.0f}",
             study.format_latency(entry.get("latency_ms")), study.format_seconds(entry["seconds_per_epoch"]),
             study.percent(entry["test_acc"]), study.percent(entry["test_acc_tta"])]
            for point, entry in results["points"].items()]
    points = list_table(["point", "parameters", "inference MMACs", "batch-1 latency, ms (ONNX Runtime)",
                         "seconds per epoch (timed alone)", "test accuracy", "with TTA"], rows)
    difference = study.points_difference
    axes_measured = [axis for axis in FOUR_AXIS_AXES
                     if any(v[axis]["test_acc"] is not None for v in results["versus_front"].values())]
    rows = [[f"``{point}``", *(f"{difference(axes[axis]['test_acc'])} ({difference(axes[axis]['test_acc_tta'])})"
                               for axis in axes_measured)]
            for point, axes in results["versus_front"].items()]
    versus = list_table(["point", *(f"at {FOUR_AXIS_AXES[axis][1]} (TTA)" for axis in axes_measured)], rows)
    return points + "\n" + versus


#: the four-axis study's cost axes: key -> (what a bullet calls it, the versus table's column)
FOUR_AXIS_AXES = {"params": ("parameter", "equal parameters"),
                  "macs": ("inference multiply-add", "equal inference MACs"),
                  "latency": ("millisecond of batch-1 latency", "equal batch-1 latency"),
                  "time": ("second of training", "equal training time")}


def four_axis_bullets() -> List[str]:
    """One sentence per measured cost axis: is any dynamic point above the static front there, and by how much each
    is above (+) or below (-) it."""
    from cifar10_recipe.four_axis_study import AXES

    results = four_axis_results()
    points = results["points"]
    bullets = []
    for axis, (name, _) in FOUR_AXIS_AXES.items():
        parts, above = [], []
        front = [entry for entry in points.values() if entry["front"] and AXES[axis](entry) is not None]
        for point, axes in results["versus_front"].items():
            value, tta = axes[axis]["test_acc"], axes[axis]["test_acc_tta"]
            n = len(points[point]["test_acc"]["values"])
            seeds = f"{n} seed{'s' if n > 1 else ''}"
            cost = AXES[axis](points[point])
            if value is None and cost is not None and front:
                # beyond the front's range: compare with its costliest width, which it costs more than
                widest = max(front, key=AXES[axis])
                if cost > AXES[axis](widest):
                    gap = points[point]["test_acc"]["mean"] - widest["test_acc"]["mean"]
                    parts.append(f"{FOUR_AXIS_LABELS.get(point, point)} costs {cost / AXES[axis](widest):.1f}x the "
                                 f"widest static network and is {100 * gap:+.2f} against it ({seeds})")
                continue
            if value is None:
                continue
            parts.append(f"{FOUR_AXIS_LABELS.get(point, point)} {100 * value:+.2f} ({100 * tta:+.2f} with TTA; "
                         f"{seeds})")
            if value > 0 and tta > 0:
                above.append(FOUR_AXIS_LABELS.get(point, point))
        if not parts:
            continue
        verdict = f"yes for {', '.join(above)}" if above else "no"
        bullets.append(f"**Per {name}, {verdict}**: against the static network at four widths (the `cpu` recipe, "
                       f"9 epochs), points above (+) or below (-) the front: " + "; ".join(parts) + ".")
    return bullets


def local_copy_gap_table() -> str:
    """The shipped weights on the local copy's 4,000 lossless training images and on their JPEG twins
    (``benchmarks/results/local_copy_gap.json``)."""
    path = ROOT / "benchmarks" / "results" / "local_copy_gap.json"
    if not path.exists():
        return "No recorded run yet.\n"
    record = json.loads(path.read_text())
    rows = [[f"``{name}``", f"{100 * row['original_acc']:.2f}%", f"{100 * row['jpeg_acc']:.2f}%",
             f"{100 * (row['original_acc'] - row['jpeg_acc']):+.2f}", f"{100 * row['agreement']:.2f}%"]
            for name, row in record["results"].items()]
    provenance = record["provenance"]
    return (f"{record['images']} images, float32, eval mode; {provenance['machine']['cpu']}, commit "
            f"{provenance['commit'][:7]}.\n\n" + list_table(
                ["weights", "original pixels", "JPEG twins", "difference (points)", "same answer"], rows))


def family_floor_tables() -> Dict[str, str]:
    """Every family-floor record's table (``benchmarks/results/family_floor/<machine>.md``) as a literal block."""
    out = {}
    for path in sorted((ROOT / "benchmarks" / "results" / "family_floor").glob("*.md")):
        body = "\n".join(f"   {line}" if line else "" for line in path.read_text().splitlines())
        out[path.stem] = f".. code-block:: text\n\n{body}\n"
    return out


def write_tables(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    floor = family_floor_tables()
    for name in ("xeon", "h200"):
        (folder / f"family_floor_{name}.inc.rst").write_text(floor.get(name, "No recorded run yet.\n"))
    (folder / "four_axis.inc.rst").write_text(four_axis_table())
    (folder / "local_copy_gap.inc.rst").write_text(local_copy_gap_table())
    costs = family_costs_tables()
    (folder / "family_costs_blocks.inc.rst").write_text(costs["blocks"])
    (folder / "family_costs_networks.inc.rst").write_text(costs["networks"])
    (folder / "deploy_latency.inc.rst").write_text(deploy_latency_table())
    (folder / "worth_it.inc.rst").write_text(worth_it_table())
    (folder / "models.inc.rst").write_text(models_table())
    (folder / "paper_models.inc.rst").write_text(paper_models_table())
    (folder / "ledger.inc.rst").write_text(ledger_table())
    (folder / "presets_results.inc.rst").write_text(presets_results_table())
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readmes", action="store_true", help="rewrite the READMEs' generated blocks")
    parser.add_argument("--check", action="store_true", help="with --readmes: only report stale blocks (exit 1)")
    parser.add_argument("--out", type=Path, help="write the documentation's .inc.rst tables and charts here")
    args = parser.parse_args(argv)
    if args.readmes and args.check:
        stale = stale_readmes()
        for name in stale:
            print(f"{name}: generated blocks are stale; run python -m docs.generate_tables --readmes")
        return 1 if stale else 0
    if args.readmes:
        write_readmes()
    if args.out:
        write_tables(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
