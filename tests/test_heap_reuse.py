"""``--reuse-memory``: after :func:`reuse_freed_memory` a freed large block is reused, not mapped afresh."""
import resource
import sys

import pytest
import torch

from cifar10_recipe.execution import reuse_freed_memory

BLOCK_BYTES = 64 * 2 ** 20  # over glibc's largest default mmap threshold (32 MiB)


def _page_faults_of_a_filled_block() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(BLOCK_BYTES // 4).fill_(1.0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del block
    return faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_block_is_reused_without_page_faults():
    assert reuse_freed_memory()
    _page_faults_of_a_filled_block()  # the first time, the heap grows: its pages fault in once
    pages = BLOCK_BYTES // resource.getpagesize()
    # while other allocations still move the heap's top, a refill may land on new pages now and then (seen once or
    # twice in six); without the reuse every refill faults in all of them
    assert min(_page_faults_of_a_filled_block() for _ in range(5)) < pages // 100
