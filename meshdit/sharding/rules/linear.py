"""Linears, matmuls and norms.

On the tp axis a linear takes the role the tp step chose for it (sharding/tp.py): column-parallel (whole input,
weight rows sharded, output features sharded) or row-parallel (input features and weight columns sharded, the
output a pending sum). On every other axis a linear is row-wise: a shard of any dim but the last passes through.
A norm over a sharded hidden dim becomes a distributed norm (statistics gathered, not the tensor).
"""

from __future__ import annotations

import torch

from ...ir.graph import is_row_wise, shape_of
from ...ir.op_classes import NORMS
from ..placement import P, Partial, R, Shard
from ..tp import BIAS_SHARED_OVER
from . import OpOnAxis, replicated, sharding_rule

aten = torch.ops.aten


@sharding_rule(aten.linear.default)
def linear(op: OpOnAxis):
    x, w, bias = op.args["input"], op.args["weight"], op.args["bias"]
    last = len(shape_of(x)) - 1
    if op.axis == op.plan.tp_axis:
        role = op.plan.linear_roles.get(op.node.name, "rep")
        if role == "col":  # whole input on every device, each computes its slice of the output features
            reqs = {x: R, w: Shard(0)}
            if bias is not None:
                reqs[bias] = Shard(0)
            return reqs, Shard(len(op.shape) - 1)
        if role == "row":  # each device holds a slice of the input features: its product is a summand
            if bias is None:
                return {x: Shard(last), w: Shard(1)}, P
            # every device adds the bias: only its share (bias / tp, tp.share_row_bias) keeps the sum right
            if op.node.meta.get(BIAS_SHARED_OVER) != op.axis_size:
                raise ValueError(f"row-parallel linear {op.node.name} has a bias not divided by tp "
                                 f"{op.axis_size} (tp.share_row_bias)")
            return {x: Shard(last), w: Shard(1), bias: R}, P
    hx = op.placement(x)
    keep = hx if isinstance(hx, Shard) and hx.dim != last else R
    reqs = {x: keep, w: R}
    if bias is not None:
        reqs[bias] = R
    return reqs, keep


@sharding_rule(*NORMS)
def norm(op: OpOnAxis):
    x = op.args["input"]
    hx = op.placement(x)
    last = len(op.shape) - 1
    if isinstance(hx, Partial) and op.plan.residual == "sharded" and op.axis == op.plan.tp_axis:
        hx = Shard(last)  # a pending sum (a row-parallel result): reduce-scattered as the residual is, then normed
    if isinstance(hx, Shard) and hx.dim != last:
        return {x: hx}, hx  # each token is normalised on its own
    # Hidden dim sharded: a distributed norm (local statistics, gathered over the axis, applied locally). Not over
    # a sequence shard: its padded rows would enter the statistics.
    if isinstance(hx, Shard) and not op.on_sequence_axis:
        op.decision.norm_axis = op.axis
        params = [op.args[k] for k in ("weight", "bias") if k in op.args and op.args[k] is not None]
        return {x: hx, **{p: Shard(0) for p in params}}, hx
    return {x: R}, R


@sharding_rule(aten.matmul.default)
def matmul(op: OpOnAxis):
    """x @ M with a constant matrix M (a lookup as a one-hot matmul, a fixed mixing of the last dim such as RoPE's
    pair rotation): row-wise, as a linear off the tp axis; a shard of any dim but the last passes through. Products
    of two activations (attention written out by hand) run on whole tensors."""
    x, m = op.args["input"], op.args["other"]
    if not (is_row_wise(op.node) and len(shape_of(x)) >= 2):
        return replicated(op)
    hx = op.placement(x)
    keep = hx if isinstance(hx, Shard) and hx.dim != len(shape_of(x)) - 1 else R
    return {x: keep, m: R}, keep


# Batched products of two activations: run on whole tensors.
sharding_rule(aten.mm.default, aten.bmm.default)(replicated)
