"""Run train.py, interrupting it at one training step of its first launch.

    CRASH_AT=<n> [CRASH_RANK=<r>] [CRASH_SIGNAL=SIGKILL|SIGTERM] python tests/crashing_train.py <train.py arguments>

The n-th training loss of the process whose ``RANK`` is ``CRASH_RANK`` (default 0) interrupts the run, on the first
launch only (torchrun's ``TORCHELASTIC_RESTART_COUNT`` 0), so that a restarted job runs to the end:

- ``SIGKILL`` (default): the process kills itself, a worker dying mid-run;
- ``SIGTERM``: the process sends SIGTERM to its parent (torchrun, which forwards it to every worker) and waits until
  its own copy arrives, so the stop is seen at a known step, not wherever a test's timer happened to send it. The
  other workers cannot run ahead meanwhile: they wait for this one in the step's gradient all-reduce.
"""
import os
import signal
import sys
import time

import torch

from cifar10_recipe import cli as train


def _terminate_parent_and_wait(timeout_s: float = 60.0) -> None:
    arrived = []
    handler = signal.getsignal(signal.SIGTERM)  # the recipe's: keep it, and note when torchrun's copy arrives

    def note_and_handle(signum, frame):
        arrived.append(signum)
        if callable(handler):
            handler(signum, frame)

    signal.signal(signal.SIGTERM, note_and_handle)
    os.kill(os.getppid(), signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while not arrived and time.monotonic() < deadline:
        time.sleep(0.01)
    if not arrived:
        raise RuntimeError("torchrun did not forward SIGTERM within a minute")


def main() -> int:
    crash_at = int(os.environ["CRASH_AT"])
    how = os.environ.get("CRASH_SIGNAL", "SIGKILL")
    if how not in ("SIGKILL", "SIGTERM"):
        raise ValueError(f"CRASH_SIGNAL must be SIGKILL or SIGTERM, not {how!r}")
    first_launch = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first_launch and os.environ.get("RANK", "0") == os.environ.get("CRASH_RANK", "0"):
        original, calls = torch.nn.functional.cross_entropy, [0]

        def interrupted_at_step(*args, **kwargs):
            if torch.is_grad_enabled():
                calls[0] += 1
                if calls[0] == crash_at:
                    if how == "SIGKILL":
                        os.kill(os.getpid(), signal.SIGKILL)
                    else:
                        _terminate_parent_and_wait()
            return original(*args, **kwargs)

        torch.nn.functional.cross_entropy = interrupted_at_step
    return train.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
