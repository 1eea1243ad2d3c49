"""Makes ``torch`` available to the docstring examples that pytest runs as doctests, restores the process-wide
settings a test may change, and writes the fake CIFAR-10 the recipe's tests train on."""
import os
import platform

import pytest
import torch


def pytest_report_header(config):
    """The versions this run tests, in its log (CI's record of what it tested; tests/test_versions.py)."""
    import timm

    return (f"dynconv tested with: Python {platform.python_version()}, torch {torch.__version__}, "
            f"timm {timm.__version__}")


def pytest_configure(config):
    """Under pytest-xdist (the README's test command runs ``-n auto``), each worker gets its share of the cores, and so
    do the training subprocesses it starts: workers at the default thread count would each use every core and slow
    one another down."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, len(os.sched_getaffinity(0)) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_process_settings():
    """Tests that call ``train.main`` in-process change the thread count, deterministic algorithms, the random state
    and cuDNN flags for the whole process (as a training run should); put them back so that no test's outcome depends
    on the tests before it. glibc's heap thresholds (``--reuse-memory``) only change speed, so they stay."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_rng_state(rng)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["torch"] = torch


@pytest.fixture(scope="session")
def fake_cifar_root(tmp_path_factory):
    """A learnable stand-in for CIFAR-10 in torchvision's layout, written once per test session."""
    from tests.fake_cifar import write_fake_cifar10

    return write_fake_cifar10(tmp_path_factory.mktemp("fake_cifar"))


def pytest_addoption(parser):
    parser.addoption("--exhaustive", action="store_true",
                     help="also run the tests marked exhaustive (minutes each for little extra coverage)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``exhaustive`` run only with ``--exhaustive``: neither tier (``-m "not slow"`` for the edit-test
    loop, everything for CI) should pay for them, and a marker expression given on the command line must not bring
    them back by replacing a default one."""
    if config.getoption("--exhaustive"):
        return
    skip = pytest.mark.skip(reason="exhaustive: run with --exhaustive")
    for item in items:
        if "exhaustive" in item.keywords:
            item.add_marker(skip)
