"""Run train.py, killing this process (SIGKILL) at one training step of its first launch: a worker dying mid-run.

    CRASH_AT=<n> [CRASH_RANK=<r>] python tests/crashing_train.py <train.py arguments>

The n-th training loss of the process whose ``RANK`` is ``CRASH_RANK`` (default 0) kills the process, on the first
launch only (torchrun's ``TORCHELASTIC_RESTART_COUNT`` 0), so that a restarted job runs to the end.
"""
import os
import signal
import sys

import torch

from cifar10_recipe import cli as train


def main() -> int:
    crash_at = int(os.environ["CRASH_AT"])
    first_launch = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first_launch and os.environ.get("RANK", "0") == os.environ.get("CRASH_RANK", "0"):
        original, calls = torch.nn.functional.cross_entropy, [0]

        def dies_at_step(*args, **kwargs):
            if torch.is_grad_enabled():
                calls[0] += 1
                if calls[0] == crash_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        torch.nn.functional.cross_entropy = dies_at_step
    return train.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
