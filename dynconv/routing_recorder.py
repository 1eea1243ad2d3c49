"""Record the mixing weights that every routing head of a model produces, for analysis and plots.

Recording uses forward hooks that exist only inside the ``with`` block, so a model costs nothing extra when no
recorder is active.
"""
from typing import Dict, List

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .layers import RoutingHead


class RoutingRecorder:
    """Context manager collecting each routing head's weights, per block, over the forward passes it sees.

    Args:
        model: Any module containing :class:`~dynconv.layers.RoutingHead` modules.

    Example:
        >>> import timm
        >>> model = timm.create_model("dynconv_cifar_tiny").eval()
        >>> with RoutingRecorder(model) as recorder:
        ...     _ = model(torch.randn(2, 3, 32, 32))
        ...     _ = model(torch.randn(3, 3, 32, 32))
        >>> {name: tuple(w.shape) for name, w in recorder.weights.items()}["stages.0.0"]
        (5, 2)
    """

    def __init__(self, model: nn.Module):
        self.heads: Dict[str, RoutingHead] = {
            name.removesuffix(".routing"): module
            for name, module in model.named_modules() if isinstance(module, RoutingHead)
        }
        if not self.heads:
            raise ValueError(f"{type(model).__name__} has no RoutingHead modules, so there is nothing to record")
        self._records: Dict[str, List[torch.Tensor]] = {name: [] for name in self.heads}
        self._handles: List[RemovableHandle] = []

    def __enter__(self) -> "RoutingRecorder":
        for name, head in self.heads.items():
            self._handles.append(head.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def store(module: nn.Module, inputs, output: torch.Tensor) -> None:
            self._records[name].append(output.detach())
        return store

    @property
    def weights(self) -> Dict[str, torch.Tensor]:
        """Block name -> (N, K) weights, concatenated over all recorded forward passes (N samples in all)."""
        return {name: torch.cat(records) for name, records in self._records.items() if records}

    def clear(self) -> None:
        """Forget everything recorded so far."""
        for records in self._records.values():
            records.clear()
