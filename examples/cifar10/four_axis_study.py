"""The four-axis study: is a dynamic network above the static front on parameters, inference MFLOPs, batch-1 latency
or training time?

Every point trains with the ``cpu`` preset (Muon, 9 epochs, the local CIFAR-10 copy), 3 seeds each; the static
front is airbench94's network at four widths. Steps:

    python examples/cifar10/four_axis_study.py train    # every point's missing seeds (shares the machine: accuracy
                                                        # after 9 epochs does not depend on load)
    python examples/cifar10/four_axis_study.py timing   # ALONE on the machine: seconds per epoch of every point, in
                                                        # alternated short runs
    python examples/cifar10/four_axis_study.py report   # study.json and study.md from the records

Records (``config.json``, ``metrics.jsonl``, ``summary.json`` of every run) go to ``--records``; run folders with
checkpoints stay under ``--runs-dir``. Batch-1 latency comes from ``benchmarks/deploy_latency.py`` (its record is
named in the report).
"""
import sys

from cifar10_recipe.four_axis_study import main

if __name__ == "__main__":
    sys.exit(main())
