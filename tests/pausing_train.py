"""Run train.py with one checkpoint file write paused just before its rename, so a test can kill it there.

    PAUSE_BEFORE=<file name> PAUSE_AT=<n> PAUSE_MARKER=<path> python tests/pausing_train.py <train.py arguments>

When the writer is about to rename its finished temporary file onto ``PAUSE_BEFORE`` for the n-th time (default
1), this touches ``PAUSE_MARKER`` and sleeps, leaving the process for the test to SIGKILL.
"""
import os
import sys
import time
from pathlib import Path

from cifar10_recipe import cli as train


def main() -> int:
    pause_before, marker = os.environ["PAUSE_BEFORE"], Path(os.environ["PAUSE_MARKER"])
    remaining = [int(os.environ.get("PAUSE_AT", "1"))]
    rename = os.replace

    def paused_replace(source, destination):
        if Path(destination).name == pause_before:
            remaining[0] -= 1
            if remaining[0] == 0:
                marker.touch()
                time.sleep(600)
        rename(source, destination)

    os.replace = paused_replace
    return train.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
