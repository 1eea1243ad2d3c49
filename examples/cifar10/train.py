"""Train a dynconv model on CIFAR-10.

    python examples/cifar10/train.py --preset cpu          # 2-core CPU recipe (see README.md beside this file)
    python examples/cifar10/train.py --preset coursework   # the coursework's recipe, needs a GPU for 50 epochs
    python examples/cifar10/train.py --help                # every flag; each overrides the preset

Presets and their results: ``examples/cifar10/README.md``; every run: the docs' results ledger.

A run writes into its directory (``--out``, default ``runs/<timestamp>-<preset>``): ``config.json`` (the resolved
configuration), ``metrics.jsonl`` (one line per epoch), ``curves.png``, ``summary.json`` and ``checkpoints/``
(safetensors weights, resume state). ``--resume RUN_DIR`` continues a run; ``--eval CHECKPOINT`` only evaluates.
The work is done by :class:`cifar10_recipe.run_manager.RunManager` (the run folder) and
:class:`cifar10_recipe.trainer.Trainer` (the training).
"""
import sys

from cifar10_recipe.cli import main

if __name__ == "__main__":
    sys.exit(main())
