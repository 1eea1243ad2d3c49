"""Collect run directories (finished or not) into one JSON file and print mean and std of their final accuracy.

    python examples/cifar10/collect_runs.py runs/a runs/b runs/c --out results.json

Each run contributes its config, its per-epoch metrics and, when it finished, its summary; unfinished runs are
listed with the last epoch they reached, and left out of the mean.
"""
import sys

from cifar10_recipe.collect_runs import main

if __name__ == "__main__":
    sys.exit(main())
