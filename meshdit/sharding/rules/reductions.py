"""Reductions and softmax: a shard of a dim they do not reduce passes through; reducing a sharded dim needs it
whole."""

from __future__ import annotations

import torch

from ...ir.graph import shape_of
from ..placement import R, Shard
from . import OpOnAxis, sharding_rule

aten = torch.ops.aten


@sharding_rule(aten.mean.dim, aten.sum.dim_IntList, aten.softmax.int, aten._softmax.default)
def reduction(op: OpOnAxis):
    x = op.args["input"]
    hx = op.placement(x)
    rank = len(shape_of(x))
    dims = op.args["dim"]
    dims = list(range(rank)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
    dims = {d % rank for d in dims}
    keepdim = op.node.target in (aten.softmax.int, aten._softmax.default) or bool(op.args.get("keepdim"))
    if isinstance(hx, Shard) and hx.dim not in dims:
        return {x: hx}, Shard(hx.dim if keepdim else hx.dim - sum(d < hx.dim for d in dims))
    return {x: R}, R
