"""Common-subexpression elimination over the runtime graph and the constant recipe.

Repeated blocks recompute the same position tables and the same reshapes of them; without this every block would
own a copy of each folded table (Flux.1: 57 blocks x 2 tables of 75 MB each). Every op in an exported graph is
functional, so two calls with the same target and the same arguments are the same value.
"""

from __future__ import annotations

import torch.fx as fx

from ..ir.graph import ModelGraph, finalize


def _key(node: fx.Node):
    def freeze(a):
        if isinstance(a, (list, tuple)):
            return (type(a).__name__,) + tuple(freeze(x) for x in a)
        if isinstance(a, dict):
            return tuple(sorted((k, freeze(v)) for k, v in a.items()))
        if isinstance(a, fx.Node):
            return ("node", id(a))
        try:
            hash(a)
        except TypeError:
            return ("unhashable", id(a))
        return (type(a).__name__, a)

    return (node.target, freeze(node.args), freeze(node.kwargs))


def _cse_graph(graph: fx.Graph) -> int:
    seen: dict = {}
    merged = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        key = _key(node)
        if key in seen:
            node.replace_all_uses_with(seen[key])
            graph.erase_node(node)
            merged += 1
        else:
            seen[key] = node
    return merged


def eliminate_common_subexpressions(mg: ModelGraph) -> int:
    """Merge duplicate recipe computations, the constants they produce, then duplicate runtime ops."""
    merged = _cse_graph(mg.recipe.graph)
    output = next(n for n in mg.recipe.graph.nodes if n.op == "output")
    by_source: dict = {}
    placeholders = {n.meta["key"]: n for n in mg.placeholders("const")}
    keep_names, keep_nodes = [], []
    for name, rnode in zip(mg.recipe_outputs, output.args[0]):
        if rnode in by_source:
            survivor = placeholders[by_source[rnode]]
            placeholders[name].replace_all_uses_with(survivor)
            mg.gm.graph.erase_node(placeholders[name])
            del mg.constants[name]
            merged += 1
        else:
            by_source[rnode] = name
            keep_names.append(name)
            keep_nodes.append(rnode)
    mg.recipe_outputs = keep_names
    output.args = (tuple(keep_nodes),)
    merged += _cse_graph(mg.gm.graph)
    finalize(mg)
    return merged
