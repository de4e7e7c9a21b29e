"""Data movement: reshape, permute, slice, concat, pad, repeat (expand, repeat), and chains of reshapes and permutes
through narrow tensors run row-major (narrow_views)."""

from __future__ import annotations

import math

import torch
import torch.fx as fx

from ...cost.calibration import FITTED
from ...ir.graph import is_const
from ...ir.tiles import tile_padded
from ..builder import Builder
from ..program_ir import BYTES_PER_ELEMENT, Code
from ..registry import claimed, fused_pattern, lowering
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
    rows = b.call("ttnn.to_layout", (b.arg(input), Code("ttnn.ROW_MAJOR_LAYOUT")), shapes=(b.local(input), dtype),
                  layout="ROW_MAJOR")
    rows = b.call("ttnn.pad", (rows, padding, float(value or 0.0)), shapes=(padded, dtype), layout="ROW_MAJOR")
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


# --- chains of reshapes and permutes through narrow tensors, row-major -------------------------------------------
VIEWS = (aten.reshape.default, aten.permute.default)


@fused_pattern
def narrow_views(b: Builder, graph: fx.Graph) -> None:
    """A chain of reshapes and permutes whose middle tensors have narrow last dims (patchify's and unpatchify's
    [..., p, p] pieces with p = 2) pads each of them to 32x32 tiles when tiled, 256 times the bytes at p = 2.
    Row-major tensors are not padded: where the modelled time says so (_row_major_is_faster), the chain untilizes
    its input, runs its reshapes and permutes row-major and tilizes its output. Real ttnn 0.81.1 takes row-major
    reshape and permute of any rank (checked on the mock, bf16 and fp32); bfloat8_b has no row-major form."""
    for node in graph.nodes:
        if node.target not in VIEWS or not _chain_start(b, node):
            continue
        chain = [node]
        while len(chain[-1].users) == 1:
            user = next(iter(chain[-1].users))
            if user.target not in VIEWS or not _free(b, user):
                break
            chain.append(user)
        if _row_major_is_faster(b, chain):
            for inner in chain[:-1]:
                b.absorbed[inner] = None
            b.fused[chain[-1]] = lambda b, c=chain: _emit_row_major(b, c)


def _free(b: Builder, node) -> bool:
    """Not claimed by another pattern, whole, and not a head merge (one ttnn op without padding: heads.py)."""
    if claimed(b, node) or b.pending_sum(node):
        return False
    if node.target is aten.permute.default:
        return heads.merging_reshape(b, node) is None
    source = node.args[0]
    return not (isinstance(source, fx.Node) and source.target is aten.permute.default
                and heads.merging_reshape(b, source) is node)


def _chain_start(b: Builder, node) -> bool:
    """A view whose input is not the single-user view before it: the first of its chain."""
    source = node.args[0]
    if not isinstance(source, fx.Node) or is_const(source) or not _free(b, node):
        return False
    return not (source.target in VIEWS and len(source.users) == 1 and _free(b, source))


def _row_major_is_faster(b: Builder, chain: list) -> bool:
    """The chain's modelled time tiled against row-major: DRAM bytes (each op reads and writes its tensors, tiled
    ones padded to whole tiles; a tiled reshape keeping the last two padded dims is a view) plus the per-op
    overhead, for the two layout conversions row-major adds."""
    dtype = b.dtype_of(chain[0].meta["val"].dtype, chain[0])
    if dtype not in ("bfloat16", "float32"):
        return False
    size = BYTES_PER_ELEMENT[dtype]
    shapes = [b.arg_local(chain[0].args[0], chain[0])] + [b.local(n) for n in chain]
    if any(len(shape) < 2 for shape in shapes):  # scalars and vectors: nothing narrow to gain on
        return False
    tiled = [math.prod(tile_padded(s)) * size for s in shapes]
    logical = [math.prod(s) * size for s in shapes]
    tiled_ops = tiled_bytes = 0
    rows_ops, rows_bytes = 2, tiled[0] + logical[0] + logical[-1] + tiled[-1]  # untilize, tilize
    for i, node in enumerate(chain):
        was, now = shapes[i], shapes[i + 1]
        if node.target is aten.permute.default or tile_padded(was)[-2:] != tile_padded(now)[-2:]:
            tiled_ops, tiled_bytes = tiled_ops + 1, tiled_bytes + tiled[i] + tiled[i + 1]
        if node.target is aten.permute.default or was[-1] != now[-1]:
            rows_ops, rows_bytes = rows_ops + 1, rows_bytes + logical[i] + logical[i + 1]

    def seconds(ops, nbytes):
        return ops * FITTED.op_overhead_s + nbytes / b.system.chip.dram_effective_bytes_per_s
    return seconds(rows_ops, rows_bytes) < seconds(tiled_ops, tiled_bytes)


def _emit_row_major(b: Builder, chain: list):
    torch_dtype = chain[0].meta["val"].dtype
    value = b.call("ttnn.to_layout", (b.arg(chain[0].args[0]), Code("ttnn.ROW_MAJOR_LAYOUT")),
                   shapes=(b.arg_local(chain[0].args[0], chain[0]), torch_dtype), layout="ROW_MAJOR")
    for node in chain:
        rank = len(node.meta["val"].shape)
        args = [list(b.local(node))] if node.target is aten.reshape.default else [[d % rank for d in node.args[1]]]
        fn = "ttnn.reshape" if node.target is aten.reshape.default else "ttnn.permute"
        value = b.call(fn, (value, *args), shapes=(b.local(node), torch_dtype), layout="ROW_MAJOR")
    b.fusions["reshapes and permutes through narrow tensors, row-major"] += 1
    return b.call("ttnn.to_layout", (value, Code("ttnn.TILE_LAYOUT")), shapes=(b.local(chain[-1]), torch_dtype))
