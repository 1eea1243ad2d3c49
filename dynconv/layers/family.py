"""What a block family offers the models, the recipe and the tools: one small protocol, so that none of them names a
family's submodules.

A family is one file: its layer (a :class:`DynamicConv`), and its block builder registered with
:func:`~dynconv.layers.register_block`. Models and the recipe only call the protocol:

- :meth:`DynamicConv.filter_weights`: the parameters that are one convolution's filter bank, shaped
  (C_out, C_in / groups, kh, kw), which filter-wise optimizers (Muon) and initialisations act on; projections,
  routing networks and stacked expert kernels are not filters.
- :meth:`DynamicConv.init_identity_`: the identity start of airbench94 (``torch.nn.init.dirac_`` on the first C_in
  filters) where the layer has a static kernel; a no-op where it has none.
- BatchNorm folding: ``reparameterize()`` on blocks (timm's convention, what ``timm.utils.reparameterize_model``
  calls) and :meth:`fold_affine` on convolutions, which a following norm folds into.
- Routing statistics: every routing network is a :class:`~dynconv.layers.Router`, whose ``mixing_weights`` and
  ``attentions`` say what :class:`~dynconv.RoutingRecorder` records.
- Parameters shared by several layers (KernelWarehouse's warehouse): the builder of a model opens one
  :class:`SharingScope` per sharing range, passes it to every block it builds there, and closes it once the range is
  built; the family decides what it shares and who owns it.

The model-level functions :func:`filter_weights` and :func:`init_identity_` apply the protocol to a whole model:
plain ``nn.Conv2d`` layers outside dynamic layers count as their own filters.
"""
from typing import Callable, Dict, Iterator, List, Tuple

import torch
from torch import nn

__all__ = ["DynamicConv", "InferenceOnceFolded", "SharingScope", "dynamic_layers", "filter_weights",
           "init_identity_"]


class DynamicConv:
    """Mixin of every dynamic-convolution layer: the protocol of :mod:`dynconv.layers.family`, with the defaults of a
    layer that has no static filter bank."""

    def filter_weights(self) -> List[nn.Parameter]:
        """The parameters that are one convolution's filter bank, (C_out, C_in / groups, kh, kw)."""
        return []

    @torch.no_grad()
    def init_identity_(self) -> None:
        """Start the layer's static kernel as the identity on its first C_in filters (airbench94's dirac
        initialisation), where it has an ungrouped static kernel; nothing otherwise."""

    def computation_modes(self) -> Tuple[str, ...]:
        """The exact forms in which the layer can compute its per-sample convolution, which :meth:`set_mode` picks
        (``"auto"`` chooses per call); empty for a layer with one form."""
        return ()

    def set_mode(self, mode: str) -> None:
        """Compute the per-sample convolution in ``mode``, one of :meth:`computation_modes`."""
        if mode not in self.computation_modes():
            raise ValueError(f"{type(self).__name__} mode must be one of {self.computation_modes()}, got {mode!r}")
        self.mode = mode


class InferenceOnceFolded:
    """Mixin for modules that fold their BatchNorms for inference (``reparameterize``, setting ``is_fused``): once
    folded they refuse ``train()``, since the statistics they would update are gone."""

    is_fused: bool = False

    def train(self, mode: bool = True):
        if mode and self.is_fused:
            raise RuntimeError(f"this {type(self).__name__}'s BatchNorms were folded for inference (reparameterize), "
                               "so it cannot train; train the model before reparameterizing it")
        return super().train(mode)


def dynamic_layers(module: nn.Module, prefix: str = "") -> Iterator[Tuple[str, DynamicConv]]:
    """The outermost :class:`DynamicConv` layers of ``module`` with their names, in module order (a layer's own
    submodules are its business, so the walk does not enter it)."""
    if isinstance(module, DynamicConv):
        yield prefix, module
        return
    for name, child in module.named_children():
        yield from dynamic_layers(child, f"{prefix}.{name}" if prefix else name)


def _plain_convs(module: nn.Module) -> Iterator[nn.Conv2d]:
    """The ``nn.Conv2d`` layers of ``module`` outside its dynamic layers."""
    if isinstance(module, DynamicConv):
        return
    if isinstance(module, nn.Conv2d):
        yield module
    for child in module.children():
        yield from _plain_convs(child)


def filter_weights(module: nn.Module) -> List[nn.Parameter]:
    """Every filter bank of ``module``, in ``module.parameters()`` order: the weights of plain ``nn.Conv2d`` layers
    and what each dynamic layer names (:meth:`DynamicConv.filter_weights`).

    Example:
        >>> import timm
        >>> model = timm.create_model("dynconv_cifar_fast_dcd")
        >>> weights = {id(p) for p in filter_weights(model)}
        >>> [name for name, p in model.named_parameters() if id(p) in weights][:3]
        ['stem.conv.weight', 'stages.0.0.conv.weight', 'stages.0.1.conv.weight']
    """
    chosen = {id(conv.weight) for conv in _plain_convs(module)}
    chosen |= {id(weight) for _, layer in dynamic_layers(module) for weight in layer.filter_weights()}
    return [p for p in module.parameters() if id(p) in chosen]


@torch.no_grad()
def init_identity_(module: nn.Module) -> None:
    """airbench94's initialisation over ``module``: the first C_in filters of every ungrouped plain convolution start
    as the identity (``torch.nn.init.dirac_``), and every dynamic layer does what its
    :meth:`DynamicConv.init_identity_` says."""
    for conv in _plain_convs(module):
        if conv.groups == 1:
            nn.init.dirac_(conv.weight[:conv.weight.shape[1]])
    for _, layer in dynamic_layers(module):
        layer.init_identity_()


class SharingScope:
    """One sharing range of a model under construction (e.g. one stage): the layers built inside it may share
    parameters, which the family allocates when the scope closes.

    A family that shares gets its per-range state with :meth:`shared` and registers what must happen once every layer
    of the range exists with the state's ``close()``; families that share nothing never look at the scope.

    Example:
        >>> scope = SharingScope()
        >>> scope.shared("kw", dict) is scope.shared("kw", dict)
        True
    """

    def __init__(self):
        self._states: Dict[str, object] = {}
        self.closed = False

    def shared(self, key: str, create: Callable[[], object]) -> object:
        """The state stored under ``key``, created by ``create()`` on first use."""
        if self.closed:
            raise RuntimeError("this SharingScope is closed: its shared parameters are allocated already")
        if key not in self._states:
            self._states[key] = create()
        return self._states[key]

    def close(self) -> None:
        """Allocate what the range's layers share (each state's ``close()``, in the order they were created)."""
        if self.closed:
            return
        self.closed = True
        for state in self._states.values():
            close = getattr(state, "close", None)
            if close is not None:
                close()
