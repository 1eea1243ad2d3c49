"""Benchmark options: ``--device`` (cpu or cuda) and the shared timing helper.

Run for real with ``pytest benchmarks --benchmark-enable --benchmark-json=out.json``; the default test run executes
every benchmark once at a small batch (``--benchmark-disable`` in pyproject.toml), so they cannot rot.
"""
import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device to benchmark on: cpu (default) or cuda")
    parser.addoption("--bench-budget", type=float, default=1.0,
                     help="seconds of timed calls per benchmark (rounds = budget / one call, within 5..200)")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    device = torch.device(request.config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given, but CUDA is not available")
    return device


@pytest.fixture(scope="session")
def time_budget(request) -> float:
    return request.config.getoption("--bench-budget")


@pytest.fixture(scope="session")
def timing_enabled(request) -> bool:
    """False when pytest-benchmark is disabled (the default test run): benchmarks then shrink their batches."""
    options = request.config.getoption
    return not (options("benchmark_disable") and not options("benchmark_enable"))
