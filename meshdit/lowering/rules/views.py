"""Data movement: reshape, permute, slice, concat, pad, repeat (expand, repeat)."""

from __future__ import annotations

import torch

from ..builder import Builder
from ..program_ir import Code
from ..registry import lowering
from . import heads

aten = torch.ops.aten


@lowering(aten.reshape.default)
def reshape(b: Builder, input, shape):
    return b.call("ttnn.reshape", (b.arg(input), list(b.local(b.node))))


@lowering(aten.permute.default)
def permute(b: Builder, input, dims):
    merged = heads.concatenate_heads(b, input, dims)
    if merged is not None:
        return merged
    return b.call("ttnn.permute", (b.arg(input), list(dims)))


@lowering(aten.slice.Tensor)
def slice_(b: Builder, input, dim, start, end, step):
    shape = list(b.local(input))
    dim %= len(shape)
    starts, ends = [0] * len(shape), list(shape)
    starts[dim], ends[dim] = start, min(end, shape[dim])
    steps = ([1] * dim + [step] + [1] * (len(shape) - dim - 1),) if step != 1 else ()
    return b.call("ttnn.slice", (b.arg(input), starts, ends) + steps)


@lowering(aten.cat.default)
def cat(b: Builder, tensors, dim):
    return b.call("ttnn.concat", ([b.value_or_weight(t) for t in tensors], dim % len(b.node.meta["val"].shape)))


@lowering(aten.constant_pad_nd.default)
def constant_pad(b: Builder, input, pad, value):
    rank = len(input.meta["val"].shape)
    padding = [[0, 0] for _ in range(rank)]
    for i in range(len(pad) // 2):  # torch pads from the last dim backwards
        padding[rank - 1 - i] = [pad[2 * i], pad[2 * i + 1]]
    if any(p < 0 for pair in padding for p in pair):
        return None  # negative padding crops: no ttnn.pad form
    if not any(lo for lo, _ in padding):
        return b.call("ttnn.pad", (b.arg(input), padding, float(value or 0.0)))
    # ttnn pads a TILE tensor at the end of each dim only ("tile padding does not support front padding"); row-major
    # takes padding in front too
    dtype, padded = input.meta["val"].dtype, list(b.local(b.node))
    rows = b.call("ttnn.to_layout", (b.arg(input), Code("ttnn.ROW_MAJOR_LAYOUT")), shapes=(b.local(input), dtype))
    rows = b.call("ttnn.pad", (rows, padding, float(value or 0.0)), shapes=(padded, dtype))
    return b.call("ttnn.to_layout", (rows, Code("ttnn.TILE_LAYOUT")))


@lowering(aten.expand.default)
def expand(b: Builder, input, size, implicit=False):
    in_shape, out_shape = list(b.local(input)), list(b.local(b.node))
    src = b.arg(input)
    if len(in_shape) < len(out_shape):
        in_shape = [1] * (len(out_shape) - len(in_shape)) + in_shape
        src = b.call("ttnn.reshape", (src, in_shape), shapes=(in_shape, b.node.meta["val"].dtype))
    if any(i not in (1, o) for i, o in zip(in_shape, out_shape)):
        return None
    return b.call("ttnn.repeat", (src, [o // i if i != o else 1 for i, o in zip(in_shape, out_shape)]))


@lowering(aten.repeat.default)
def repeat(b: Builder, input, repeats):
    """x.repeat(r) tiles x r times along each dim (leading dims added), as ttnn.repeat does."""
    in_shape, src = list(b.local(input)), b.arg(input)
    if len(in_shape) < len(repeats):
        in_shape = [1] * (len(repeats) - len(in_shape)) + in_shape
        src = b.call("ttnn.reshape", (src, in_shape), shapes=(in_shape, b.node.meta["val"].dtype))
    return b.call("ttnn.repeat", (src, list(repeats)))
