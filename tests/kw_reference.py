"""KernelWarehouse written from the paper's formulas, as a test oracle: nothing here comes from dynconv.

A warehouse serves the layers of a range. Its cell has c_o = gcd(C_out of the range) * outplane ratio output and
c_i = gcd(C_in of the range) * inplane ratio input channels and one tap (spatial partition); a layer's kernel is
m = taps * (C_out / c_o) * (C_in / c_i) cells, and the warehouse holds n = int(sum of m * cell_num_ratio) cells. Each
sample's cell j of a layer is ``sum_i alpha[j, i] e_i``, with alpha from GAP -> FC -> BN -> ReLU -> FC (-> basis)
normalised as ``a / (sum |a| + 1e-3)`` over the n cells and a zero cell, then blended with the fixed assignment.
The per-sample kernel is materialised cell by cell and the image convolved sample by sample.
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F


def warehouse_layout(shapes: Sequence[Tuple[int, int, int]], cell_num_ratio: float, inplane_ratio: float,
                     outplane_ratio: float) -> Tuple[int, int, List[int], int]:
    """(c_o, c_i, cells of each layer, warehouse size) for layers of (C_out, C_in, k)."""
    cell_out = max(int(math.gcd(*(s[0] for s in shapes)) * outplane_ratio), 1)
    cell_in = max(int(math.gcd(*(s[1] for s in shapes)) * inplane_ratio), 1)
    cells = [k * k * (c_out // cell_out) * (c_in // cell_in) for c_out, c_in, k in shapes]
    return cell_out, cell_in, cells, int(sum(cells) * cell_num_ratio)


def assignment(num_mixtures: int, num_cells: int, start: int, cell_num_ratio: float) -> Tuple[torch.Tensor, int]:
    """The fixed attention the paper starts from: (m, n + 1) one-hot rows and the end of the layer's cells."""
    rows = torch.zeros(num_mixtures, num_cells + 1, dtype=torch.float64)
    if cell_num_ratio >= 1:
        for j in range(num_mixtures):
            rows[j, start + j * int(cell_num_ratio)] = 1
        return rows, start + num_mixtures * int(cell_num_ratio)
    every = round(1 / cell_num_ratio)
    for j in range(num_mixtures):
        if j % every == (j // every) % every:
            rows[j, start] = 1
            start += 1
        else:
            rows[j, num_cells] = 1
    return rows, start


def attention(x: torch.Tensor, p: Dict[str, torch.Tensor], train: bool, num_cells: int, num_mixtures: int,
              blend: float, fixed: torch.Tensor, local: Tuple[int, int] = None) -> torch.Tensor:
    """(B, m, n) mixture weights of one layer for images x, from its attention parameters ``p``."""
    hidden = x.mean(dim=(2, 3)) @ p["fc1.weight"].T
    if "norm.weight" in p:
        if train:
            mean, var = hidden.mean(0), hidden.var(0, unbiased=False)
        else:
            mean, var = p["norm.running_mean"], p["norm.running_var"]
        hidden = (hidden - mean) / torch.sqrt(var + 1e-5) * p["norm.weight"] + p["norm.bias"]
    logits = torch.relu(hidden) @ p["fc2.weight"].T
    if "fc2.bias" in p:
        logits = logits + p["fc2.bias"]
    rows = []
    for b in range(x.shape[0]):
        per_cell = logits[b].view(num_mixtures, -1)
        if "basis.weight" in p:  # local cells as they are, the others through the basis, the zero cell last
            start, count = local
            own, basis, zero = per_cell[:, :count], per_cell[:, count:-1], per_cell[:, -1:]
            others = basis @ p["basis.weight"].T
            per_cell = torch.cat([others[:, :start], own, others[:, start:], zero], 1)
            per_cell = per_cell + p["basis_bias"].view(num_mixtures, -1)
        normalised = per_cell / (per_cell.abs().sum(1, keepdim=True) + 1e-3)
        rows.append(((1 - blend) * normalised + blend * fixed)[:, :num_cells])
    return torch.stack(rows)


def kernel(alpha: torch.Tensor, cells: torch.Tensor, c_out: int, c_in: int, k: int, cell_out: int,
           cell_in: int) -> torch.Tensor:
    """One sample's (C_out, C_in, k, k) kernel: cell j = (tap, output block, input block) is sum_i alpha[j, i] e_i."""
    weight = torch.zeros(c_out, c_in, k, k, dtype=cells.dtype)
    warehouse = cells.view(-1, cell_out, cell_in)
    j = 0
    for tap in range(k * k):
        for o in range(c_out // cell_out):
            for i in range(c_in // cell_in):
                block = (alpha[j].view(-1, 1, 1) * warehouse).sum(0)
                weight[o * cell_out:(o + 1) * cell_out, i * cell_in:(i + 1) * cell_in, tap // k, tap % k] = block
                j += 1
    return weight


def kw_conv(x: torch.Tensor, alpha: torch.Tensor, cells: torch.Tensor, c_out: int, k: int, stride: int,
            cell_out: int, cell_in: int) -> torch.Tensor:
    """The layer's output, one sample at a time with its materialised kernel ("same" padding)."""
    return torch.cat([F.conv2d(x[b:b + 1], kernel(alpha[b], cells, c_out, x.shape[1], k, cell_out, cell_in),
                               stride=stride, padding=k // 2) for b in range(x.shape[0])])
