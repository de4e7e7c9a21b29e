"""Trace from an attention node to the linear projections that feed it and consume it (shared by the tp steps)."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from ..ir.graph import is_const
from ..ir.op_classes import BINARY, LAYOUT, NORMS

aten = torch.ops.aten

# From attention back to its q/k/v projections: layout changes, per-head norms, rotary embeddings (elementwise
# with tables, rotate-half slices and cats).
BACK_THROUGH = LAYOUT | NORMS | BINARY | {aten.neg.default, aten.slice.Tensor, aten.cat.default}
# From attention on to its output projection: layout changes, the split of a joint output, head-dim padding.
FORWARD_THROUGH = LAYOUT | {aten.slice.Tensor, operator.getitem, aten.constant_pad_nd.default}


def linears_back(start, limit=40):
    """Linears that produce `start` through reshapes, permutes, norms and elementwise ops (q/k/v projections)."""
    found, stack, seen = set(), [start], set()
    while stack and len(seen) < limit:
        node = stack.pop()
        if not isinstance(node, fx.Node) or node in seen:
            continue
        seen.add(node)
        if node.target is aten.linear.default:
            found.add(node)
        elif node.op == "call_function" and (node.target in BACK_THROUGH or _head_dim_map(node)):
            stack.extend(n for n in node.all_input_nodes if not is_const(n))
    return found


def _head_dim_map(node: fx.Node) -> bool:
    """x @ M with a constant M: a linear map of the head dim (RoPE's rotation, passes/pairs.py), not a projection."""
    return node.target is aten.matmul.default and is_const(node.args[1])


def linears_forward(start, limit=40):
    """Linears that consume `start` through reshapes, permutes, slices and pads (attention output projections)."""
    found, stack, seen = set(), [start], set()
    while stack and len(seen) < limit:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for user in node.users:
            if user.target is aten.linear.default and user.args[0] is node:
                found.add(user)
            elif user.target in FORWARD_THROUGH:
                stack.append(user)
    return found
