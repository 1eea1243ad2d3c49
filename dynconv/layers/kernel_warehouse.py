"""KernelWarehouse: dynamic convolution with kernel cells shared across the layers of a stage.

Li, Yao. "KernelWarehouse: Rethinking the Design of Dynamic Convolution". ICML 2024.
https://arxiv.org/abs/2406.07879 (authors' code: https://github.com/OSVAI/KernelWarehouse)

Every kernel is split into m cells of one shape (C_out / c_o output channels, C_in / c_i input channels and, with
the spatial partition, each of the k x k taps), and each cell of each sample is a linear mixture of the n cells of a
*warehouse* that all layers of a sharing range (a stage) draw from::

    W_b[cell j] = sum_i alpha[b, j, i] e_i          # e_1 .. e_n: the warehouse, shared by the stage's layers
    alpha[b, j] = a / (sum |a| + 1e-3),  a = FC(ReLU(BN(FC(GAP(x_b)))))[j]    (n + 1 values; the last, a zero cell,
                                                                               only enters the normalisation)

So a warehouse of n cells serves every layer of its range, and ``cell_num_ratio`` = n / (the cells its layers are
split into) sets the parameter budget: 1/4x, 1/2x, 1x, 2x, 4x in the paper. What follows the authors' code,
``modules/kernel_warehouse.py``:

- ``Warehouse_Manager.store``: the cell's channels are the greatest common divisors of the range's output and input
  channels times ``cell_outplane_ratio`` and ``cell_inplane_ratio``; n = int(cells of all layers x
  ``cell_num_ratio``); with ``spatial_partition`` every tap is its own cell (cells are 1 x 1).
- ``Attention``: hidden width max(int(C_in x reduction), 16) (``rd_ratio`` here), a BatchNorm1d after the first
  layer (so a training batch must hold 2 or more samples), the linear normalisation above, and the attention's
  "temperature": ``(1 - tau) alpha + tau beta``, where beta assigns each cell of the layer its own warehouse cell (or,
  below 1x, some cells the zero cell) and tau anneals from 1 to 0 early in training. That tau is not a softmax
  temperature (the normalisation is scale-invariant), so here it is the layer's **init blend**
  (:meth:`KWAttention.set_init_blend`, :func:`dynconv.set_init_blend`); :class:`~dynconv.layers.Router`'s
  temperature divides the logits and changes nothing beyond the 1e-3.
- ``nonlocal_basis_ratio`` < 1: the attention to the cells of *other* layers goes through a basis of
  max(int(non-local cells x ratio), 16) vectors (``fc3``) to save parameters, as the ResNet-50 1/2x config does.
- ``Warehouse_Manager.allocate``: each layer's own cells are drawn He normal, fan-out, over the layer's cells; the
  attention's linear layers He normal, fan-out, with zero biases.

The warehouse (:class:`Warehouse`) is a parameter of the first layer of its range (state-dict key
``<first layer>.warehouse.cells``); the later layers refer to that module without registering it, so the state dict
holds it once, ``model.to`` moves it with its owner, and ``copy.deepcopy`` keeps the sharing.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from timm.layers import get_norm_act_layer, get_padding, register_notrace_module
from torch import nn

from .create_block import register_block, reject_unknown, single_kernel_size
from .family import DynamicConv, SharingScope
from .kernel_mixing import output_size, per_sample_conv2d, select_mode
from .kernel_mixing_block import KernelMixingBlock
from .routing import Router
from .validation import check_conv_geometry, check_input, check_positive_float

__all__ = ["KWAttention", "KWConv2d", "KWLinear", "Warehouse", "kw_block"]

#: The authors' smallest attention width.
KW_MIN_RD_CHANNELS = 16
#: Key of the warehouse state in a :class:`~dynconv.layers.family.SharingScope`.
_SCOPE_KEY = "kernel_warehouse"


class KWAttention(Router):
    """One layer's attention over the warehouse: pooled input -> Linear -> BatchNorm1d -> ReLU -> Linear (-> basis)
    -> linear normalisation per cell -> init blend.

    Args:
        in_channels: Input channels C_in of the layer.
        num_cells: Cells n of the warehouse.
        num_mixtures: Cells m the layer's kernel is split into.
        local_start: Index of the layer's own first cell in the warehouse.
        num_local_cells: How many warehouse cells are the layer's own.
        rd_ratio: Hidden width relative to C_in (the authors' ``reduction``, 1/16), at least 16.
        rd_channels: An explicit hidden width (overrides ``rd_ratio``).
        nonlocal_basis_ratio: Below 1, the attention to other layers' cells goes through a smaller basis.
        norm_layer: Normalisation after the first linear layer (the authors' ``nn.BatchNorm1d``), or ``None`` for
            none (the first layer then has a bias, and batches of 1 train).
        temperature: Divides the logits (kept for :class:`~dynconv.layers.Router`'s interface; the normalisation is
            scale-invariant).
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, m, n), each row the mixture weights of one cell of the layer's kernel
    """

    def __init__(self, in_channels: int, num_cells: int, num_mixtures: int, local_start: int, num_local_cells: int,
                 *, rd_ratio: float = 1 / 16, rd_channels: Optional[int] = None, nonlocal_basis_ratio: float = 1.0,
                 norm_layer: Optional[Type[nn.Module]] = nn.BatchNorm1d, temperature: float = 1.0,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        dd = {"device": device, "dtype": dtype}
        super().__init__(temperature, **dd)
        hidden = rd_channels if rd_channels is not None else max(int(in_channels * rd_ratio), KW_MIN_RD_CHANNELS)
        self.num_cells, self.num_mixtures = num_cells, num_mixtures
        self.local_start, self.num_local_cells = local_start, num_local_cells
        self.fc1 = nn.Linear(in_channels, hidden, bias=norm_layer is None, **dd)
        self.norm = nn.Identity() if norm_layer is None else norm_layer(hidden, **dd)
        self.act = nn.ReLU(inplace=True)
        planes = num_cells + 1  # the layer's mixture weights over the warehouse and the zero cell
        if nonlocal_basis_ratio >= 1.0:
            self.fc2 = nn.Linear(hidden, planes * num_mixtures, **dd)
            self.basis = self.basis_bias = None
        else:
            nonlocal_cells = num_cells - num_local_cells
            self.num_basis = max(int(nonlocal_cells * nonlocal_basis_ratio), 16)
            self.fc2 = nn.Linear(hidden, (num_local_cells + self.num_basis + 1) * num_mixtures, bias=False, **dd)
            self.basis = nn.Linear(self.num_basis, nonlocal_cells, bias=False, **dd)
            self.basis_bias = nn.Parameter(torch.zeros(planes * num_mixtures, **dd))
        self.register_buffer("assignment", torch.zeros(num_mixtures, planes, **dd), persistent=False)
        self.register_buffer("init_blend", torch.zeros((), **dd), persistent=False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def set_init_blend(self, value: float) -> None:
        """Weight of the fixed assignment (each cell of the layer on its own warehouse cell) against the learnt
        attention: 1 makes the layer a static convolution with its own cells, 0 (the default) pure attention. The
        authors anneal it from 1 to 0 over the first epochs (:func:`dynconv.init_blend_schedule`)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"init blend must be a number in [0, 1], got {value!r}")
        self.init_blend.fill_(float(value))

    def mixing_weights(self, output) -> None:
        """KernelWarehouse mixes warehouse cells per cell of the kernel, not K kernels: its attention is recorded as
        :meth:`attentions`."""
        return None

    def attentions(self, output: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The (B, m * n) mixture weights, by name, for :class:`~dynconv.RoutingRecorder`."""
        return {"cells": output.flatten(1)}

    def _to_cells(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, m * rows) logits -> (B, m, n + 1), through the basis for the other layers' cells if there is one."""
        batch = logits.shape[0]
        if self.basis is None:
            return logits.view(batch, self.num_mixtures, self.num_cells + 1)
        rows = logits.view(batch, self.num_mixtures, self.num_local_cells + self.num_basis + 1)
        local, basis, zero = rows.split((self.num_local_cells, self.num_basis, 1), dim=2)
        nonlocal_cells = self.basis(basis)
        start = self.local_start
        cells = torch.cat([nonlocal_cells[..., :start], local, nonlocal_cells[..., start:], zero], dim=2)
        return cells + self.basis_bias.view(1, self.num_mixtures, self.num_cells + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.norm(self.fc1(x.mean(dim=(2, 3)))))
        cells = self._to_cells(self.fc2(hidden) / self.temperature)
        cells = cells / (cells.abs().sum(dim=2, keepdim=True) + 1e-3)
        blend = self.init_blend.to(cells.dtype)
        cells = (1.0 - blend) * cells + blend * self.assignment.to(cells.dtype)
        return cells[..., :-1]

    def extra_repr(self) -> str:
        return f"num_cells={self.num_cells}, num_mixtures={self.num_mixtures}, local=[{self.local_start}, " \
               f"{self.local_start + self.num_local_cells})"


class Warehouse(nn.Module):
    """The kernel cells shared by the :class:`KWConv2d` layers of one sharing range, and how they are cut.

    Built empty; every layer of the range reserves its place (:meth:`reserve`), and :meth:`close` then sizes the
    cells and the warehouse, allocates it and gives each layer its attention. Lives in the first layer of the range.

    Args:
        cell_num_ratio: Warehouse cells per cell the range's kernels are split into (the paper's 1/4x ... 4x).
        cell_inplane_ratio: Input channels of a cell relative to the greatest common divisor of the range's input
            channels (per group).
        cell_outplane_ratio: Output channels of a cell relative to that of the range's output channels.
        spatial_partition: Each tap of a kernel is its own cell (1 x 1 cells); else cells span the whole kernel,
            which all layers of the range must then share.
        device: Device of the cells.
        dtype: Floating dtype of the cells.
    """

    def __init__(self, cell_num_ratio: float = 1.0, cell_inplane_ratio: float = 1.0, cell_outplane_ratio: float = 1.0,
                 spatial_partition: bool = True, *, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__()
        for name, value in (("cell_num_ratio", cell_num_ratio), ("cell_inplane_ratio", cell_inplane_ratio),
                            ("cell_outplane_ratio", cell_outplane_ratio)):
            check_positive_float(name, value)
        self.cell_num_ratio, self.cell_inplane_ratio = cell_num_ratio, cell_inplane_ratio
        self.cell_outplane_ratio, self.spatial_partition = cell_outplane_ratio, spatial_partition
        self._dd = {"device": device, "dtype": dtype}
        self._layers: List[KWConv2d] = []
        self.cell_shape: Optional[Tuple[int, int, int, int]] = None  # (c_o, c_i, kh, kw) once closed
        self.register_parameter("cells", None)

    @property
    def settings(self) -> Tuple[float, float, float, bool]:
        return self.cell_num_ratio, self.cell_inplane_ratio, self.cell_outplane_ratio, self.spatial_partition

    @property
    def reserved(self) -> int:
        """How many layers have reserved their place so far."""
        return len(self._layers)

    def reserve(self, layer: "KWConv2d") -> None:
        if self.cells is not None:
            raise RuntimeError("this warehouse is allocated already; build every layer of its range before closing it")
        self._layers.append(layer)

    def close(self) -> None:
        """Size the cells and the warehouse from the reserved layers, allocate it in the first layer, and give every
        layer its attention and its own cells (drawn He normal, fan-out, as the authors do)."""
        if self.cells is not None or not self._layers:
            return
        layers, self._layers = self._layers, []
        out_gcd = math.gcd(*(layer.out_channels for layer in layers))
        in_gcd = math.gcd(*(layer.in_channels // layer.groups for layer in layers))
        cell_out = max(int(out_gcd * self.cell_outplane_ratio), 1)
        cell_in = max(int(in_gcd * self.cell_inplane_ratio), 1)
        kernels = {layer.kernel_size for layer in layers}
        if not self.spatial_partition and len(kernels) > 1:
            raise ValueError(f"without spatial_partition a warehouse's cells span whole kernels, so its layers must "
                             f"share one kernel size; got {sorted(kernels)}")
        cell_kernel = (1, 1) if self.spatial_partition else kernels.pop()
        for layer in layers:
            per_group_in = layer.in_channels // layer.groups
            if layer.out_channels % cell_out or per_group_in % cell_in:
                raise ValueError(f"a cell of {cell_out} x {cell_in} channels (the range's greatest common divisors "
                                 f"{out_gcd} x {in_gcd} times cell_outplane_ratio={self.cell_outplane_ratio} and "
                                 f"cell_inplane_ratio={self.cell_inplane_ratio}) does not divide a {layer.out_channels}"
                                 f" x {per_group_in} kernel: choose ratios whose cells divide every layer's channels")
        mixtures = [(layer.out_channels // cell_out) * (layer.in_channels // layer.groups // cell_in)
                    * (layer.kernel_size[0] // cell_kernel[0]) * (layer.kernel_size[1] // cell_kernel[1])
                    for layer in layers]
        num_cells = max(int(sum(mixtures) * self.cell_num_ratio), 1)
        self.cell_shape = (cell_out, cell_in, *cell_kernel)
        # a bank of n * c_o filters over c_i channels (and the cell's taps), as a convolution's filters are stored
        self.cells = nn.Parameter(torch.empty(num_cells * cell_out, cell_in, *cell_kernel, **self._dd))
        start = 0
        for layer, layer_mixtures in zip(layers, mixtures, strict=True):
            end = layer.attach(self, start, layer_mixtures)
            with torch.no_grad():
                nn.init.kaiming_normal_(self.cells[start * cell_out:end * cell_out], mode="fan_out",
                                        nonlinearity="relu")
            start = end
        if start != num_cells:
            raise ValueError(f"the layers of this warehouse claim {start} of its {num_cells} cells: with "
                             f"cell_num_ratio={self.cell_num_ratio} every layer's cell count must be a multiple of "
                             f"1 / cell_num_ratio squared (the authors' assignment rule); choose other ratios")

    @property
    def num_cells(self) -> int:
        """Cells n of the allocated warehouse."""
        return self.cells.shape[0] // self.cell_shape[0]

    def matrix(self, dtype: torch.dtype) -> torch.Tensor:
        """The cells as an (n, c_o * c_i * kh * kw) matrix of ``dtype``."""
        return self.cells.to(dtype).reshape(self.num_cells, -1)

    def extra_repr(self) -> str:
        cells = "unallocated" if self.cells is None else f"{self.num_cells} cells of {self.cell_shape}"
        return f"{cells}, cell_num_ratio={self.cell_num_ratio}"


def _assignment(num_mixtures: int, start: int, cell_num_ratio: float) -> Tuple[List[Optional[int]], int]:
    """The authors' ``init_temperature``: the warehouse cell that the fixed assignment gives each cell of the layer,
    from ``start`` on (``cell_num_ratio`` >= 1: every cell, ``cell_num_ratio`` of them apart), or below 1x every
    (1 / ratio)-th cell in a rotating pattern and the zero cell (``None``) to the others. Returns them and the end of
    the layer's cells."""
    if cell_num_ratio >= 1.0:
        step = int(cell_num_ratio)
        return [start + mixture * step for mixture in range(num_mixtures)], start + num_mixtures * step
    per_cell = int(1.0 / cell_num_ratio)
    cells: List[Optional[int]] = []
    for mixture in range(num_mixtures):
        if mixture % per_cell == (mixture // per_cell) % per_cell:
            cells.append(start)
            start += 1
        else:
            cells.append(None)
    return cells, start


@register_notrace_module  # a leaf for torch.fx feature extraction: it reads the warehouse of its range
class KWConv2d(DynamicConv, nn.Module):
    """A KernelWarehouse convolution (no normalisation or activation): each sample's kernel assembled from the cells
    of a warehouse that the layers of its sharing range share.

    Args:
        in_channels: Input channels C_in.
        out_channels: Output channels C_out.
        kernel_size: Kernel size k.
        stride: Stride.
        padding: Zero padding; ``None`` gives "same" padding, ``dilation * (k - 1) // 2``.
        dilation: Kernel dilation.
        groups: Channel groups.
        bias: Learn a bias (added after the convolution, not mixed).
        cell_num_ratio: Warehouse cells per cell of the range's kernels (1/4x ... 4x); the first layer of a range
            sets the warehouse's settings, the others must agree.
        cell_inplane_ratio: Cell input channels relative to the range's greatest common divisor.
        cell_outplane_ratio: Cell output channels relative to the range's greatest common divisor.
        spatial_partition: Every tap of the kernel is its own cell.
        nonlocal_basis_ratio: Below 1, the attention reaches the other layers' cells through a smaller basis.
        rd_ratio: Attention hidden width relative to C_in (the authors' ``reduction``, 1/16), at least 16.
        rd_channels: An explicit attention hidden width (overrides ``rd_ratio``).
        attention_norm: The attention's norm after its first layer: the authors' ``nn.BatchNorm1d`` (training then
            needs batches of 2 or more), or ``None``.
        temperature: Divides the attention's logits (no effect beyond the normalisation's epsilon).
        mode: How to compute it: ``"auto"``, ``"grouped"``, ``"bmm"`` (each sample's kernel assembled, as the
            authors do) or ``"patches"`` (no per-sample kernels: the attention mixes the unfolded input, then one
            dense product with the cells; ungrouped layers).
        sharing: The sharing range; ``None`` gives the layer a warehouse of its own.
        device: Device of the parameters.
        dtype: Floating dtype of the parameters.

    Shape:
        - Input: (B, C_in, H, W)
        - Output: (B, C_out, H', W')

    Example:
        >>> from dynconv.layers import SharingScope
        >>> stage = SharingScope()
        >>> first, second = KWConv2d(16, 32, sharing=stage), KWConv2d(32, 32, sharing=stage)
        >>> stage.close()
        >>> second(first(torch.randn(2, 16, 8, 8))).shape, second.shared_warehouse is first.warehouse
        (torch.Size([2, 32, 8, 8]), True)
    """

    MODES = ("auto", "grouped", "bmm", "patches")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, dilation: int = 1, groups: int = 1, bias: bool = False, *,
                 cell_num_ratio: float = 1.0, cell_inplane_ratio: float = 1.0, cell_outplane_ratio: float = 1.0,
                 spatial_partition: bool = True, nonlocal_basis_ratio: float = 1.0, rd_ratio: float = 1 / 16,
                 rd_channels: Optional[int] = None, attention_norm: Optional[Type[nn.Module]] = nn.BatchNorm1d,
                 temperature: float = 1.0, mode: str = "auto", sharing: Optional[SharingScope] = None,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        check_conv_geometry(in_channels, out_channels, kernel_size, stride, dilation, groups)
        if mode not in self.MODES:
            raise ValueError(f"KWConv2d mode must be one of {self.MODES}, got {mode!r}")
        check_positive_float("nonlocal_basis_ratio", nonlocal_basis_ratio)
        if padding is None and kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding (padding=None), got {kernel_size}")
        padding = get_padding(kernel_size, dilation=dilation) if padding is None else padding
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = (kernel_size, kernel_size), (stride, stride)
        self.padding, self.dilation = (padding, padding), (dilation, dilation)
        self.mode = mode
        self._attention_args = dict(rd_ratio=rd_ratio, rd_channels=rd_channels, norm_layer=attention_norm,
                                    nonlocal_basis_ratio=nonlocal_basis_ratio, temperature=temperature)
        self._dd = {"device": device, "dtype": dtype}
        self.bias = nn.Parameter(torch.zeros(out_channels, **self._dd)) if bias else None
        # a per-channel scale and shift after the convolution: absent until a following BatchNorm is folded in
        self.register_parameter("scale", None)
        self.register_parameter("shift", None)
        self.attention: Optional[KWAttention] = None
        own_scope = sharing is None
        scope = SharingScope() if own_scope else sharing
        settings = (cell_num_ratio, cell_inplane_ratio, cell_outplane_ratio, spatial_partition)
        warehouse = scope.shared(_SCOPE_KEY, lambda: Warehouse(*settings, **self._dd))
        if warehouse.settings != settings:
            raise ValueError(f"the layers of one sharing range share one warehouse, whose (cell_num_ratio, "
                             f"cell_inplane_ratio, cell_outplane_ratio, spatial_partition) are {warehouse.settings}; "
                             f"this layer asks for {settings}")
        if not warehouse.reserved:
            self.warehouse = warehouse  # registered: the first layer of the range owns the cells
        else:
            object.__setattr__(self, "_shared_warehouse", warehouse)  # not registered: owned by the first layer
        warehouse.reserve(self)
        if own_scope:
            scope.close()

    @property
    def shared_warehouse(self) -> Warehouse:
        """The warehouse of this layer's range, whichever layer owns it."""
        return self._modules.get("warehouse") or self.__dict__["_shared_warehouse"]

    def attach(self, warehouse: Warehouse, start: int, num_mixtures: int) -> int:
        """Called by the warehouse when it closes: build the attention over its cells, with this layer's own cells
        from ``start``; returns where the next layer's cells start."""
        num_cells = warehouse.num_cells
        cell_out, cell_in, cell_kh, cell_kw = warehouse.cell_shape
        self.cell_grid = (self.kernel_size[0] // cell_kh * self.kernel_size[1] // cell_kw,
                          self.out_channels // cell_out, self.in_channels // self.groups // cell_in)
        #: each cell of the kernel's own warehouse cell under the fixed assignment, None for the zero cell
        self.own_cells, end = _assignment(num_mixtures, start, warehouse.cell_num_ratio)
        self.attention = KWAttention(self.in_channels, num_cells, num_mixtures, start,
                                     int(warehouse.cell_num_ratio * num_mixtures), **self._attention_args, **self._dd)
        assignment = self.attention.assignment
        with torch.no_grad():
            assignment.zero_()
            for mixture, cell in enumerate(self.own_cells):
                assignment[mixture, num_cells if cell is None else cell] = 1.0
        return end

    def filter_weights(self) -> List[nn.Parameter]:
        """The warehouse, named by the layer that owns it: a bank of n * c_o filters over c_i channels, which is what
        filter-wise optimizers (Muon) see in a convolution's weight."""
        return [self.warehouse.cells] if "warehouse" in self._modules else []

    @torch.no_grad()
    def init_identity_(self) -> None:
        """An identity start for the kernel that the fixed assignment gives the layer (what it computes at init blend
        1): the own cells that hold the identity's entries (the centre tap's blocks on the diagonal of the first C_in
        filters) become those blocks of ``torch.nn.init.dirac_``'s kernel; every other cell keeps its initialisation.
        Unlike airbench94's dirac start, the rest of the first C_in filters is not zeroed, because those cells are
        shared: zeroed cells would leave the attention's early mixtures near zero, which the following BatchNorm
        (airbench94's eps is 1e-12) would blow up. Ungrouped layers only; blocks that the assignment leaves on the
        zero cell (below 1x) stay zero."""
        if self.groups != 1:
            return
        warehouse = self.shared_warehouse
        cell_out, cell_in, cell_kh, cell_kw = warehouse.cell_shape
        spatial, groups_out, groups_in = self.cell_grid
        identity = torch.zeros(self.out_channels, self.in_channels, *self.kernel_size, device=warehouse.cells.device,
                               dtype=warehouse.cells.dtype)
        nn.init.dirac_(identity[:self.in_channels])
        taps_h, taps_w = self.kernel_size[0] // cell_kh, self.kernel_size[1] // cell_kw
        # the inverse of kernels(): (C_out, C_in, k, k) -> one (c_o, c_i, kh, kw) block per cell of the layer
        blocks = identity.view(groups_out, cell_out, groups_in, cell_in, taps_h, cell_kh, taps_w, cell_kw).permute(
            4, 6, 0, 2, 1, 3, 5, 7).reshape(-1, cell_out, cell_in, cell_kh, cell_kw)
        grid = (taps_h, taps_w, groups_out, groups_in)
        centre = (taps_h // 2, taps_w // 2)
        for mixture, cell in enumerate(self.own_cells):
            tap_h, tap_w, out_group, in_group = torch.unravel_index(torch.tensor(mixture), grid)
            holds_identity = (int(tap_h), int(tap_w)) == centre and int(out_group) * cell_out < self.in_channels and (
                abs(int(out_group) * cell_out - int(in_group) * cell_in) < max(cell_out, cell_in))
            if cell is not None and holds_identity:
                warehouse.cells[cell * cell_out:(cell + 1) * cell_out] = blocks[mixture]

    def computation_modes(self) -> Tuple[str, ...]:
        return self.MODES if self.groups == 1 else ("auto", "grouped", "bmm")

    def kernels(self, attention: torch.Tensor) -> torch.Tensor:
        """Each sample's kernel: (B, m, n) attention -> (B, C_out, C_in / groups, k, k)."""
        warehouse = self.shared_warehouse
        batch = attention.shape[0]
        cell_out, cell_in, cell_kh, cell_kw = warehouse.cell_shape
        spatial, groups_out, groups_in = self.cell_grid
        mixtures, num_cells = attention.shape[1:]
        cells = attention.reshape(batch * mixtures, num_cells) @ warehouse.matrix(attention.dtype)
        taps_h, taps_w = self.kernel_size[0] // cell_kh, self.kernel_size[1] // cell_kw
        cells = cells.view(batch, taps_h, taps_w, groups_out, groups_in, cell_out, cell_in, cell_kh, cell_kw)
        # -> (B, groups_out, cell_out, groups_in, cell_in, taps_h, cell_kh, taps_w, cell_kw)
        return cells.permute(0, 3, 5, 4, 6, 1, 7, 2, 8).reshape(batch, self.out_channels,
                                                                self.in_channels // self.groups, *self.kernel_size)

    def _mixed_patches(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The convolution without per-sample kernels (ungrouped layers): the attention mixes the unfolded input's
        patches per output group and warehouse cell, and one dense product with the cells, shared by every sample,
        finishes it. (B, C_in, H, W) -> (B, C_out, H', W').

        With the kernel's cells indexed by tap s, output group o and input group i, the output's group o is
        ``sum_n e_n @ V[o, n]`` with ``V[o, n] = sum_(s, i) alpha[s, o, i, n] patches[s, i]``: about the FLOPs of the
        static convolution where the warehouse has fewer cells than a cell has channels.
        """
        warehouse = self.shared_warehouse
        cell_out, cell_in, cell_kh, cell_kw = warehouse.cell_shape
        spatial, groups_out, groups_in = self.cell_grid
        num_cells = warehouse.num_cells
        batch = x.shape[0]
        out_h, out_w = output_size(x.shape[-2:], self.kernel_size, self.stride, self.padding, self.dilation)
        pixels = out_h * out_w
        # unfold orders a patch (input group, cell input channel, cell row, cell column); the attention's cells are
        # (tap, output group, input group): bring both to (tap, input group) rows
        patches = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride)
        cell_taps = cell_kh * cell_kw
        patches = patches.view(batch, groups_in, cell_in, self.kernel_size[0] // cell_kh, cell_kh,
                               self.kernel_size[1] // cell_kw, cell_kw, pixels)
        patches = patches.permute(0, 3, 5, 1, 2, 4, 6, 7).reshape(batch, spatial * groups_in,
                                                                  cell_in * cell_taps * pixels)
        mix = attention.reshape(batch, spatial, groups_out, groups_in, num_cells).permute(0, 2, 4, 1, 3)
        mixed = torch.bmm(mix.reshape(batch, groups_out * num_cells, spatial * groups_in).to(x.dtype), patches)
        # (B, groups_out, n * cell_in * cell taps, pixels): one product with the cells as (c_o, n * c_i * taps)
        cells = warehouse.matrix(x.dtype).view(num_cells, cell_out, cell_in * cell_taps).transpose(0, 1)
        out = torch.matmul(cells.reshape(cell_out, num_cells * cell_in * cell_taps),
                           mixed.view(batch, groups_out, num_cells * cell_in * cell_taps, pixels))
        return out.view(batch, self.out_channels, out_h, out_w)

    def resolve_mode(self, x: torch.Tensor) -> str:
        """This call's form (:func:`~dynconv.layers.kernel_mixing.select_mode`): patch mixing has the unfolded
        input and its per-group mixtures as extra activations."""
        out_h, out_w = output_size(x.shape[-2:], self.kernel_size, self.stride, self.padding, self.dilation)
        pixels = out_h * out_w
        taps = self.kernel_size[0] * self.kernel_size[1]
        kernel_numel = self.out_channels * self.in_channels // self.groups * taps
        cell_in = self.shared_warehouse.cell_shape[1]
        num_cells = self.shared_warehouse.num_cells
        mixed = self.cell_grid[1] * num_cells * cell_in * pixels
        # MACs per pixel of the two products (the mixing of the patches per output group and cell, then the product
        # with every cell) against the per-sample convolution's
        cell_taps = self.shared_warehouse.cell_shape[2] * self.shared_warehouse.cell_shape[3]
        per_output = kernel_numel // self.out_channels
        extra_macs = pixels * max(0, self.cell_grid[1] * num_cells * per_output
                                  + self.out_channels * num_cells * cell_in * cell_taps - kernel_numel)
        dense = "patches" if "patches" in self.computation_modes() else None
        return select_mode(self.mode, x, dense=dense, kernel_numel=kernel_numel,
                           dense_numel=self.in_channels * taps * pixels + mixed, output_pixels=pixels,
                           dense_extra_macs=extra_macs, in_channels_per_group=self.in_channels // self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention is None:
            raise RuntimeError("this KWConv2d's warehouse is not allocated: close the SharingScope of its range "
                               "once every layer of the range is built")
        check_input(x, self.in_channels, self.shared_warehouse.cells.dtype)
        if self.training and x.shape[0] == 1 and isinstance(self.attention.norm, nn.modules.batchnorm._BatchNorm):
            raise ValueError("KernelWarehouse's attention normalises over the batch in training (the authors' "
                             "BatchNorm1d), which a batch of 1 cannot give: train with batches of 2 or more (e.g. "
                             "drop_last=True in the DataLoader), build the layer with attention_norm=None, or call "
                             ".eval() to use the running statistics")
        attention = self.attention(x)
        mode = self.resolve_mode(x)
        if mode == "patches":
            out = self._mixed_patches(x, attention)
        else:
            out = per_sample_conv2d(x, self.kernels(attention), None, self.stride, self.padding, self.dilation,
                                    self.groups, mode)
        if self.scale is not None:
            out = out * self.scale.view(1, -1, 1, 1).to(out.dtype)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1).to(out.dtype)
        return out if self.shift is None else out + self.shift.view(1, -1, 1, 1).to(out.dtype)

    @torch.no_grad()
    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Make this layer compute ``scale * self(x) + shift`` per output channel (folding a following BatchNorm).

        The cells are shared with other layers, so the scale cannot move into them: the layer keeps it as a
        per-channel factor after its convolution (exact, one multiply per output).

        Shape:
            - scale, shift: (C_out,)
        """
        if scale.shape != (self.out_channels,) or shift.shape != (self.out_channels,):
            raise ValueError(f"scale and shift must have shape ({self.out_channels},), got {tuple(scale.shape)} and "
                             f"{tuple(shift.shape)}")
        dtype = self.shared_warehouse.cells.dtype
        folded_scale = scale if self.scale is None else self.scale * scale
        folded_shift = shift if self.shift is None else self.shift * scale + shift
        if self.bias is not None:
            folded_shift = folded_shift + self.bias * scale
            self.bias = None
        self.scale = nn.Parameter(folded_scale.to(dtype))
        self.shift = nn.Parameter(folded_shift.to(dtype))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, mode={self.mode}")


@register_notrace_module  # a leaf for torch.fx feature extraction: it checks its input's shape
class KWLinear(nn.Module):
    """A KernelWarehouse linear layer (the authors' ``KWLinear``, their MobileNetV2 1/2x classifier), computed as a
    :class:`KWConv2d` with a 1 x 1 kernel on a 1 x 1 map.

    Args:
        in_features: Input features.
        out_features: Output features.
        bias: Learn a bias.
        **kwargs: :class:`KWConv2d`'s warehouse and attention arguments (``sharing``, ``cell_num_ratio``, ...).

    Shape:
        - Input: (B, in_features)
        - Output: (B, out_features)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.conv = KWConv2d(in_features, out_features, 1, bias=bias, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"expected input of shape (B, {self.in_features}), got a tensor of shape "
                             f"{tuple(x.shape)}")
        return self.conv(x[:, :, None, None]).flatten(1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


_KW_ARGS = ("cell_num_ratio", "cell_inplane_ratio", "cell_outplane_ratio", "spatial_partition", "nonlocal_basis_ratio",
            "rd_ratio", "rd_channels", "attention_norm", "temperature", "mode")


@register_block("kw", pools_before_norm=lambda num_experts: True, shares_parameters=True)
def kw_block(in_channels: int, out_channels: int, *, num_experts: int, kernel_size: Union[int, Sequence[int]],
             stride: int, act_layer, norm_layer, sharing: SharingScope, device=None, dtype=None,
             pool_before_norm: bool = False, **kwargs) -> nn.Module:
    """A :class:`KWConv2d` of the range ``sharing``, (a 2x2 max pool,) then the norm and activation. KernelWarehouse
    has no experts: ``num_experts`` is ignored."""
    reject_unknown("kw", kwargs, _KW_ARGS)
    conv = KWConv2d(in_channels, out_channels, single_kernel_size("kw", kernel_size), stride, sharing=sharing,
                    device=device, dtype=dtype, **kwargs)
    norm_act = get_norm_act_layer(norm_layer, act_layer)(out_channels, device=device, dtype=dtype)
    return KernelMixingBlock(conv, norm_act, pool=nn.MaxPool2d(2) if pool_before_norm else None)
