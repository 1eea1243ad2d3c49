"""Draw the benchmarks page's charts from the committed benchmark CSVs at build time, so the charts cannot drift from
the records they show.

- ``generated/block_cost.png``: each implementation's time relative to a static Conv-BN-ReLU of the same shape, per
  stage shape (forward + backward, batch 64, K=4), CPU beside GPU; 1.0 is the static layer, log scale.
- ``generated/block_cost_compiled.png``: the same ratios (fused/floor, each kernel-mixing family/static) eager beside
  compiled (``torch.compile``, inductor), per configuration, from ``benchmarks/results/<device>_compiled.csv``.
- ``generated/throughput.png``: whole-model images/s per model and path (inference at batch 64, training at the
  recorded batch), from ``benchmarks/results/throughput/*.csv``.
- ``generated/worth_it.png`` (also ``docs/images/worth_it.png`` for the README): test accuracy against training time
  relative to the static ``cpu`` preset, static against dynamic against airbench's own code, from results.json.
- ``generated/family_costs.png``: every block family's cost at the ``cpu`` network's shapes and every layout's step
  time, from ``benchmarks/results/family_costs/*.json``.
- ``generated/deploy_latency.png``: accuracy against CPU latency at batch 1 and 256, from
  ``benchmarks/results/deploy_latency/*.json`` and the records.
- ``generated/four_axis.png``: the four-axis study, one panel per cost axis (parameters, inference multiply-adds,
  batch-1 latency, seconds per epoch): the static front drawn through its widths, the dynamic points against it, from
  the study's records (``examples/cifar10/records/four-axis/``).
"""
import csv
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# the implementations worth a bar, in the order they are drawn (the baseline, static, is the line at 1)
BLOCK_IMPLEMENTATIONS = ("floor", "fused", "naive", "condconv", "dyconv", "odconv", "timm_condconv")
GROUP = re.compile(r"(?P<shape>\S+) \S+ B=(?P<batch>\d+) K=(?P<k>\d+) (?P<mode>\S+) (?P<format>\S+)")
COMPILED_GROUP = re.compile(GROUP.pattern + r" (?P<path>eager|compiled)")
# (ratio label, numerator, denominator) drawn from the compiled block benchmarks
COMPILED_RATIOS = (("fused/floor", "fused", "floor"), ("condconv/static", "condconv", "static"),
                   ("dyconv/static", "dyconv", "static"), ("odconv/static", "odconv", "static"))


def relative_block_costs(path: Path, batch: int = 64, k: int = 4, mode: str = "forward_backward"
                         ) -> Dict[str, Dict[str, float]]:
    """shape -> implementation -> median time / static's median time, for one (batch, K, pass); the memory format
    with the lower static time where a shape was measured in two."""
    times: Dict[Tuple[str, str], Dict[str, float]] = defaultdict(dict)
    with open(path) as file:
        for row in csv.DictReader(file):
            match = GROUP.fullmatch(row["group"])
            if match and (int(match["batch"]), int(match["k"]), match["mode"]) == (batch, k, mode):
                times[(match["shape"], match["format"])][row["implementation"]] = float(row["median_s"])
    costs: Dict[str, Dict[str, float]] = {}
    for (shape, _), by_implementation in sorted(times.items(), key=lambda item: item[1].get("static", 1e9)):
        if "static" in by_implementation and shape not in costs:
            costs[shape] = {name: value / by_implementation["static"] for name, value in by_implementation.items()
                            if name != "static"}
    return dict(sorted(costs.items()))


def device_panels(read: Callable[[Path], dict], suffix: str) -> List[Tuple[str, dict]]:
    """(device, what ``read`` makes of ``benchmarks/results/<device><suffix>.csv``) for each device with a
    non-empty record, CPU first."""
    panels = [(name, read(RESULTS / f"{name}{suffix}.csv")) for name in ("cpu", "cuda")
              if (RESULTS / f"{name}{suffix}.csv").is_file()]
    return [(name, data) for name, data in panels if data]


def save(figure, out: Path) -> bool:
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return True


def draw_block_costs(out: Path) -> bool:
    """The block-cost chart, one panel per recorded device; False if there is no record."""
    panels = device_panels(relative_block_costs, "")
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    for axis, (name, costs) in zip(axes[0], panels, strict=True):
        shapes = list(costs)
        implementations = [i for i in BLOCK_IMPLEMENTATIONS if any(i in costs[s] for s in shapes)]
        width = 0.8 / len(implementations)
        for index, implementation in enumerate(implementations):
            xs = [position + (index - len(implementations) / 2 + 0.5) * width for position in range(len(shapes))]
            ys = [costs[shape].get(implementation, float("nan")) for shape in shapes]
            axis.bar(xs, ys, width, label=implementation)
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xticks(range(len(shapes)), shapes, rotation=30)
        axis.set_ylabel("time / static Conv-BN-ReLU")
        axis.set_title(f"{'2-core CPU, float32' if name == 'cpu' else 'GPU, bf16'}: forward+backward, B=64, K=4")
    axes[0][-1].legend(fontsize=7, ncol=2)
    return save(figure, out)


def compiled_block_ratios(path: Path, mode: str = "forward_backward"
                          ) -> Dict[Tuple[str, str], Dict[str, float]]:
    """(configuration ``shape B= K=``, path) -> ratio label -> numerator median / denominator median, for one pass,
    from a compiled block benchmark CSV (groups ending in ``eager`` or ``compiled``); eager before compiled."""
    medians: Dict[Tuple[str, str], Dict[str, float]] = defaultdict(dict)
    with open(path) as file:
        for row in csv.DictReader(file):
            match = COMPILED_GROUP.fullmatch(row["group"])
            if match and match["mode"] == mode:
                configuration = f"{match['shape']} B={match['batch']} K={match['k']}"
                medians[(configuration, match["path"])][row["implementation"]] = float(row["median_s"])
    return {key: {label: times[numerator] / times[denominator] for label, numerator, denominator in COMPILED_RATIOS
                  if numerator in times and denominator in times}
            for key, times in sorted(medians.items(), key=lambda item: (item[0][0], item[0][1] != "eager"))}


def draw_compiled_block_costs(out: Path) -> bool:
    """Eager beside compiled block-cost ratios, one panel per recorded device; False if there is no record."""
    panels = device_panels(compiled_block_ratios, "_compiled")
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    for axis, (name, ratios) in zip(axes[0], panels, strict=True):
        labels = [label for label, _, _ in COMPILED_RATIOS if any(label in r for r in ratios.values())]
        keys = list(ratios)
        colours = dict(zip(dict.fromkeys(c for c, _ in keys), plt.rcParams["axes.prop_cycle"].by_key()["color"],
                           strict=False))
        width = 0.8 / len(keys)
        for index, (configuration, path) in enumerate(keys):
            xs = [position + (index - len(keys) / 2 + 0.5) * width for position in range(len(labels))]
            ys = [ratios[(configuration, path)].get(label, float("nan")) for label in labels]
            axis.bar(xs, ys, width, color=colours[configuration], hatch="//" if path == "compiled" else None,
                     edgecolor="white", label=f"{configuration}, {path}")
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xticks(range(len(labels)), labels)
        axis.set_ylabel("time ratio")
        axis.set_title(f"{'2-core CPU, float32' if name == 'cpu' else 'GPU, bf16'}: forward+backward, eager vs "
                       "compiled (hatched)", fontsize=9)
    axes[0][-1].legend(fontsize=6, ncol=2)
    return save(figure, out)


def throughput_rows() -> List[Tuple[str, str, float]]:
    """(label, implementation, images/s) for every recorded whole-model throughput at batch 64 (inference) or the
    recorded batch (training)."""
    rows = []
    for path in sorted((RESULTS / "throughput").glob("*.csv")):
        with open(path) as file:
            for row in csv.DictReader(file):
                if row["pass"] == "inference" and int(row["batch"]) != 64:
                    continue
                label = f"{row['model']} ({row['pass']}, {path.stem.split('_')[-1]})"
                rows.append((label, row["implementation"], float(row["images_per_s"])))
    return rows


def draw_throughput(out: Path) -> bool:
    rows = throughput_rows()
    if not rows:
        return False
    labels = list(dict.fromkeys(label for label, _, _ in rows))
    implementations = list(dict.fromkeys(implementation for _, implementation, _ in rows))
    values = {(label, implementation): value for label, implementation, value in rows}
    height = 0.8 / len(implementations)
    figure, axis = plt.subplots(figsize=(8, 0.35 * len(labels) * len(implementations) ** 0.5 + 1.5))
    for index, implementation in enumerate(implementations):
        ys = [position + (index - len(implementations) / 2 + 0.5) * height for position in range(len(labels))]
        axis.barh(ys, [values.get((label, implementation), 0.0) for label in labels], height, label=implementation)
    axis.set_yticks(range(len(labels)), labels, fontsize=7)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("images per second")
    axis.legend(fontsize=7)
    return save(figure, out)


def draw_worth_it(rows, out: Path) -> bool:
    """Accuracy (with and without test-time augmentation, mean and sd over runs) against relative training time."""
    rows = [row for row in rows if row["relative_time"] is not None]
    if not rows:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    panels = ((axes[0], "acc", "test accuracy (%)"), (axes[1], "tta", "with test-time augmentation (%)"))
    for axis, key, label in panels:
        for row in rows:
            mean, sd, _ = row[key]
            kind = "anchor" if "airbench" in row["title"] else ("static" if row["title"].startswith("static") else
                                                                 "dynamic")
            style = {"static": ("s", "tab:blue"), "dynamic": ("o", "tab:orange"), "anchor": ("^", "tab:green")}[kind]
            axis.errorbar(row["relative_time"], 100 * mean, yerr=100 * (sd or 0.0), fmt=style[0], color=style[1],
                          capsize=3)
            axis.annotate(row["title"], (row["relative_time"], 100 * mean), fontsize=6, xytext=(4, 3),
                          textcoords="offset points")
        axis.set_xlabel("training time relative to the static cpu preset (9 epochs)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    figure.suptitle("cpu recipe on a 2-core CPU: squares static, circles dynamic, triangle airbench's own code",
                    fontsize=8)
    return save(figure, out)


def _newest(folder: Path):
    paths = sorted(folder.glob("*.json"))
    return json.loads(paths[-1].read_text()) if paths else None


def draw_family_costs(out: Path) -> bool:
    """Each family's forward+backward time over the static block's, per shape; each layout's step over static's."""
    record = _newest(RESULTS / "family_costs")
    if record is None:
        return False
    figure, (blocks, networks) = plt.subplots(1, 2, figsize=(11, 4))
    shapes = list(record["blocks"])
    kinds = [k for k in record["blocks"][shapes[0]] if k != "static"]
    width = 0.8 / len(shapes)
    for index, shape in enumerate(shapes):
        row = record["blocks"][shape]
        xs = [position + (index - len(shapes) / 2 + 0.5) * width for position in range(len(kinds))]
        blocks.bar(xs, [row[k] / row["static"] for k in kinds], width, label=shape)
    blocks.axhline(1.0, color="black", linewidth=0.8)
    blocks.set_xticks(range(len(kinds)), kinds, rotation=30, fontsize=7)
    blocks.set_ylabel("forward + backward / static block")
    blocks.set_yscale("log")
    blocks.legend(fontsize=7)
    layouts = list(record["network_ratios"])
    networks.barh(range(len(layouts)), [record["network_ratios"][k] for k in layouts], color="tab:orange")
    networks.axvline(1.0, color="black", linewidth=0.8)
    networks.set_yticks(range(len(layouts)), layouts, fontsize=7)
    networks.invert_yaxis()
    networks.set_xscale("log")
    networks.set_xlabel("cpu-recipe training step / static network's (log scale)")
    figure.suptitle(f"{record['provenance']['machine']['cpu']}, {record['precision']}", fontsize=8)
    return save(figure, out)


def draw_deploy_latency(points, out: Path) -> bool:
    """Accuracy against CPU latency (batch 1 and 256, ONNX Runtime), one marker per model."""
    if not points:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, batch in zip(axes, ("B=1", "B=256"), strict=True):
        for point in points:
            if batch not in point["latency_ms"]:
                continue
            axis.scatter(point["latency_ms"][batch], 100 * point["acc"],
                         marker="s" if "static" in point["model"] else "o")
            axis.annotate(point["model"].removeprefix("dynconv_cifar_"), (point["latency_ms"][batch],
                          100 * point["acc"]), fontsize=6, xytext=(4, 3), textcoords="offset points")
        axis.set_xlabel(f"ONNX Runtime latency, {batch} (ms, float32, BatchNorms folded)")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    return save(figure, out)


#: the four-axis study's panels: cost of a point's entry, axis label
FOUR_AXIS_PANELS = (
    (lambda e: e["params"] / 1e6, "parameters (M)"),
    (lambda e: e["macs_per_image"] / 1e6, "inference multiply-adds per image (M)"),
    (lambda e: e.get("latency_ms"), "batch-1 latency, ONNX Runtime (ms)"),
    (lambda e: e["seconds_per_epoch"]["mean"] if e.get("seconds_per_epoch") else None, "seconds per epoch (alone)"),
)


def draw_four_axis(results: dict, out: Path) -> bool:
    """Test accuracy (mean and sd over seeds) against each cost axis: the static front as a line through its
    widths, each dynamic point as a labelled marker. Axes without measurements are left out."""
    points = results["points"]
    panels = [(cost, label) for cost, label in FOUR_AXIS_PANELS
              if any(cost(entry) is not None for entry in points.values())]
    if not panels:
        return False
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), sharey=True, squeeze=False)
    for axis, (cost, label) in zip(axes[0], panels, strict=True):
        front = sorted((cost(e), 100 * e["test_acc"]["mean"], 100 * e["test_acc"]["std"])
                       for e in points.values() if e["front"] and cost(e) is not None)
        if front:
            xs, ys, sds = zip(*front, strict=True)
            axis.errorbar(xs, ys, yerr=sds, fmt="s-", color="tab:blue", capsize=3, label="static front")
        for name, entry in points.items():
            if entry["front"] or cost(entry) is None:
                continue
            axis.errorbar(cost(entry), 100 * entry["test_acc"]["mean"], yerr=100 * entry["test_acc"]["std"],
                          fmt="o", color="tab:orange", capsize=3)
            axis.annotate(name, (cost(entry), 100 * entry["test_acc"]["mean"]), fontsize=6, xytext=(4, 3),
                          textcoords="offset points")
        axis.set_xscale("log")
        axis.set_xlabel(label, fontsize=8)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=7)
    figure.suptitle("cpu recipe, 9 epochs: static front (squares) against dynamic networks (circles)", fontsize=8)
    return save(figure, out)


def write_charts(folder: Path) -> Dict[str, bool]:
    from docs.generate_tables import deploy_points, four_axis_results, worth_it_rows

    folder.mkdir(parents=True, exist_ok=True)
    return {"block_cost": draw_block_costs(folder / "block_cost.png"),
            "block_cost_compiled": draw_compiled_block_costs(folder / "block_cost_compiled.png"),
            "throughput": draw_throughput(folder / "throughput.png"),
            "worth_it": draw_worth_it(worth_it_rows(), folder / "worth_it.png"),
            "family_costs": draw_family_costs(folder / "family_costs.png"),
            "deploy_latency": draw_deploy_latency(deploy_points(), folder / "deploy_latency.png"),
            "four_axis": draw_four_axis(four_axis_results(), folder / "four_axis.png")}
