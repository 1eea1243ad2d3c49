"""Makes ``torch`` available to the docstring examples that pytest runs as doctests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["torch"] = torch


@pytest.fixture(scope="session")
def fake_cifar_root(tmp_path_factory):
    """A learnable stand-in for CIFAR-10 in torchvision's layout, written once per test session."""
    from fake_cifar import write_fake_cifar10

    return write_fake_cifar10(tmp_path_factory.mktemp("fake_cifar"))
