"""Every family beside its floor: bare dynamic convolutions against a static one, timm's CondConv2d and the
published per-sample form, at the shapes where dynamic convolutions are cheap and where they are not.

    python -m benchmarks.family_floor --out benchmarks/results/family_floor/<machine>   # alone on the machine

Two measurements, each alternating its candidates round by round (medians):

- **table**: at six shapes (64->64 at 16x16 and 256->256 at 7x7 and 3x3 at batch 256, 128->128 at 16x16 at batch
  64, 64->64 at 56x56 and 512->512 at 7x7 at batch 32; or ``--batches``), forward and forward + backward (with the
  input's gradient, as inside a network), float32 and bf16 autocast: a static ``nn.Conv2d`` (the floor), timm's
  ``CondConv2d`` with a sigmoid routing head (as timm's EfficientNet-CondConv routes it), every dynconv family in its
  automatic form, and the published form of
  the kernel-mixing families (each sample's kernel built, then one grouped convolution with groups = B, as the
  papers' code computes it; here our layers' ``mode="grouped"``). K = 4 experts (ODConv's 4x); DCD and
  KernelWarehouse (1x, its own warehouse) have none.
- **modes**: every exact form of every family at the shapes of the CIFAR networks and of ResNet-18/50 and
  MobileNetV2 at 224 (forward + backward, float32), to check the automatic choice
  (:func:`dynconv.layers.kernel_mixing.select_mode`) against what is fastest; ``tests/test_family_floor.py`` reads
  the committed record.

Writes ``<out>.json`` (medians, ratios, machine, versions, commit) and ``<out>.md``.
"""
import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from timm.layers import CondConv2d as TimmCondConv2d
from torch import nn

from dynconv.layers import CondConv2d, DCDConv2d, DyConv2d, KWConv2d, ODConv2d
from dynconv.records import provenance, write_record

K = 4
# name -> (C_in, C_out, H, batch, groups)
TABLE_SHAPES: Dict[str, Tuple[int, int, int, int, int]] = {
    "64->64@16 B256": (64, 64, 16, 256, 1), "256->256@7 B256": (256, 256, 7, 256, 1),
    "256->256@3 B256": (256, 256, 3, 256, 1), "128->128@16 B64": (128, 128, 16, 64, 1),
    "64->64@56 B32": (64, 64, 56, 32, 1), "512->512@7 B32": (512, 512, 7, 32, 1),
}
# the shapes of the networks (3x3 unless marked): airbench94's cpu network (batch 250), the coursework network's
# segments, ResNet-18/50 and MobileNetV2 at 224 (batch 8: the choice depends on the ratio of kernel to activation
# sizes, which the batch does not change)
MODE_SHAPES: Dict[str, Tuple[int, int, int, int, int, int]] = {  # (C_in, C_out, H, batch, groups, k)
    "cpu s1 64->64@15": (64, 64, 15, 250, 1, 3), "cpu s2 64->256@15": (64, 256, 15, 250, 1, 3),
    "cpu s2 256->256@7": (256, 256, 7, 250, 1, 3), "cpu s3 256->256@3": (256, 256, 3, 250, 1, 3),
    "coursework 64->64@32": (64, 64, 32, 64, 1, 3), "coursework 512->512@4": (512, 512, 4, 64, 1, 3),
    "resnet 64->64@56": (64, 64, 56, 8, 1, 3), "resnet 128->128@28": (128, 128, 28, 8, 1, 3),
    "resnet 256->256@14": (256, 256, 14, 8, 1, 3), "resnet 512->512@7": (512, 512, 7, 8, 1, 3),
    "resnet50 1x1 256->64@56": (256, 64, 56, 8, 1, 1), "resnet50 1x1 512->2048@7": (512, 2048, 7, 8, 1, 1),
    "mobilenetv2 1x1 24->144@56": (24, 144, 56, 8, 1, 1), "mobilenetv2 dw 144@56": (144, 144, 56, 8, 144, 3),
    "mobilenetv2 1x1 960->160@7": (960, 160, 7, 8, 1, 1), "mobilenetv2 dw 960@7": (960, 960, 7, 8, 960, 3),
}
MODE_FAMILIES = {"condconv": CondConv2d, "dyconv": DyConv2d, "odconv": ODConv2d, "kw": KWConv2d}


class TimmCondConv(nn.Module):
    """timm's ``CondConv2d`` as its EfficientNet-CondConv blocks use it: sigmoid routing on the pooled input."""

    def __init__(self, in_channels: int, out_channels: int, num_experts: int):
        super().__init__()
        self.routing = nn.Linear(in_channels, num_experts)
        self.conv = TimmCondConv2d(in_channels, out_channels, 3, padding=1, num_experts=num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, torch.sigmoid(self.routing(x.mean(dim=(2, 3)))))


def table_layers(in_channels: int, out_channels: int) -> Dict[str, nn.Module]:
    """The candidates of one table shape: the floor, timm's layer, every family automatic and published."""
    layers = {"static": nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
              "timm_condconv": TimmCondConv(in_channels, out_channels, K)}
    for name, cls in (("condconv", CondConv2d), ("dyconv", DyConv2d), ("odconv", ODConv2d)):
        layers[name] = cls(in_channels, out_channels, num_experts=K)
        layers[f"{name}_published"] = cls(in_channels, out_channels, num_experts=K, mode="grouped")
    layers["dcd"] = DCDConv2d(in_channels, out_channels)
    layers["kw"] = KWConv2d(in_channels, out_channels)
    return layers


def _call(module: nn.Module, x: torch.Tensor, backward: bool, autocast) -> Callable[[], None]:
    """One timed call: forward, or forward and backward with the input's gradient, as every layer but a network's
    first needs it (without it a static convolution skips its input gradient, while a layer that scales its input
    by an attention, like ODConv, cannot)."""
    module.train(backward)
    grad = None
    if backward:
        x = x.detach().requires_grad_(True)

    def run() -> None:
        nonlocal grad
        with autocast, (nullcontext() if backward else torch.inference_mode()):
            out = module(x)
        if backward:
            grad = torch.ones_like(out) if grad is None else grad
            out.backward(grad)
            x.grad = None  # each call writes the input's gradient afresh rather than adding to the last one
    return run


def _synchronize(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously: wait for them inside the timed span


def median_times(candidates: Dict[str, Callable[[], None]], rounds: int,
                 device: Optional[torch.device] = None) -> Dict[str, float]:
    """Median seconds per call of each candidate, alternated round by round after one warm-up call each."""
    for run in candidates.values():
        run()
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            _synchronize(device)
            start = time.perf_counter()
            run()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def table(rounds: int, batches: Optional[List[int]], device: torch.device) -> List[Dict]:
    rows = []
    for shape, (in_channels, out_channels, size, default_batch, _) in TABLE_SHAPES.items():
        for batch in batches or [default_batch]:
            torch.manual_seed(0)
            layers = {name: layer.to(device) for name, layer in table_layers(in_channels, out_channels).items()}
            x = torch.randn(batch, in_channels, size, size, device=device)
            for precision in ("float32", "bf16"):
                autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                            else nullcontext())
                for pass_ in ("forward", "forward_backward"):
                    times = median_times({name: _call(layer, x, pass_ != "forward", autocast)
                                          for name, layer in layers.items()}, rounds, device)
                    rows.append({"shape": shape, "batch": batch, "precision": precision, "pass": pass_,
                                 "seconds": times})
                    print(f"{shape} B{batch} {precision} {pass_}: " + ", ".join(
                        f"{k} {v / times['static']:.2f}x" for k, v in times.items()), flush=True)
    return rows


def _mode_layer(family: str, shape: Tuple[int, ...], mode: str) -> nn.Module:
    in_channels, out_channels, _, _, groups, kernel = shape
    experts = {} if family == "kw" else {"num_experts": K}
    return MODE_FAMILIES[family](in_channels, out_channels, kernel, groups=groups, mode=mode, **experts)


def modes(rounds: int, device: torch.device) -> List[Dict]:
    rows = []
    for shape, geometry in MODE_SHAPES.items():
        in_channels, _, size, batch, _, _ = geometry
        torch.manual_seed(0)
        x = torch.randn(batch, in_channels, size, size, device=device)
        for family in MODE_FAMILIES:
            auto = _mode_layer(family, geometry, "auto").to(device)
            candidates = {mode: _call(_mode_layer(family, geometry, mode).to(device), x, True, nullcontext())
                          for mode in auto.computation_modes() if mode != "auto"}
            times = median_times(candidates, rounds, device)
            rows.append({"shape": shape, "family": family, "batch": batch, "seconds": times,
                         "auto": auto.resolve_mode(x)})
            print(f"modes {shape} {family}: auto {rows[-1]['auto']}; " + ", ".join(
                f"{k} {v * 1e3:.1f} ms" for k, v in times.items()), flush=True)
    return rows


def _markdown(record: Dict) -> str:
    names = list(record["table"][0]["seconds"])
    machine = record["provenance"]["machine"]
    lines = [f"# Dynamic convolutions against their floor ({machine['gpu'] or machine['cpu']})", "",
             f"Median of {record['rounds']} alternated rounds, bare layers, K = {K}; ratio to a static nn.Conv2d of "
             f"the same shape in the same run. Command: `{record['provenance']['command']}`, commit "
             f"{record['provenance']['commit']}."
             + (" Forward+backward computes the input's gradient, as every layer of a network but the first does."
                if record.get("input_grad") else
                " Forward+backward without the input's gradient (a static convolution then skips it, a layer that "
                "scales its input, like ODConv, cannot)."), "",
             "| shape | precision | pass | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
    for row in record["table"]:
        base = row["seconds"]["static"]
        lines.append(f"| {row['shape']} | {row['precision']} | {row['pass'].replace('_', '+')} | " + " | ".join(
            f"{row['seconds'][name] / base:.2f}x" for name in names) + " |")
    lines += ["", "Every exact form, forward + backward, float32; **auto** is the cost model's choice:", "",
              "| shape | family | auto | " + " | ".join(("grouped", "bmm", "outputs", "patches")) + " |",
              "|---|---|---|---|---|---|---|"]
    for row in record["modes"]:
        best = min(row["seconds"].values())
        cells = [f"{row['seconds'][mode] * 1e3:.1f} ms" + (" (best)" if row["seconds"][mode] == best else "")
                 if mode in row["seconds"] else "-" for mode in ("grouped", "bmm", "outputs", "patches")]
        lines.append(f"| {row['shape']} | {row['family']} | {row['auto']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .md)")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds per measurement")
    parser.add_argument("--batches", type=int, nargs="*", help="table: these batches at every shape instead")
    parser.add_argument("--skip-modes", action="store_true", help="only the table")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 rows use autocast on that device)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    record = {"rounds": args.rounds, "num_experts": K, "threads": torch.get_num_threads(), "input_grad": True,
              "provenance": provenance(device), "table": table(args.rounds, args.batches, device),
              "modes": [] if args.skip_modes else modes(args.rounds, device)}
    write_record(args.out, record, _markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
