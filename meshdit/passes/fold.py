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


class _RecipeIndex:
    """The recipe node computing each constant placeholder of the runtime graph (created on demand), indexed once
    per fold: looking each up by scanning the recipe made folding quadratic in the model's size."""

    def __init__(self, mg: ModelGraph):
        self.mg = mg
        self.rgraph = mg.recipe.graph
        self.output = next(n for n in self.rgraph.nodes if n.op == "output")
        self.outputs = list(self.output.args[0])
        self.position = {name: i for i, name in enumerate(mg.recipe_outputs)}
        self.state: dict = {}
        for n in self.rgraph.nodes:
            if n.op == "placeholder":
                self.state.setdefault(n.meta.get("recipe_key"), n)
        # the constant each recipe computation already gives, by what it computes: a weight two linears share, padded
        # the same way for each (sharding/heads.py pads per linear), is one constant, uploaded once
        self.computed = {_computation(r.target, r.args, r.kwargs): name
                         for name, r in zip(mg.recipe_outputs, self.outputs) if r.op == "call_function"}

    def node_for(self, placeholder: fx.Node) -> fx.Node:
        spec: ConstantSpec = self.mg.constants[placeholder.meta["key"]]
        if spec.source is None:
            return self.outputs[self.position[spec.name]]
        key = ("state", spec.source)
        if key not in self.state:
            first = next(n for n in self.rgraph.nodes if n.op != "placeholder")
            with self.rgraph.inserting_before(first):
                node = self.rgraph.placeholder("r_" + spec.name)
            node.meta["recipe_key"] = key
            node.meta["val"] = placeholder.meta["val"]
            self.state[key] = node
        return self.state[key]

    def add_output(self, name: str, rnode: fx.Node) -> None:
        self.position[name] = len(self.outputs)
        self.outputs.append(rnode)
        self.mg.recipe_outputs.append(name)
        self.computed.setdefault(_computation(rnode.target, rnode.args, rnode.kwargs), name)

    def commit(self) -> None:
        self.output.args = (tuple(self.outputs),)


def _computation(target, args, kwargs) -> tuple:
    """What a recipe call computes: its op and arguments (recipe nodes by name, unique in the recipe graph)."""
    return target, repr(args), repr(kwargs)


def _sync_recipe_inputs(mg: ModelGraph) -> None:
    mg.recipe_inputs = [n.meta["recipe_key"] for n in mg.recipe.graph.nodes if n.op == "placeholder"]


def fold_constants(mg: ModelGraph) -> int:
    """Move every call whose tensor inputs are all constant placeholders into the recipe; returns the count."""
    graph = mg.gm.graph
    recipe = _RecipeIndex(mg)
    first_op = next(n for n in graph.nodes if n.op != "placeholder")  # new placeholders go before it
    placeholders = {n.meta["key"]: n for n in graph.nodes if n.op == "placeholder" and n.meta.get("kind") == "const"}
    folded = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        inputs = node.all_input_nodes
        if (not inputs and node.target not in FACTORIES) or any(n.op != "placeholder" or n.meta["kind"] != "const" for n in inputs):
            continue
        if not isinstance(node.meta.get("val"), torch.Tensor):
            continue
        mapping = {n: recipe.node_for(n) for n in inputs}
        args = pytree.tree_map(lambda a: mapping.get(a, a), node.args)
        kwargs = pytree.tree_map(lambda a: mapping.get(a, a), node.kwargs)
        same = recipe.computed.get(_computation(node.target, args, kwargs))
        if same is not None and same in placeholders:  # already a constant: read that one
            node.replace_all_uses_with(placeholders[same])
            if node is first_op:
                first_op = node.next
            graph.erase_node(node)
            folded += 1
            continue
        with recipe.rgraph.inserting_before(recipe.output):
            rnode = recipe.rgraph.call_function(node.target, args, kwargs)
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
        recipe.add_output(name, rnode)
        with graph.inserting_before(first_op):
            placeholder = graph.placeholder("".join(ch if ch.isalnum() else "_" for ch in name))
        placeholder.meta.update(kind="const", key=name, val=meta)
        placeholders[name] = placeholder
        node.replace_all_uses_with(placeholder)
        if node is first_op:
            first_op = node.next
        graph.erase_node(node)
        folded += 1
    recipe.commit()
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
