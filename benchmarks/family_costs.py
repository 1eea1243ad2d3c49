"""What each block family costs where the ``cpu`` recipe would put it, side by side in one run on one machine.

    python -m benchmarks.family_costs --out benchmarks/results/family_costs   # about 15 minutes on 2 cores

Two measurements, each alternating its candidates round by round so that a slow spell of the machine hits them all:

- **blocks**: forward + backward of one block of every family (Conv-Norm-GELU after it, as in the network) at the
  shapes of airbench94's second block per segment (64 -> 64 at 15x15, 256 -> 256 at 7x7 and 3x3), batch 256,
  channels-last, bf16 autocast where the CPU has it natively (``--amp auto``, as the recipe), against the static block;
- **networks**: one training step of the ``cpu`` recipe (batch 2000, its Muon + SGD optimizer, label smoothing) on
  airbench94's network with each family in the second block of every segment, and the cheaper layouts with dynamic
  blocks in the last segments only, and KernelWarehouse's networks at 1/4x, 1/2x and 1x (measured as networks only:
  a warehouse is shared by a range of layers), against the static network.

``feature_attention`` is not a library family: it is the candidate the issue asked about (ODConv's channel and filter
attentions applied to the features around one static kernel), measured here to decide whether it earns a place.
Writes ``<out>.json`` (medians, ratios, machine, versions, commit) and ``<out>.md``.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, SelectAdaptivePool2d
from torch import nn

import dynconv  # noqa: F401  (registers the models)
from cifar10_recipe.config import resolve_config
from cifar10_recipe.execution import autocast_context, configure_execution, uses_bf16
from cifar10_recipe.optimization import build_optimizer
from dynconv.layers import create_block
from dynconv.records import provenance, write_record

# (C_in, C_out, H): airbench94's second block of each segment, at CIFAR's 32x32 after the 2x2 patch stem
BLOCK_SHAPES = {"s1 64->64@15": (64, 64, 15), "s2 256->256@7": (256, 256, 7), "s3 256->256@3": (256, 256, 3)}
BLOCK_BATCH = 256


class FeatureAttentionBlock(nn.Module):
    """One static kernel between ODConv's input-channel and output-channel attentions, applied to the features:
    ``y = BN-GELU(a_f(x) * conv(a_c(x) * x))``, the attentions from one pooled descriptor (width C_in / 16, >= 16)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = max(in_channels // 16, 16)
        self.pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.fc = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True))
        self.channel = nn.Linear(hidden, in_channels)
        self.filter = nn.Linear(hidden, out_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = BatchNormAct2d(out_channels, act_layer="gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc(self.pool(x))
        x = x * torch.sigmoid(self.channel(hidden))[:, :, None, None].to(x.dtype)
        out = self.conv(x)
        return self.bn(out * torch.sigmoid(self.filter(hidden))[:, :, None, None].to(out.dtype))


def _block(kind: str) -> Callable[[int, int], nn.Module]:
    if kind == "feature_attention":
        return FeatureAttentionBlock
    experts = {"static": 1, "odconv": 1}.get(kind, 2)
    return lambda i, o: create_block(kind, i, o, num_experts=experts, act_layer="gelu")


BLOCK_KINDS = ("static", "branch", "condconv", "dyconv", "odconv", "dcd", "feature_attention")

SECOND = ("static", "{kind}")
# name -> (model, model kwargs): the static network, each family second in every segment, and the layouts that put
# dynamic blocks where maps are small and channels wide
LAYOUTS = {
    "static": ("dynconv_cifar_fast_static", {}),
    "branch": ("dynconv_cifar_fast", {}),
    "branch_last": ("dynconv_cifar_fast", {"num_experts": ((1, 1), (1, 1), (1, 2))}),
    "condconv": ("dynconv_cifar_fast_static", {"block": ((SECOND[0], "condconv"),) * 3,
                                               "num_experts": ((1, 2),) * 3}),
    "dyconv": ("dynconv_cifar_fast_static", {"block": ((SECOND[0], "dyconv"),) * 3, "num_experts": ((1, 2),) * 3}),
    "odconv": ("dynconv_cifar_fast_static", {"block": ((SECOND[0], "odconv"),) * 3, "num_experts": 1}),
    "dcd": ("dynconv_cifar_fast_dcd", {}),
    "dcd_routed": ("dynconv_cifar_fast_dcd_routed", {}),
    "dcd_last": ("dynconv_cifar_fast_static", {"block": ("static", "static", ("static", "dcd"))}),
    # KernelWarehouse's networks as the four-axis study trains them (every convolution after the first from a
    # warehouse per segment); a lone KW block means nothing, its warehouse being shared by a range of layers
    "kw1d4x": ("dynconv_cifar_fast_kw1d4x", {}),
    "kw1d2x": ("dynconv_cifar_fast_kw1d2x", {}),
    "kw1x": ("dynconv_cifar_fast_kw1x", {}),
}


def _median_times(candidates: Dict[str, Callable[[], None]], rounds: int, warmup: int = 2) -> Dict[str, float]:
    """Median seconds per call of each candidate, the candidates alternated round by round."""
    for run in candidates.values():
        for _ in range(warmup):
            run()
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def block_costs(rounds: int, batch: int, autocast) -> Dict[str, Dict[str, float]]:
    """Shape -> family -> median seconds of forward + backward."""
    results = {}
    for shape, (in_channels, out_channels, size) in BLOCK_SHAPES.items():
        torch.manual_seed(0)
        x = torch.randn(batch, in_channels, size, size).contiguous(memory_format=torch.channels_last)
        candidates = {}
        for kind in BLOCK_KINDS:
            module = _block(kind)(in_channels, out_channels).to(memory_format=torch.channels_last).train()

            def forward_backward(module=module, x=x):
                with autocast:
                    out = module(x)
                out.float().sum().backward()
            candidates[kind] = forward_backward
        results[shape] = _median_times(candidates, rounds)
        print(f"blocks {shape}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in results[shape].items()), flush=True)
    return results


def network_costs(rounds: int, batch: int) -> Dict[str, float]:
    """Layout -> median seconds of one ``cpu``-recipe training step."""
    candidates = {}
    for name, (model_name, kwargs) in LAYOUTS.items():
        config = resolve_config("cpu", {"model": model_name, "model_kwargs": json.dumps(kwargs) if kwargs else ""})
        torch.manual_seed(0)
        model = timm.create_model(model_name, **kwargs).to(memory_format=torch.channels_last).train()
        optimizer = build_optimizer(config, model)
        images = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (batch,))
        autocast = autocast_context(config, torch.device("cpu"))

        def step(model=model, optimizer=optimizer, images=images, labels=labels, autocast=autocast,
                 smoothing=config.label_smoothing):
            with autocast:
                loss = F.cross_entropy(model(images).float(), labels, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        candidates[name] = step
    results = _median_times(candidates, rounds)
    print("networks: " + ", ".join(f"{k} {v:.2f} s" for k, v in results.items()), flush=True)
    return results


def _markdown(record: Dict) -> str:
    lines = [f"# Block families at the cpu network's shapes ({record['provenance']['machine']['cpu']}, "
             f"{record['precision']})", "",
             f"Median of {record['rounds']} alternated rounds; ratio to the static block or network of the same run. "
             f"Command: `{record['provenance']['command']}`, commit {record['provenance']['commit']}.", "",
             "| block, forward + backward, batch " + str(record["block_batch"]) + " | "
             + " | ".join(BLOCK_KINDS) + " |", "|---" * (len(BLOCK_KINDS) + 1) + "|"]
    for shape, row in record["blocks"].items():
        lines.append(f"| {shape} | " + " | ".join(f"{row[k] * 1e3:.1f} ms ({row[k] / row['static']:.2f}x)"
                                                  for k in BLOCK_KINDS) + " |")
    lines += ["", f"| network layout, one cpu-recipe step at batch {record['network_batch']} | seconds | "
                  "ratio to static |", "|---|---|---|"]
    base = record["networks"]["static"]
    for name, seconds in record["networks"].items():
        lines.append(f"| {name} | {seconds:.2f} | {seconds / base:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .md)")
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds per measurement")
    parser.add_argument("--block-batch", type=int, default=BLOCK_BATCH)
    parser.add_argument("--network-batch", type=int, default=2000, help="the cpu preset's batch")
    args = parser.parse_args(argv)
    config = resolve_config("cpu", {})
    device = torch.device("cpu")
    configure_execution(config, device)  # threads and the heap as the recipe sets them
    autocast = autocast_context(config, device)
    record = {"rounds": args.rounds, "block_batch": args.block_batch, "network_batch": args.network_batch,
              "precision": "bf16 autocast" if uses_bf16(config, device) else "float32",
              "provenance": provenance(device, ["benchmarks/family_costs.py", *(argv or sys.argv[1:])]),
              "blocks": block_costs(args.rounds, args.block_batch, autocast),
              "networks": network_costs(args.rounds, args.network_batch)}
    record["network_ratios"] = {k: v / record["networks"]["static"] for k, v in record["networks"].items()}
    write_record(args.out, record, _markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
