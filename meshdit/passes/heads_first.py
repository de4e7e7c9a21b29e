"""Per-head work in heads-first layout: move attention's permute to [B, H, N, D] up to the head reshape.

Flux and Mochi write their q/k norms and RoPE on [B, N, H, D] (diffusers' processors view the projection as heads,
normalise and rotate, then let attention transpose):

    linear -> reshape [B, N, H, D] -> rms_norm(D) -> RoPE (x * cos + (x @ M) * sin, table [N, 1, D]) -> permute(0, 2, 1, 3)

On device the second-last dim is tiled: H heads per device (3 to 24) pad to 32 rows, so every op between the
reshape and the permute moves 1.3 to 10 times its bytes (Flux.1-dev on T3K: a third of its DRAM traffic was that
padding). Every op in such a region treats the dims before the last one alike (a norm or x @ M over the last dim,
elementwise ops with tables that broadcast, slices and concatenations of the last dim), so the permute commutes
with it: the region is rebuilt after one permute of its input, tables permuted the same way (folded: done once on
host). Then N, not H, is the tiled row dim, and the lowering sees TT-DiT's linear -> head split -> per-head ops
(lowering/rules/heads.py fuses QKV there).
"""

from __future__ import annotations

import torch
import torch.fx as fx

from ..ir.graph import ModelGraph, emit, finalize, is_const, shape_of
from ..ir.op_classes import BINARY, NORMS, PER_HEAD, UNARY
from .fold import fold_constants

aten = torch.ops.aten
PERM = [0, 2, 1, 3]  # its own inverse: [B, N, H, D] <-> [B, H, N, D]
MAX_REGION = 64  # per-head work is a norm and a RoPE: a few dozen ops; a longer walk has left the attention


def _is_heads_permute(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is aten.permute.default and list(node.args[1]) == PERM and \
        len(shape_of(node)) == 4


def _is_entry(node, heads: int) -> bool:
    """A reshape viewing [B, N, H * D] as `heads` heads [B, N, H, D]: where the region starts."""
    if not isinstance(node, fx.Node) or node.op != "call_function" or node.target is not aten.reshape.default:
        return False
    src, out = shape_of(node.args[0]), shape_of(node)
    return len(src) == 3 and len(out) == 4 and list(out[:2]) == list(src[:2]) and out[2] == heads and \
        out[2] * out[3] == src[2]


def _carries_heads(node, heads: int) -> bool:
    return isinstance(node, fx.Node) and isinstance(node.meta.get("val"), torch.Tensor) and \
        len(shape_of(node)) == 4 and shape_of(node)[2] == heads


def _commutes(node: fx.Node, inside) -> bool:
    """`node` treats the dims before the last alike, so permuting those dims before it equals permuting after.
    `inside(a)`: a is a region value (else a table from outside, or a scalar)."""
    t, args = node.target, node.args
    tensors = node.all_input_nodes
    if t not in PER_HEAD and t is not aten.matmul.default:
        return False
    if t in UNARY:
        return inside(args[0])
    if t in BINARY:
        # an operand from outside (a table) broadcasts against [B, N, H, D]; permuted alike it broadcasts against
        # [B, H, N, D]
        return any(inside(a) for a in tensors) and all(inside(a) or len(shape_of(a)) <= 4 for a in tensors)
    if t in NORMS:
        return inside(args[0]) and len(args[1]) == 1 and all(is_const(a) for a in tensors[1:])
    if t is aten.matmul.default:
        return inside(args[0]) and is_const(args[1]) and len(shape_of(args[1])) == 2
    if t is aten.slice.Tensor:
        return inside(args[0])
    if t is aten.cat.default:
        return all(inside(a) for a in args[0])
    return False


def _region(permute: fx.Node):
    """(entries, nodes) between head reshapes and `permute`: the values of shape [B, N, H, *] it is computed from,
    or None when some op does not commute with it, a value inside is read outside, or the walk leaves the heads."""
    heads = shape_of(permute.args[0])[2]
    if heads == 1:
        return None  # [B, N, 1, D] is a table's shape, not a stream's heads
    nodes, entries, stack = set(), set(), [permute.args[0]]
    while stack:
        node = stack.pop()
        if node in nodes or node in entries:
            continue
        if _is_entry(node, heads):
            entries.add(node)
            continue
        if node.op != "call_function" or not _carries_heads(node, heads) or len(nodes) > MAX_REGION:
            return None
        nodes.add(node)
        stack.extend(a for a in node.all_input_nodes if _carries_heads(a, heads) and not is_const(a))
    inside = lambda a: a in nodes or a in entries  # noqa: E731
    if not nodes or not entries or not all(_commutes(n, inside) for n in nodes):
        return None
    for node in nodes | entries:  # every value is read inside the region only (the last one by the permute)
        if any(u not in nodes and u is not permute for u in node.users):
            return None
    return entries, nodes


def _table(graph, const: fx.Node, like: fx.Node) -> fx.Node:
    """A table that broadcasts against [B, N, H, D] (a constant, folded; or a run-time value, the same for every
    region that reads it, which common-subexpression elimination then computes once), permuted to broadcast against
    [B, H, N, D]."""
    shape = list(shape_of(const))
    if len(shape) < 4:
        const = emit(graph, aten.reshape.default, (const, [1] * (4 - len(shape)) + shape), like=like)
    return emit(graph, aten.permute.default, (const, PERM), like=like)


def _clone(graph, node: fx.Node, env: dict) -> fx.Node:
    t, args = node.target, list(node.args)
    value = lambda a: env[a] if a in env else _table(graph, a, node)  # noqa: E731
    if t is aten.slice.Tensor:
        dim = args[1] % 4
        return emit(graph, t, (env[args[0]], PERM[dim], *args[2:]), node.kwargs, like=node)
    if t is aten.cat.default:
        dim = (args[1] if len(args) > 1 else 0) % 4
        return emit(graph, t, ([env[a] for a in args[0]], PERM[dim]), node.kwargs, like=node)
    if t in NORMS or t is aten.matmul.default:  # weights act on the last dim, which stays last
        return emit(graph, t, (env[args[0]], *args[1:]), node.kwargs, like=node)
    return emit(graph, t, tuple(value(a) if isinstance(a, fx.Node) else a for a in args), node.kwargs, like=node)


def heads_first(mg: ModelGraph) -> int:
    """Rebuild every region between head reshapes and a heads permute in heads-first layout; returns how many."""
    graph = mg.gm.graph
    order = {node: i for i, node in enumerate(graph.nodes)}
    moved = 0
    for permute in [n for n in graph.nodes if _is_heads_permute(n)]:
        found = _region(permute)
        if found is None:
            continue
        entries, nodes = found
        env = {}
        for entry in sorted(entries, key=order.__getitem__):
            with graph.inserting_after(entry):
                env[entry] = emit(graph, aten.permute.default, (entry, PERM), like=permute)
        with graph.inserting_before(permute):
            for node in sorted(nodes, key=order.__getitem__):
                env[node] = _clone(graph, node, env)
        permute.replace_all_uses_with(env[permute.args[0]])
        moved += 1
    if moved:
        finalize(mg)
        fold_constants(mg)
    return moved
