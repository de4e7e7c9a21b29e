"""Placements: where the pieces of a value live on the mesh, one placement per mesh axis.

A value's layout is a tuple with one placement per mesh axis:
  R        replicated: every device on that axis holds the whole tensor;
  S(d)     sharded: device k of the axis holds the k-th contiguous chunk of dim d;
  P        partial: every device holds a summand; the value is their sum (after a row-parallel linear).

The collectives that move a value between placements are graph ops of their own (meshdit/ir/ops.py).

A sequence shard is uneven by nature (any token count on any sp factor): each device holds ceil(N / sp) tokens
rounded up to whole 32-row tiles, so the sequence is zero-padded at its end. `MeshAxes` is the one place that knows
it: the per-device shape of any layout, how far a piece must be padded before a cut, and how much of a gathered
sequence is real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..ir.tiles import tile_up


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


def seq_local(n: int, factor: int) -> int:
    """Per-device length of a sequence of `n` tokens sharded `factor` ways (sequence parallelism).

    ceil(n / factor) rounded up to whole 32-row tiles: on device each shard must start on a tile boundary (real
    ttnn's mesh_partition refuses "height begin index aligned to tiles" otherwise), so the sequence is zero-padded
    at its end to seq_local * factor and the padding is masked by the logical length (ring attention's
    logical_n) or sliced off after a gather. Applies even when factor divides n (64 tokens over 4 -> 32 each)."""
    return tile_up(-(-n // factor))


def seq_padded(n: int, factor: int) -> int:
    """Global length of a sequence of `n` tokens once padded for `factor`-way sequence sharding."""
    return seq_local(n, factor) * factor


@dataclass(frozen=True)
class MeshAxes:
    """The (sub)mesh one cfg branch runs on, and which of its axes shard the sequence, outermost first (the ring
    axis, then a hybrid's ulysses axis). A dim sharded over those is a token dim: padded per device to whole tiles.
    A dim sharded over any other axis (tp) must divide exactly."""

    shape: tuple
    seq_axes: tuple = ()

    def local_shape(self, shape, layout) -> tuple:
        """The shape of one device's piece of a tensor of global `shape` laid out as `layout` (None: replicated).

        A token dim sharded over all the sequence axes holds seq_local(n, group) padded tokens; over the outer
        ones only (a nested shard, as after gathering the inner axis) that times the inner axes' sizes."""
        shape = list(shape)
        if layout is None:
            return tuple(shape)
        seq_axes = [a for a in self.seq_axes if self.shape[a] > 1]
        group = math.prod(self.shape[a] for a in seq_axes)
        token_dims: dict = {}
        for axis, (placement, size) in enumerate(zip(layout, self.shape)):
            if isinstance(placement, Shard) and size > 1:
                if axis in seq_axes:
                    token_dims.setdefault(placement.dim, []).append(axis)
                    continue
                if shape[placement.dim] % size:
                    raise ValueError(f"dim {placement.dim} of {tuple(shape)} does not split into {size}")
                shape[placement.dim] //= size
        for dim, axes in token_dims.items():
            if set(axes) != set(seq_axes[:len(axes)]):
                raise ValueError(f"token dim {dim} is sharded over mesh axes {axes} but sequence shards nest "
                                 f"outermost first ({seq_axes})")
            whole = math.prod(self.shape[a] for a in seq_axes[len(axes):])  # inner axes it is not (yet) split over
            shape[dim] = seq_local(shape[dim], group) * whole
        return tuple(shape)

    def pad_before_cut(self, piece: tuple, cut: tuple, dim: int, axis: int) -> int | None:
        """Cutting `dim` of a device's `piece` over `axis` into pieces of shape `cut`: the length the piece must be
        zero-padded to (at its end) first, or None when it splits as it is. Only sequence shards pad."""
        target = cut[dim] * self.shape[axis]
        return target if target != piece[dim] else None

    def cut_after_gather(self, piece: tuple, whole: tuple, dim: int, axis: int) -> tuple:
        """Gathering `dim` of pieces of shape `piece` over `axis` into a value of shape `whole`: (the gathered length,
        the logical length to cut it back to or None). The last gather of a sequence gives the padded sequence,
        whose first N tokens are the real ones; an inner-axis gather of a nested shard gives a padded piece as is."""
        gathered = piece[dim] * self.shape[axis]
        return gathered, (whole[dim] if whole[dim] != gathered else None)
