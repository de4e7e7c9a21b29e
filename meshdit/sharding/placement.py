"""Placements: where the pieces of a value live on the mesh, one placement per mesh axis.

A value's layout is a tuple with one placement per mesh axis:
  R        replicated: every device on that axis holds the whole tensor;
  S(d)     sharded: device k of the axis holds the k-th contiguous chunk of dim d;
  P        partial: every device holds a summand; the value is their sum (after a row-parallel linear).

The collectives that move a value between placements are graph ops of their own (meshdit/ir/ops.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Replicate:
    def __str__(self):
        return "R"


@dataclass(frozen=True)
class Shard:
    dim: int

    def __str__(self):
        return f"S({self.dim})"


@dataclass(frozen=True)
class Partial:
    def __str__(self):
        return "P"


R, P = Replicate(), Partial()


from ..ir.tiles import TILE as SEQ_TILE  # a sequence shard must start on a tile boundary on device


def seq_local(n: int, factor: int) -> int:
    """Per-device length of a sequence of `n` tokens sharded `factor` ways (sequence parallelism).

    ceil(n / factor) rounded up to whole 32-row tiles: on device each shard must start on a tile boundary (real
    ttnn's mesh_partition refuses "height begin index aligned to tiles" otherwise), so the sequence is zero-padded
    at its end to seq_local * factor and the padding is masked by the logical length (ring attention's
    logical_n) or sliced off after a gather. Applies even when factor divides n (64 tokens over 4 -> 32 each)."""
    per_device = -(-n // factor)  # ceil(n / factor)
    return -(-per_device // SEQ_TILE) * SEQ_TILE


def seq_padded(n: int, factor: int) -> int:
    """Global length of a sequence of `n` tokens once padded for `factor`-way sequence sharding."""
    return seq_local(n, factor) * factor


def local_shape(shape, layout, mesh_shape, seq_axes=()) -> tuple:
    """The shape of one device's piece of a tensor of global `shape` laid out as `layout` on `mesh_shape`.

    seq_axes: the sequence-parallel mesh axes, outermost first (the ring axis, then a hybrid's ulysses axis). A dim
    sharded over them is a token dim: sharded over all of them it holds seq_local(n, group) padded tokens; over the
    outer ones only (a nested shard, as after gathering the inner axis) that times the inner axes' sizes. A dim
    sharded over any other axis (tp) must divide exactly."""
    shape = list(shape)
    seq_axes = [a for a in seq_axes if mesh_shape[a] > 1]
    group = math.prod(mesh_shape[a] for a in seq_axes)
    token_dims = {}
    for axis, (placement, size) in enumerate(zip(layout, mesh_shape)):
        if isinstance(placement, Shard) and size > 1:
            if axis in seq_axes:
                token_dims.setdefault(placement.dim, []).append(axis)
                continue
            if shape[placement.dim] % size:
                raise ValueError(f"dim {placement.dim} of {tuple(shape)} does not split into {size}")
            shape[placement.dim] //= size
    for dim, axes in token_dims.items():
        if set(axes) != set(seq_axes[:len(axes)]):
            raise ValueError(f"token dim {dim} is sharded over mesh axes {axes} but sequence shards nest outermost "
                             f"first ({seq_axes})")
        whole = math.prod(mesh_shape[a] for a in seq_axes[len(axes):])  # inner axes it is not (yet) sharded over
        shape[dim] = seq_local(shape[dim], group) * whole
    return tuple(shape)


def layout_str(layout) -> str:
    return "(" + ", ".join(str(p) for p in layout) + ")"
