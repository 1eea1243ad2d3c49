"""Copy finished runs' final weights and records into one folder, small enough to bring back from a lent GPU.

    python examples/cifar10/collect_weights.py /tmp/dynconv-coursework/seed0 --out $OUT/weights --half

Each run becomes ``<out>/<run name>/`` with ``config.json``, ``metrics.jsonl``, ``summary.json`` and
``checkpoints/`` holding its final weights (float16 with ``--half``: the coursework model is 77 MB in float32) and
the manifest, the layout of a run folder, so ``ship_weights.py`` ships it like a local run. Unfinished runs are
skipped with a message.
"""
import sys

from cifar10_recipe.collect_weights import main

if __name__ == "__main__":
    sys.exit(main())
