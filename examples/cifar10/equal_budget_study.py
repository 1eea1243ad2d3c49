"""The equal-budget study: does a dynamic block beat its static twin at equal epochs and at equal wall time?

Every block family (static, branch, condconv, dyconv, odconv) in the ``dynconv_cifar_tiny`` backbone, trained with
the ``tiny`` preset's recipe on the 2-core CPU (the preset was called ``cpu`` until ``cpu`` moved to airbench's
recipe; the records' commands, run before the rename, say ``--preset cpu`` and mean this recipe):

    python examples/cifar10/equal_budget_study.py timing   # ALONE on the machine: seconds per epoch of each family
    python examples/cifar10/equal_budget_study.py train    # the study's runs (resumable; finished runs are skipped)
    python examples/cifar10/equal_budget_study.py report   # table (markdown + JSON) and plot from the records

Besides the five families, the study trains **levers** (issue 13's "push for the win"): variants of a dynamic
family that could make it cheaper or better at equal time (``LEVERS``: a dynamic block only in the second position of
every segment for branch mixing, branches of kernel sizes 1 and 3, dynamic only in the two blocks whose routing
varies by content), timed and trained the same way at equal time.

``timing`` runs must have the machine to themselves (their wall time sets the equal-time budgets); ``train`` runs
may share it, since accuracy after N epochs does not depend on load; their x axis in the plot is epochs times the
family's timed seconds per epoch. The equal-time budget is the branch model's 11 epochs; each family gets the most
epochs whose timed wall time fits in it (the learning-rate schedule scales with the epoch count).

Records (``config.json``, ``metrics.jsonl``, ``summary.json`` of every run) go to ``--records``; run folders with
checkpoints stay under ``--runs-dir``.
"""
import sys

from cifar10_recipe.equal_budget_study import main

if __name__ == "__main__":
    sys.exit(main())
