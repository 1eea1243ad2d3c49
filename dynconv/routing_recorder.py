"""Record the mixing weights that every router of a model produces, for analysis and plots.

Recording uses forward hooks that exist only inside the ``with`` block, so a model costs nothing extra when no
recorder is active.
"""
from typing import Dict, List

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .layers import DynamicConv, Router


def _block_names(model: nn.Module) -> Dict[str, Router]:
    """Every router of ``model`` under the name of the dynamic layer that owns it (a router outside any layer keeps its
    own name)."""
    modules = dict(model.named_modules())
    routers = {}
    for name, module in modules.items():
        if isinstance(module, Router):
            parent = name.rpartition(".")[0]
            routers[parent if isinstance(modules[parent], DynamicConv) else name] = module
    return routers


class RoutingRecorder:
    """Context manager collecting each router's (B, K) mixing weights, per block, over the forward passes it sees.

    Every family is recorded: the routing head of branch mixing, CondConv and DyConv, and ODConv's kernel attention
    (:meth:`~dynconv.layers.Router.mixing_weights`) in :attr:`weights`; routers that mix nothing (K=1) are left out
    there. Attentions that are not mixing weights (DCD's channel scale Lambda and latent matrix Phi,
    :meth:`~dynconv.layers.Router.attentions`) go to :attr:`attentions`; summarise them with
    :func:`~dynconv.attention_statistics`.

    Args:
        model: Any module containing :class:`~dynconv.layers.Router` modules.

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
        self.routers: Dict[str, Router] = _block_names(model)
        if not self.routers:
            raise ValueError(f"{type(model).__name__} has no Router modules (no dynamic blocks), so there is nothing "
                             "to record")
        self._records: Dict[str, List[torch.Tensor]] = {name: [] for name in self.routers}
        self._attention_records: Dict[str, Dict[str, List[torch.Tensor]]] = {name: {} for name in self.routers}
        self._handles: List[RemovableHandle] = []

    def __enter__(self) -> "RoutingRecorder":
        for name, router in self.routers.items():
            self._handles.append(router.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def store(module: Router, inputs, output) -> None:
            weights = module.mixing_weights(output)
            if weights is not None:
                self._records[name].append(weights.detach())
            for key, values in module.attentions(output).items():
                self._attention_records[name].setdefault(key, []).append(values.detach())
        return store

    @property
    def weights(self) -> Dict[str, torch.Tensor]:
        """Block name -> (N, K) weights, concatenated over all recorded forward passes (N samples in all)."""
        return {name: torch.cat(records) for name, records in self._records.items() if records}

    @property
    def attentions(self) -> Dict[str, Dict[str, torch.Tensor]]:
        """Block name -> attention name -> (N, D) values over all recorded forward passes, for the routers with
        attentions other than mixing weights (DCD: ``"scale"`` (N, C_out) and ``"phi"`` (N, L * L))."""
        return {name: {key: torch.cat(values) for key, values in records.items()}
                for name, records in self._attention_records.items() if records}

    def clear(self) -> None:
        """Forget everything recorded so far."""
        for records in self._records.values():
            records.clear()
        for records in self._attention_records.values():
            records.clear()
