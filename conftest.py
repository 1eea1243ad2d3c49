"""Makes ``torch`` available to the docstring examples that pytest runs as doctests."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["torch"] = torch
