"""A fixed list of batches with the loader interface the recipe's trainer uses, for step-for-step oracle tests."""
from typing import Iterator, List, Tuple

import torch


class FixedBatches:
    """``batches`` as a loader: iterable, with a length and a device (the CPU)."""

    def __init__(self, batches: List[Tuple[torch.Tensor, torch.Tensor]]):
        self.batches, self.device = batches, torch.device("cpu")

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)
