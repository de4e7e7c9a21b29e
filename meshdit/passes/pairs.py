"""A linear map of the last dim written through narrow views becomes one matmul with a constant matrix.

RoPE in diffusers rotates channel pairs so: x.reshape(..., d/2, 2).unbind(-1) -> (-x_imag, x_real) stacked back to
[..., d]. On device every one of those tensors has a last dim of 1 or 2, padded to a 32-wide tile: 16 to 32 times
the data and a dozen ops per q and per k. The whole subgraph is a linear map of x's last dim (the leading dims are
only carried along), so it equals x @ M for the [d_in, d_out] matrix M it makes of the identity:

    region  = ops reachable from reshape(x, L + [.., small]) that only reshape, slice, concatenate, negate, scale
              or permute the dims after the leading dims L, and end in tensors of shape L + [d_out]
    M       = the region applied to eye(d_in) (L replaced by d_in rows), folded to a constant
    y       = matmul(x, M)                                                  (exact: M holds 0 and +-scale)

A region may join several such inputs x_1..x_k (same leading dims) in a concatenation: Mochi's RoPE computes the
rotated even and odd halves separately and interleaves them back with stack(-1) + flatten. The map is then linear
in all of them together, so y = cat(x_1..x_k, -1) @ M, M the region applied to the identity split into column
blocks, one per input.

TT-DiT does the same with ttnn's rotary op and its 32x32 transformation matrix. Nothing here knows about RoPE: any
such region is rewritten.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from ..ir.graph import ModelGraph, emit, finalize, shape_of
from ..ir.tiles import TILE
from .fold import fold_constants

aten = torch.ops.aten

# x @ M costs d_in * d_out multiply-adds per row: worth it for a head dim (RoPE: 64 to 256), not for a hidden dim
MAX_WIDTH = 256
REGION_OPS = {aten.reshape.default, aten.slice.Tensor, aten.cat.default, aten.neg.default, aten.mul.Tensor,
              aten.permute.default}


def _dim(node: fx.Node, d: int) -> int:
    return d % len(shape_of(node))


def _joins(node: fx.Node, lead: list, region: set) -> bool:
    """`node` acts on the dims after `lead` only, and reads region values (or scalars) only."""
    if node.op != "call_function" or node.target not in REGION_OPS:
        return False
    shape, n = shape_of(node), len(lead)
    if not isinstance(node.meta.get("val"), torch.Tensor) or shape[:n] != lead or len(shape) <= n:
        return False
    t = node.target
    if t is aten.cat.default:
        return all(p in region for p in node.args[0]) and _dim(node, node.args[1] if len(node.args) > 1 else 0) >= n
    if node.args[0] not in region:
        return False
    if t is aten.slice.Tensor:
        return _dim(node.args[0], node.args[1]) >= n
    if t is aten.mul.Tensor:
        return isinstance(node.args[1], (int, float))
    if t is aten.permute.default:
        return [p % len(shape) for p in node.args[1]][:n] == list(range(n))
    return True  # reshape (its shape keeps the leading dims), neg


def _clone(graph, node: fx.Node, env: dict, n: int):
    """`node` applied to env's values, with the leading dims (n of them) replaced by one dim of basis rows."""
    t, a = node.target, node.args
    shift = lambda d, of: _dim(of, d) - n + 1  # noqa: E731
    if t is aten.reshape.default:
        return emit(graph, t, (env[a[0]], [-1] + list(a[1])[n:]), like=node)
    if t is aten.slice.Tensor:
        return emit(graph, t, (env[a[0]], shift(a[1], a[0])) + tuple(a[2:]), like=node)
    if t is aten.cat.default:
        return emit(graph, t, ([env[p] for p in a[0]], shift(a[1] if len(a) > 1 else 0, node)), like=node)
    if t is aten.permute.default:
        return emit(graph, t, (env[a[0]], [0] + [p % len(shape_of(node)) - n + 1 for p in a[1][n:]]), like=node)
    return emit(graph, t, (env[a[0]],) + tuple(a[1:]), like=node)  # neg, mul by a scalar


def _narrowing(node, lead: list | None = None) -> fx.Node | None:
    """The tensor a reshape splits into narrow pieces along its last dim, keeping the leading dims (`lead`, by
    default the tensor's own), if `node` is such a reshape of a floating tensor no wider than MAX_WIDTH; else None."""
    if not isinstance(node, fx.Node) or node.op != "call_function" or node.target is not aten.reshape.default:
        return None
    x = node.args[0]
    if not isinstance(x, fx.Node) or not isinstance(x.meta.get("val"), torch.Tensor) or not shape_of(x):
        return None  # a 0-d value has no last dim to split
    lead = shape_of(x)[:-1] if lead is None else lead
    shape, n = shape_of(node), len(lead)
    if shape_of(x)[:-1] != lead or len(shape) <= n + 1 or shape[:n] != lead or shape[-1] >= TILE or \
            shape_of(x)[-1] > MAX_WIDTH or not x.meta["val"].dtype.is_floating_point:
        return None
    return x


def _region(x: fx.Node, start: fx.Node):
    """The region from x's narrowing reshape `start`, its inputs (x and the tensors whose narrowing reshapes a
    concatenation in it joins), and its outputs; None when it is not closed."""
    lead = shape_of(x)[:-1]
    sources, region, order, frontier = [x], {x}, [], [start]
    while frontier:
        node = frontier.pop(0)
        if node in region:
            continue
        if node.op == "call_function" and node.target is aten.cat.default:
            for part in node.args[0]:  # another input entering through its own narrowing reshape
                other = _narrowing(part, lead) if part not in region else None
                if other is not None and other.meta["val"].dtype == x.meta["val"].dtype:
                    if other not in region:
                        sources.append(other)
                        region.add(other)
                    region.add(part)
                    order.append(part)
                    frontier.extend(part.users)
        if not _joins(node, lead, region):
            continue
        region.add(node)
        order.append(node)
        frontier.extend(node.users)
    region.difference_update(sources)
    outputs = [r for r in order if any(u not in region for u in r.users)]
    if not outputs or any(len(shape_of(r)) != len(lead) + 1 for r in outputs):
        return None  # a narrow intermediate is read outside the region
    return sources, order, outputs


def pair_maps_as_matmuls(mg: ModelGraph) -> int:
    """Rewrite every closed last-dim-linear region over narrow views into matmuls; returns how many outputs."""
    graph = mg.gm.graph
    position = {node: i for i, node in enumerate(graph.nodes)}
    done, rewritten = set(), 0
    for start in list(graph.nodes):
        x = _narrowing(start) if start not in done else None
        if x is None:
            continue  # not a split of a last dim into narrow pieces
        found = _region(x, start)
        if found is None:
            continue
        sources, order, outputs = found
        order.sort(key=position.__getitem__)
        done.update(order)
        widths = [shape_of(s)[-1] for s in sources]
        with graph.inserting_before(min(outputs, key=position.__getitem__)):
            # one basis row per input channel of every source: the region maps it to its row of M
            basis = emit(graph, aten.eye.default, (sum(widths),), {"dtype": x.meta["val"].dtype}, like=start)
            env, offset = {}, 0
            for source, width in zip(sources, widths):
                env[source] = emit(graph, aten.slice.Tensor, (basis, 1, offset, offset + width), like=start) \
                    if len(sources) > 1 else basis
                offset += width
            for node in order:
                env[node] = _clone(graph, node, env, len(shape_of(x)) - 1)
            joined = emit(graph, aten.cat.default, (list(sources), -1), like=start) if len(sources) > 1 else x
            for out in outputs:
                if shape_of(out)[-1] > MAX_WIDTH:
                    continue
                matrix = env[out]  # [sum of input widths, d_out]: the region applied to the identity
                out.replace_all_uses_with(emit(graph, aten.matmul.default, (joined, matrix), like=out))
                rewritten += 1
    if rewritten:
        finalize(mg)
        fold_constants(mg)
    return rewritten
