"""Makes ``torch`` available to the docstring examples that pytest runs as doctests."""
import pytest
import torch


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
