"""Data movement: reshape, permute, slice, cat, pad, expand, repeat. A shard follows its dim where the op keeps the dim
whole; where the op cuts, joins or re-splits the sharded dim, the input is gathered first."""

from __future__ import annotations

import math

import torch

from ...ir.graph import reshape_dim_map, shape_of
from ..placement import P, Partial, R, Shard
from . import OpOnAxis, sharding_rule

aten = torch.ops.aten


@sharding_rule(aten.reshape.default)
def reshape(op: OpOnAxis):
    x = op.args["input"]
    hx = op.placement(x)
    if isinstance(hx, Partial):
        return {x: hx}, P
    if isinstance(hx, Shard):
        if op.on_sequence_axis:
            # A sequence shard holds whole tiles of a zero-padded sequence, not an even cut of the logical one: it
            # stays sharded only while the token dim stays whole (other dims split or merged, unit dims added or
            # dropped); a reshape that splits or merges the token dim itself (unpatchify) gathers first.
            e = reshape_dim_map(shape_of(x), op.shape, hx.dim)
        else:
            e = _reshape_shard(shape_of(x), op.shape, hx.dim, op.axis_size)
        if e is not None:
            return {x: hx}, Shard(e)
    return {x: R}, R


def _reshape_shard(src, dst, d, factor):
    """Output dim holding an even shard of input dim d after a reshape, when d is the leading factor of it."""
    before = math.prod(src[:d])
    prefix = 1
    for e, size in enumerate(dst):
        if prefix == before:
            if size == 1 and src[d] != 1:
                continue  # a unit dim in front of d's data (batch 1) carries none of it
            if size % src[d] == 0 and size >= src[d]:  # d merged with the dims after it
                merged = src[d]
                k = d + 1
                while merged < size and k < len(src):
                    merged *= src[k]
                    k += 1
                return e if merged == size else None
            if src[d] % size == 0 and size % factor == 0:  # d split; its leading part carries the shard
                return e
            return None
        prefix *= size
        if prefix > before:
            return None
    return None


@sharding_rule(aten.permute.default)
def permute(op: OpOnAxis):
    x = op.args["input"]
    hx = op.placement(x)
    if isinstance(hx, Shard):
        return {x: hx}, Shard(list(op.args["dims"]).index(hx.dim))
    return {x: hx}, hx


@sharding_rule(aten.slice.Tensor)
def slice_(op: OpOnAxis):
    x = op.args["input"]
    hx = op.placement(x)
    if isinstance(hx, Shard) and hx.dim == op.args["dim"] % len(op.shape):
        return {x: R}, R  # a cut of the sharded dim spans devices
    return {x: hx}, hx


@sharding_rule(aten.cat.default)
def cat(op: OpOnAxis):
    dim = op.args["dim"] % len(op.shape)
    sharded = [h for h in op.have.values() if isinstance(h, Shard) and h.dim != dim]
    if sharded and all(h == sharded[0] or h == R for h in op.have.values()):
        return {n: sharded[0] for n in op.have}, sharded[0]
    return {n: R for n in op.have}, R


@sharding_rule(aten.constant_pad_nd.default)
def constant_pad(op: OpOnAxis):
    x, pad = op.args["input"], list(op.args["pad"])
    hx = op.placement(x)
    rank = len(op.shape)
    padded = {rank - 1 - i for i in range(len(pad) // 2) if pad[2 * i] or pad[2 * i + 1]}  # torch pads from the end
    if isinstance(hx, Shard) and hx.dim not in padded:
        return {x: hx}, hx
    return {x: R}, R


@sharding_rule(aten.expand.default)
def expand(op: OpOnAxis):
    x = op.args["input"]
    hx = op.placement(x)
    shift = len(op.shape) - len(shape_of(x))
    if isinstance(hx, Shard) and shape_of(x)[hx.dim] == op.shape[hx.dim + shift]:
        return {x: hx}, Shard(hx.dim + shift)
    return {x: R}, R


@sharding_rule(aten.repeat.default)
def repeat(op: OpOnAxis):
    """x.repeat(r): a dim repeated once keeps its shard; a repeated dim is tiled whole on every device."""
    x = op.args["input"]
    hx = op.placement(x)
    shift = len(op.shape) - len(shape_of(x))
    if isinstance(hx, Shard) and op.args["repeats"][hx.dim + shift] == 1:
        return {x: hx}, Shard(hx.dim + shift)
    return {x: R}, R
