"""Numbers added to columns of a linear's output go into its bias: adaLN's `1 + scale`.

    y = linear(x, W, b);  s = y[..., lo:hi] (through reshapes that keep the last dim);  s + c
        ->  y = linear(x, W, b + c on columns lo:hi);  s

A modulation linear's output is cut into chunks (shift, scale, gate), and `1 + scale` is otherwise one elementwise
op per chunk, per block, on a vector of one row that the device pads to a whole 32-row tile. Folded into the bias
the device does nothing for it: the bias row is prepared on host, once. Whatever tensor parallelism later does with
the linear (gathered whole, split into one linear per chunk) carries the folded bias with it.

A number is folded only where nothing else reads its columns (other chunks are cut elsewhere), where the add keeps
the linear's dtype, and not inside a float32 region (a sin/cos argument: ir/graph.py float32_region), whose
arithmetic must stay in float32 rather than move into a bfloat16 linear.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from ..ir.graph import ModelGraph, emit, finalize, float32_region, is_const, normalized_args, replace_node, shape_of
from .fold import fold_constants

aten = torch.ops.aten


def _column_readers(linear: fx.Node) -> list:
    """(reader node, the node it reads, (lo, hi)): every op that reads the linear's output columns lo:hi, through
    reshapes that keep the last dim and slices of it."""
    width = shape_of(linear)[-1]
    out, stack = [], [(linear, 0, width)]
    while stack:
        node, lo, hi = stack.pop()
        for user in node.users:
            if user.target is aten.reshape.default and shape_of(user)[-1] == shape_of(node)[-1]:
                stack.append((user, lo, hi))
                continue
            if user.target is aten.slice.Tensor:
                a = normalized_args(user)
                rank, size = len(shape_of(node)), shape_of(node)[-1]
                if a["dim"] % rank == rank - 1 and a["step"] == 1:
                    start = 0 if a["start"] is None else a["start"]
                    start = max(0, start + size if start < 0 else min(start, size))
                    stop = size if a["end"] is None else a["end"]
                    stop = max(0, stop + size if stop < 0 else min(stop, size))
                    stack.append((user, lo + start, lo + max(start, stop)))
                    continue
            out.append((user, node, (lo, hi)))
    return out


def _added_number(add: fx.Node, read: fx.Node):
    """The number `add` adds to `read` (x + c, c + x, x - c), or None."""
    if add.target not in (aten.add.Tensor, aten.sub.Tensor) or len(add.args) != 2 or add.kwargs.get("alpha", 1) != 1:
        return None
    a, b = add.args
    number = b if a is read else (a if add.target is aten.add.Tensor else None)
    if isinstance(number, bool) or not isinstance(number, (int, float)) or number == 0:
        return None
    return -number if add.target is aten.sub.Tensor else number


def _foldable(linear: fx.Node, region: set) -> list:
    """(add, the node it reads, (lo, hi), number) for the adds this linear's bias can take."""
    bias = normalized_args(linear)["bias"]
    if bias is not None and not is_const(bias):
        return []
    dtype = linear.meta["val"].dtype
    readers = _column_readers(linear)
    candidates = []
    for reader, read, span in readers:
        number = _added_number(reader, read)
        if number is not None and reader not in region and reader.meta["val"].dtype == dtype and \
                shape_of(reader) == shape_of(read):
            candidates.append((reader, read, span, number))

    def overlaps(span, other):
        return span[0] < other[1] and other[0] < span[1]

    return [c for c in candidates
            if not any(r is not c[0] and overlaps(c[2], s) for r, _, s in readers)]


def fold_numbers_into_bias(mg: ModelGraph) -> int:
    """Fold every number added to columns of a linear's output into its bias; returns how many were folded."""
    graph = mg.gm.graph
    region = float32_region(mg)
    folded = 0
    for linear in [n for n in graph.nodes if n.op == "call_function" and n.target is aten.linear.default]:
        adds = _foldable(linear, region)
        if not adds:
            continue
        width, dtype = shape_of(linear)[-1], linear.meta["val"].dtype
        args = normalized_args(linear)
        with graph.inserting_before(linear):
            # the numbers as one row over the output columns (factories and constants: fold_constants bakes it)
            pieces, at = [], 0
            for _, _, (lo, hi), number in sorted(adds, key=lambda c: c[2]):
                if lo > at:
                    pieces.append(emit(graph, aten.full.default, ([lo - at], 0.0), {"dtype": dtype}, like=linear))
                pieces.append(emit(graph, aten.full.default, ([hi - lo], float(number)), {"dtype": dtype},
                                   like=linear))
                at = hi
            if at < width:
                pieces.append(emit(graph, aten.full.default, ([width - at], 0.0), {"dtype": dtype}, like=linear))
            row = emit(graph, aten.cat.default, (pieces, 0), like=linear) if len(pieces) > 1 else pieces[0]
            bias = row if args["bias"] is None else emit(graph, aten.add.Tensor, (args["bias"], row), like=linear)
        linear.args = (args["input"], args["weight"], bias)
        linear.kwargs = {}
        for add, read, _, _ in adds:
            replace_node(add, read)
        folded += len(adds)
    if folded:
        finalize(mg)
        fold_constants(mg)
    return folded
