"""Training throughput of the tiny preset's model (the old cpu preset's), float32 and bf16 autocast, on this CPU.

    python -m benchmarks.cpu_precision --out benchmarks/results/cpu_precision.json

Why it exists: bf16 autocast is fast only on CPUs that compute bf16 natively (AVX-512 BF16, AMX); elsewhere oneDNN
emulates it. The recipe's ``--amp auto`` decides from ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``; this
measures what that decision is worth. One training step (forward, backward, SGD) of ``dynconv_cifar_tiny`` and its
static twin at batch 256, channels-last, median of the timed steps after warm-up.
"""
import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import dynconv  # noqa: F401  (registers the models)

MODELS = ("dynconv_cifar_tiny", "dynconv_cifar_tiny_static")
BATCH = 256


def images_per_second(name: str, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = timm.create_model(name).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(BATCH, 3, 32, 32).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (BATCH,))
    times = []
    for _ in range(steps + 2):  # the first two steps create oneDNN primitives
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return BATCH / statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    from dynconv.records import cpu_name, git_commit

    results = {name: {precision: images_per_second(name, precision == "bf16", args.steps)
                      for precision in ("float32", "bf16")} for name in MODELS}
    record = {
        "what": f"training images/s, batch {BATCH}, channels-last, median of {args.steps} steps",
        "results": results,
        "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "platform": platform.platform()},
        "torch": torch.__version__, "commit": git_commit(),
        "command": f"python -m benchmarks.cpu_precision --out {args.out}",
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    for name, speeds in results.items():
        print(f"{name}: float32 {speeds['float32']:.0f} img/s, bf16 {speeds['bf16']:.0f} img/s "
              f"(float32 / bf16 = {speeds['float32'] / speeds['bf16']:.1f}x)")


if __name__ == "__main__":
    main()
