"""Drop nodes that do nothing at inference: metadata asserts, eval-mode dropout, identity casts and copies,
and arithmetic with a neutral scalar (x * 1, x + 0)."""

from __future__ import annotations

import torch

from ..ir.graph import ModelGraph, finalize, replace_node

aten = torch.ops.aten

_IDENTITY = {aten.contiguous.default, aten.clone.default, aten.alias.default, aten.detach.default,
             aten.lift_fresh_copy.default}
_CASTS = {aten.to.dtype, aten._to_copy.default, aten.to.dtype_layout, aten.to.device, aten.type_as.default}
_ASSERTS = {aten._assert_tensor_metadata.default}


def _is_identity(node) -> bool:
    """x * 1, x / 1, x + 0, x - 0 (alpha 1) that neither broadcast nor change dtype."""
    x, other = node.args[0], node.args[1]
    neutral = 1 if node.target in (aten.mul.Tensor, aten.div.Tensor) else 0
    if not isinstance(other, (int, float)) or other != neutral or node.kwargs.get("alpha", 1) != 1:
        return False
    if not hasattr(x, "meta"):
        return False
    src, out = x.meta["val"], node.meta["val"]
    return src.shape == out.shape and src.dtype == out.dtype


def drop_noops(mg: ModelGraph) -> int:
    """Remove no-op nodes; returns how many were removed."""
    removed = 0
    for node in list(mg.gm.graph.nodes):
        if node.op != "call_function":
            continue
        target = node.target
        if target in _ASSERTS:
            mg.gm.graph.erase_node(node)
            removed += 1
        elif target in _IDENTITY:
            replace_node(node, node.args[0])
            removed += 1
        elif target in (aten.dropout.default, aten.native_dropout.default):
            p = node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 0.5)
            train = node.args[2] if len(node.args) > 2 else node.kwargs.get("train", True)
            if train and p > 0 and target is aten.dropout.default:
                continue  # real dropout: left for lowering to reject with the node's location
            replace_node(node, node.args[0])
            removed += 1
        elif target in (aten.mul.Tensor, aten.div.Tensor, aten.add.Tensor, aten.sub.Tensor) and _is_identity(node):
            replace_node(node, node.args[0])
            removed += 1
        elif target in _CASTS:
            src = node.args[0]
            if src.meta["val"].dtype == node.meta["val"].dtype:
                replace_node(node, src)
                removed += 1
    finalize(mg)
    return removed
