"""Elementwise ops: a shard passes through; a pending sum passes only through ops that commute with a sum."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from ...ir.graph import shape_of
from ...ir.op_classes import BINARY, COMPARISON, SUM_PRESERVING, TERNARY, UNARY
from ..placement import P, Partial, R, Shard
from . import OpOnAxis, sharding_rule

aten = torch.ops.aten


@sharding_rule(*UNARY)
def unary(op: OpOnAxis):
    x = op.args["input"]
    hx = op.placement(x)
    if isinstance(hx, Partial) and op.node.target not in SUM_PRESERVING:
        return {x: R}, R  # silu(a + b) is not silu(a) + silu(b): reduce first
    return {x: hx}, hx


@sharding_rule(*BINARY)
def binary(op: OpOnAxis):
    node = op.node
    out_rank = len(op.shape)
    operands = [a for a in (op.args["input"], op.args["other"]) if isinstance(a, fx.Node)]
    placements = [op.placement(a) for a in operands]
    partial = [isinstance(p, Partial) for p in placements]
    if any(partial):
        # TT-DiT's layout: a row-parallel result is reduce-scattered into a hidden-dim-sharded residual
        into_residual = op.plan.residual == "sharded" and op.axis == op.plan.tp_axis
        scaled_by_shard = into_residual and any(isinstance(p, Shard) for p in placements)
        if node.target in (aten.mul.Tensor, aten.div.Tensor) and sum(partial) == 1 and \
                (node.target is aten.mul.Tensor or partial[0]) and not scaled_by_shard:
            return {a: (P if p else R) for a, p in zip(operands, partial)}, P  # scaling a pending sum
        if node.target in (aten.add.Tensor, aten.sub.Tensor) and len(operands) == 2 and all(partial):
            return {a: P for a in operands}, P  # a sum of pending sums: still one reduction later
        # a number added to a pending sum would be added once per device (adaLN's 1 + scale after a row-parallel
        # linear): the sum is reduced first, below
        if into_residual and (node.target in (aten.add.Tensor, aten.sub.Tensor) or scaled_by_shard):
            # (a pending sum scaled by a sharded factor, adaLN's gate: reduce-scattered to the factor's shard rather
            # than the factor gathered to scale the sum, which is reduce-scattered into the residual anyway)
            placements = [Shard(len(shape_of(a)) - 1) if p else h for a, p, h in zip(operands, partial, placements)]
        else:
            placements = [R if p else h for p, h in zip(partial, placements)]
    return _broadcast(op, operands, placements)


@sharding_rule(*TERNARY, *COMPARISON)
def select_or_compare(op: OpOnAxis):
    """where(cond, a, b), a > b, a == b, ...: elementwise over broadcast operands; a pending sum is reduced first
    (neither a selection nor a comparison of partial sums is a partial sum)."""
    names = ("condition", "input", "other") if op.node.target in TERNARY else ("input", "other")
    operands = [a for a in (op.args[n] for n in names) if isinstance(a, fx.Node)]
    placements = [R if isinstance(op.placement(a), Partial) else op.placement(a) for a in operands]
    return _broadcast(op, operands, placements)


def _broadcast(op: OpOnAxis, operands: list, placements: list):
    """Broadcast elementwise operands: the output is sharded as the first sharded operand; every operand that has
    the sharded dim follows it, one broadcast along it is read whole."""
    out_rank = len(op.shape)
    out = R
    for a, p in zip(operands, placements):
        if isinstance(p, Shard):
            out = Shard(p.dim + out_rank - len(shape_of(a)))  # broadcasting aligns dims from the right
            break
    reqs = {}
    for a in operands:
        if isinstance(out, Shard):
            od = out.dim - (out_rank - len(shape_of(a)))
            # an operand broadcast along the sharded dim (size 1 there) is read whole by every device
            reqs[a] = Shard(od) if od >= 0 and shape_of(a)[od] == op.shape[out.dim] else R
        else:
            reqs[a] = R
    return reqs, out


@sharding_rule(operator.getitem)
def getitem(op: OpOnAxis):
    """One output of a multi-output op (attention): the placement its producer gave that output."""
    x = op.args["input"]
    return {x: op.placement(x)}, op.plan.layout(x)[op.args["index"]][op.axis]
