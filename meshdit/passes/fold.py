"""Fold nodes whose inputs are all constants into the constant recipe.

The specialiser folds what the exported graph computes from weights alone; later rewrites (a patchify conv
becoming a linear, say) create new weight-only nodes, which this pass moves out of the runtime graph too, so the
device never recomputes a weight transform.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from ..ir.graph import ConstantSpec, ModelGraph, finalize

aten = torch.ops.aten
# ops with no tensor inputs that are constants (made in the forward, often to be filled in place first)
FACTORIES = {aten.full.default, aten.zeros.default, aten.ones.default, aten.arange.default, aten.arange.start,
             aten.arange.start_step, aten.scalar_tensor.default, aten.eye.default}


def _recipe_node_for(mg: ModelGraph, placeholder: fx.Node) -> fx.Node:
    """The recipe node computing a constant placeholder of the runtime graph (created on demand)."""
    spec: ConstantSpec = mg.constants[placeholder.meta["key"]]
    rgraph = mg.recipe.graph
    output = next(n for n in rgraph.nodes if n.op == "output")
    if spec.source is None:
        return output.args[0][mg.recipe_outputs.index(spec.name)]
    for node in rgraph.nodes:
        if node.op == "placeholder" and node.meta.get("recipe_key") == ("state", spec.source):
            return node
    first = next(n for n in rgraph.nodes if n.op != "placeholder")
    with rgraph.inserting_before(first):
        node = rgraph.placeholder("r_" + spec.name)
    node.meta["recipe_key"] = ("state", spec.source)
    node.meta["val"] = placeholder.meta["val"]
    return node


def _sync_recipe_inputs(mg: ModelGraph) -> None:
    mg.recipe_inputs = [n.meta["recipe_key"] for n in mg.recipe.graph.nodes if n.op == "placeholder"]


def fold_constants(mg: ModelGraph) -> int:
    """Move every call whose tensor inputs are all constant placeholders into the recipe; returns the count."""
    graph = mg.gm.graph
    rgraph = mg.recipe.graph
    output = next(n for n in rgraph.nodes if n.op == "output")
    folded = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        inputs = node.all_input_nodes
        if (not inputs and node.target not in FACTORIES) or any(n.op != "placeholder" or n.meta["kind"] != "const" for n in inputs):
            continue
        if not isinstance(node.meta.get("val"), torch.Tensor):
            continue
        mapping = {n: _recipe_node_for(mg, n) for n in inputs}
        with rgraph.inserting_before(output):
            rnode = rgraph.call_function(node.target, pytree.tree_map(lambda a: mapping.get(a, a), node.args),
                                         pytree.tree_map(lambda a: mapping.get(a, a), node.kwargs))
        rnode.meta["val"] = node.meta["val"]
        values = [mg.constants[n.meta["key"]].value for n in inputs]
        value = None
        if all(v is not None for v in values):
            env = {n: mg.constants[n.meta["key"]].value for n in inputs}
            value = node.target(*pytree.tree_map(lambda a: env.get(a, a), node.args),
                                **pytree.tree_map(lambda a: env.get(a, a), node.kwargs))
        sources = {mg.constants[n.meta["key"]].source for n in inputs}
        if len(inputs) == 1 and None not in sources:  # a transform of one parameter: name it after the parameter
            name = f"{sources.pop()}:{getattr(node.target, '__name__', 'fold').split('.')[0]}"
        else:
            name = node.name if node.name.startswith("folded_") else f"folded_{node.name}"
        while name in mg.constants:
            name += "_"
        meta = node.meta["val"]
        mg.constants[name] = ConstantSpec(name, tuple(meta.shape), meta.dtype, None, value)
        mg.recipe_outputs.append(name)
        output.args = (tuple(output.args[0]) + (rnode,),)
        first_op = next(n for n in graph.nodes if n.op != "placeholder")
        with graph.inserting_before(first_op):
            placeholder = graph.placeholder("".join(ch if ch.isalnum() else "_" for ch in name))
        placeholder.meta.update(kind="const", key=name, val=meta)
        node.replace_all_uses_with(placeholder)
        graph.erase_node(node)
        folded += 1
    if folded:
        prune_constants(mg)
        finalize(mg)
    return folded


def prune_constants(mg: ModelGraph) -> None:
    """Drop constants no runtime node uses, and recipe work that only served them."""
    graph = mg.gm.graph
    for node in list(graph.nodes):
        if node.op == "placeholder" and node.meta["kind"] == "const" and not node.users:
            del mg.constants[node.meta["key"]]
            graph.erase_node(node)
    rgraph = mg.recipe.graph
    output = next(n for n in rgraph.nodes if n.op == "output")
    keep = [(name, node) for name, node in zip(mg.recipe_outputs, output.args[0]) if name in mg.constants]
    mg.recipe_outputs = [name for name, _ in keep]
    output.args = (tuple(node for _, node in keep),)
    rgraph.eliminate_dead_code()
    for node in list(rgraph.nodes):
        if node.op == "placeholder" and not node.users:
            rgraph.erase_node(node)
    _sync_recipe_inputs(mg)
    mg.recipe.recompile()
