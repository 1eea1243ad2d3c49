"""A run's provenance names a command that reproduces it when pasted into a shell."""
import shlex

import torch

from dynconv.records import provenance


def test_the_recorded_command_pastes_back_to_the_same_arguments():
    argv = ["examples/cifar10/train.py", "--preset", "cpu", "--model-kwargs", '{"num_experts": [[1, 1], [1, 2]]}',
            "--out", "runs/a b"]
    command = provenance(torch.device("cpu"), argv)["command"]
    assert shlex.split(command) == ["python", *argv]
    assert command.startswith("python examples/cifar10/train.py --preset cpu --model-kwargs '")
