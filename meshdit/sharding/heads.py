"""Pad attention heads to a multiple of the tp factor, as TT-DiT does (SD3.5 Large: 38 heads -> 40 at tp 4).

For an attention whose head count H does not divide by tp, the q/k/v projections (and the joint stream's) get
zero rows for the extra heads, the output projection gets zero columns, and every value between them is
re-shaped from H to H' heads. A padded head has zero queries, keys and values (its per-head norms keep zeros at
zero), so its attention output is zero and the zero columns of the output projection drop it: the graph's value
does not change. Weight padding is folded into the constant recipe, so it is done once on host.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, node_location
from ..passes.fold import fold_constants
from ..ir.graph import ModelGraph, calls, emit, finalize, meta_of
from ..ir.ops import ATTENTION
from .trace import linears_back, linears_forward

aten = torch.ops.aten


def _region(attention, producers: set, consumers: set) -> set:
    """Nodes on the paths producers -> attention -> consumers (the values that carry the head dim)."""
    region, stack = set(), list(attention.all_input_nodes)
    while stack:
        node = stack.pop()
        if node in region or node in producers or node.op != "call_function":
            continue
        region.add(node)
        stack.extend(n for n in node.all_input_nodes if n.op != "placeholder")
    region.add(attention)
    stack = [attention]
    while stack:
        node = stack.pop()
        for user in node.users:
            if user in consumers or user in region:
                continue
            region.add(user)
            stack.append(user)
    return region


def pad_heads(mg: ModelGraph, tp: int) -> int:
    """Pad every attention's heads to a multiple of `tp`; returns how many attentions were padded."""
    graph = mg.gm.graph
    padded = 0
    counts: dict = {}
    for attention in calls(graph, *ATTENTION):
        heads, head_dim = attention.args[0].meta["val"].shape[1], attention.args[0].meta["val"].shape[-1]
        if heads % tp == 0:
            continue
        if heads < tp:
            raise ConfigError(
                f"tp{tp}: attention at {node_location(attention)} has {heads} heads, fewer than tp {tp}: padding "
                "would leave devices with only zero heads; choose a tp factor of at most the head count"
            )
        target = math.ceil(heads / tp) * tp
        width, new_width = heads * head_dim, target * head_dim
        inputs = attention.args[:6] if len(attention.args) >= 6 else attention.args[:3]
        producers = set().union(*(linears_back(a) for a in inputs))
        consumers = linears_forward(attention)
        bad = [p for p in producers if p.meta["val"].shape[-1] != width] + \
              [c for c in consumers if c.args[1].meta["val"].shape[-1] != width]
        if not producers or not consumers or bad:
            raise ConfigError(
                f"tp{tp}: attention at {node_location(attention)} has {heads} heads, which do not divide by tp "
                f"{tp}, and its projections are not plain per-head linears, so its heads cannot be padded"
            )
        region = _region(attention, producers, consumers)
        for lin in producers:  # zero rows: the extra heads' q, k, v are zero
            with graph.inserting_before(lin):
                w = emit(graph, aten.constant_pad_nd.default, (lin.args[1], [0, 0, 0, new_width - width], 0.0),
                         like=lin)
                args = [lin.args[0], w]
                if len(lin.args) > 2 and lin.args[2] is not None:
                    args.append(emit(graph, aten.constant_pad_nd.default, (lin.args[2], [0, new_width - width],
                                                                           0.0), like=lin))
            lin.args = tuple(args)
            lin.meta["val"] = lin.target(*meta_of(lin.args))
        for lin in consumers:  # zero columns: the extra heads' outputs are dropped
            with graph.inserting_before(lin):
                w = emit(graph, aten.constant_pad_nd.default, (lin.args[1], [0, new_width - width], 0.0), like=lin)
            lin.args = (lin.args[0], w) + tuple(lin.args[2:])
        for node in [n for n in graph.nodes if n in region]:
            if node.target is aten.reshape.default:
                node.args = (node.args[0], _pad_shape(list(node.args[1]), heads, head_dim, target,
                                                       node.args[0].meta["val"].numel()))
            else:
                _pad_per_head_operands(graph, node, region, heads, target)
            node.meta["val"] = node.target(*meta_of(node.args), **meta_of(node.kwargs))
        for lin in consumers:
            lin.meta["val"] = lin.target(*meta_of(lin.args))
        counts[(heads, target)] = counts.get((heads, target), 0) + 1
        padded += 1
    for (heads, target), count in counts.items():
        mg.notes.append(f"{count} attention(s): {heads} heads padded to {target} (zero heads) for tp{tp}")
    if padded:
        finalize(mg)
        fold_constants(mg)
    return padded


def _pad_per_head_operands(graph, node, region: set, heads: int, target: int) -> None:
    """Zero-pad operands from outside the head region that carry a per-head dim (Mochi's per-head rotary
    frequencies, say) where they broadcast against a padded value; the padded heads' values stay zero."""
    padded_shapes = [a.meta["val"].shape for a in node.all_input_nodes
                     if a in region and hasattr(a.meta["val"], "shape")]
    args = list(node.args)
    for index, arg in enumerate(args):
        if not hasattr(arg, "meta") or arg in region or not hasattr(arg.meta.get("val"), "shape"):
            continue
        shape = arg.meta["val"].shape
        for offset in range(1, len(shape) + 1):  # broadcasting aligns dims from the right
            if shape[-offset] == heads and any(len(p) >= offset and p[-offset] == target for p in padded_shapes):
                with graph.inserting_before(node):
                    args[index] = emit(graph, aten.constant_pad_nd.default,
                                       (arg, [0, 0] * (offset - 1) + [0, target - heads], 0.0), like=arg)
                break
    node.args = tuple(args)


def _pad_shape(shape: list, heads: int, head_dim: int, target: int, numel: int) -> list:
    """A reshape target with its head dim (or the merged heads x head_dim dim) widened to `target` heads, so that
    it holds the (already padded) input's `numel` elements."""
    candidates = [i for i, size in enumerate(shape) if size == heads and i + 1 < len(shape) and shape[i + 1] == head_dim]
    candidates += [i for i, size in enumerate(shape) if size == heads * head_dim]
    candidates += [i for i, size in enumerate(shape) if size == heads]  # e.g. [.., heads, head_dim / 2, 2]
    for i in candidates:
        widened = shape[:i] + [shape[i] // heads * target] + shape[i + 1:]
        if math.prod(widened) == numel:
            return widened
    return shape
