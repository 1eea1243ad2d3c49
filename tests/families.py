"""The block families that the generic tests run over: a new family joins every one of them with one entry here.

``LAYERS`` maps each dynamic kind of :func:`dynconv.layers.block_kinds` to a factory of its layer, called with
``(in_channels, out_channels, **kwargs)`` (``stride``, ``groups``, ``num_experts`` where the family takes them).
"""
from dynconv.layers import CondConv2d, DCDConv2d, DyConv2d, DynamicBlock, KWConv2d, ODConv2d, block_kinds

LAYERS = {
    "branch": lambda c_in, c_out, num_experts=2, **kw: DynamicBlock(c_in, c_out, num_experts, **kw),
    "condconv": CondConv2d,
    "dyconv": DyConv2d,
    "odconv": ODConv2d,
    "dcd": lambda c_in, c_out, num_experts=None, **kw: DCDConv2d(c_in, c_out, **kw),
    "kw": lambda c_in, c_out, num_experts=None, **kw: KWConv2d(c_in, c_out, **kw),
}
#: the families with a static kernel, which their identity start (init_identity_) makes the identity on its first C_in
#: filters (KernelWarehouse: their centre tap): how to read it (the first branch of the wide convolution, DCD's W0,
#: KernelWarehouse's kernel at init blend 1)
STATIC_KERNEL = {
    "branch": lambda layer: layer.conv.weight,
    "dcd": lambda layer: layer.weight,
    "kw": lambda layer: layer.kernels(layer.attention.assignment[None, :, :-1])[0, :, :, 1:2, 1:2],
}
#: every registered kind with routing: all but the static one
DYNAMIC_KINDS = tuple(kind for kind in block_kinds() if kind != "static")
assert set(LAYERS) == set(DYNAMIC_KINDS), f"tests/families.py lists {sorted(LAYERS)}, the registry {DYNAMIC_KINDS}"
