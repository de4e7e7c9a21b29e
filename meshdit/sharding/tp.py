"""Tensor parallelism: rewrites that make local slicing exact, and each linear's role.

Roles come from the recognised patterns, never from model names:
  col  q/k/v projections (heads sharded, so attention runs on local heads), MLP up-projections (FFN width sharded),
       adaLN modulation linears (their small output is gathered, or with a sharded residual split into one linear
       per chunk, whose local piece is what the residual's shard reads);
  row  attention output projections and MLP down-projections: each device holds a slice of the input features, its
       product is a summand (a Partial), reduced once;
  rep  everything else (whole weights on every device).
Before roles are chosen: a linear whose output is cut into gated-MLP halves (or, with a sharded residual, into
adaLN's modulation chunks) becomes one linear per piece, and a linear over a channel concat becomes a sum of
linears, so that every device slices only its own part. After: a row-parallel bias is shared (bias / tp on every
device) or added once after the reduction.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from ..errors import ConfigError, node_location
from ..ir.graph import ModelGraph, calls, emit, is_const, shape_of
from ..ir.ops import ATTENTION, joint_sdpa
from .trace import linears_back, linears_forward

aten = torch.ops.aten


def split_sliced_linears(mg: ModelGraph, linears: set) -> dict:
    """linear(x, W, b) whose users all slice the last dim -> one linear per slice with sliced W and b. Returns the
    name of each linear split -> the names of its parts."""
    graph = mg.gm.graph
    parts: dict = {}
    for lin in calls(graph, aten.linear.default):
        if lin.name not in linears:
            continue
        users = list(lin.users)
        rank = len(shape_of(lin))
        if not users or not all(u.target is aten.slice.Tensor and u.args[1] % rank == rank - 1 for u in users):
            continue
        x, w = lin.args[0], lin.args[1]
        bias = lin.args[2] if len(lin.args) > 2 else None
        for user in users:
            lo, hi = user.args[2], user.args[3]
            with graph.inserting_before(user):
                w_part = emit(graph, aten.slice.Tensor, (w, 0, lo, hi), like=lin)
                b_part = emit(graph, aten.slice.Tensor, (bias, 0, lo, hi), like=lin) if bias is not None else None
                part = emit(graph, aten.linear.default, (x, w_part, b_part), like=lin)
            parts.setdefault(lin.name, []).append(part.name)
            user.replace_all_uses_with(part)
            graph.erase_node(user)
        graph.erase_node(lin)
    return parts


def split_concat_linears(mg: ModelGraph) -> int:
    """linear(cat([a, b], -1), W, bias) -> linear(a, W[:, :n]) + linear(b, W[:, n:]) (+ bias)."""
    graph = mg.gm.graph
    count = 0
    for lin in calls(graph, aten.linear.default):
        cat = lin.args[0]
        if not (isinstance(cat, fx.Node) and cat.target is aten.cat.default):
            continue
        parts, dim = cat.args[0], cat.args[1] if len(cat.args) > 1 else 0
        if dim % len(shape_of(cat)) != len(shape_of(cat)) - 1 or not is_const(lin.args[1]):
            continue
        w = lin.args[1]
        bias = lin.args[2] if len(lin.args) > 2 else None
        with graph.inserting_before(lin):
            total, start = None, 0
            for part in parts:
                width = shape_of(part)[-1]
                w_part = emit(graph, aten.slice.Tensor, (w, 1, start, start + width), like=lin)
                y = emit(graph, aten.linear.default, (part, w_part, None), like=lin)
                total = y if total is None else emit(graph, aten.add.Tensor, (total, y), like=lin)
                start += width
            if bias is not None:
                total = emit(graph, aten.add.Tensor, (total, bias), like=lin)
        lin.replace_all_uses_with(total)
        graph.erase_node(lin)
        count += 1
    return count


# node meta key: the tp factor a row-parallel linear's constant bias was divided by (each device adds its share)
BIAS_SHARED_OVER = "bias_shared_over"


def share_row_bias(mg: ModelGraph, rows: set, tp: int) -> None:
    """Row-parallel linear: every device would add the whole bias, tp times in the sum. A constant bias becomes
    bias / tp, added by every device inside its linear (exact for a power-of-two tp: the division only changes the
    exponent), so the sum holds it once and no op is spent on it; otherwise the bias is added after the reduction."""
    graph = mg.gm.graph
    exact = tp & (tp - 1) == 0
    for lin in [n for n in graph.nodes if n.op == "call_function" and n.name in rows]:
        if len(lin.args) < 3 or lin.args[2] is None:
            continue
        bias = lin.args[2]
        if exact and is_const(bias):
            with graph.inserting_before(lin):
                share = emit(graph, aten.mul.Tensor, (bias, 1.0 / tp), like=lin)  # folded into a constant
            lin.args = (lin.args[0], lin.args[1], share)
            lin.meta[BIAS_SHARED_OVER] = tp
            continue
        lin.args = (lin.args[0], lin.args[1], None)
        users = list(lin.users)
        with graph.inserting_after(lin):
            added = emit(graph, aten.add.Tensor, (lin, bias), like=lin)
        for user in users:
            user.replace_input_with(lin, added)


def choose_roles(mg: ModelGraph, tp: int) -> dict:
    """Linear node name -> col | row, from attention and the recognised MLP and adaLN patterns."""
    roles: dict = {}
    for node in mg.op_nodes():
        if node.target not in ATTENTION:
            continue
        heads = shape_of(node.args[0])[1]
        if heads % tp:
            raise ConfigError(
                f"tp{tp}: attention at {node_location(node)} has {heads} heads, which do not divide by tp {tp}; "
                "choose a tp factor that divides the head count"
            )
        inputs = node.args[:6] if node.target is joint_sdpa else node.args[:3]
        for arg in inputs:
            for lin in linears_back(arg):
                roles[lin.name] = "col"
        for lin in linears_forward(node):
            roles.setdefault(lin.name, "row")
    for pattern in mg.patterns:
        if pattern.kind == "mlp":
            roles.setdefault(pattern.nodes["up"], "col")
            if "up_gate" in pattern.nodes:
                roles.setdefault(pattern.nodes["up_gate"], "col")
            roles[pattern.nodes["down"]] = "row"
        elif pattern.kind == "adaln_modulation":
            roles.setdefault(pattern.nodes["linear"], "col")
    return roles
