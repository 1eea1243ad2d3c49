"""The thread count of the training runs the tests start, in-process or as subprocesses."""
import torch


def run_threads() -> str:
    """This process's share of the cores as a ``--threads`` value: under pytest-xdist the root conftest gives each
    worker its share, and a run at more threads than that would oversubscribe the cores and slow every worker."""
    return str(torch.get_num_threads())
