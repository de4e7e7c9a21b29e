"""What the specialiser must know of the exported program before it walks it: which exported inputs are the
module's arguments and their values, which nodes depend on a run-time input, and which inputs must be static
because a data-dependent op reads them (their values are then baked into the program; specialize.py)."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from ..errors import SpecializationError

aten = torch.ops.aten

# ops whose output's shape (or, read on host, value) depends on their input's values
DATA_DEPENDENT = {
    aten.nonzero.default,
    aten.nonzero_numpy.default,
    aten.argwhere.default,
    aten.masked_select.default,
    aten._local_scalar_dense.default,
    aten.item.default,
    aten.repeat_interleave.Tensor,
    aten.repeat_interleave.self_Tensor,
    aten.unique_consecutive.default,
    aten._unique2.default,
}


def user_input_names(ep) -> list:
    return [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]


def user_inputs(ep, example_inputs: dict) -> dict:
    """Exported input name -> (example value, key path in the keyword arguments).

    torch.export flattens structured arguments (dicts such as PixArt's added_cond_kwargs, lists of tensors, tuples of
    rotary tables, lists of shape tuples) into one input per leaf, named after its path (`added_cond_kwargs_
    resolution`), in the order pytree flattens the keyword arguments; the same flattening gives each its value."""
    names = user_input_names(ep)
    leaves = pytree.tree_flatten_with_path(((), example_inputs))[0]
    if len(leaves) != len(names):
        raise SpecializationError(f"torch.export flattened the inputs into {len(names)} leaves ({names}) but the "
                                  f"example inputs have {len(leaves)}; pass every argument as a keyword")
    return {name: (value, path[1:]) for name, (path, value) in zip(names, leaves)}


def runtime_dependent(ep, static_names: set) -> set:
    """Nodes of the exported graph whose value depends on a run-time input (not on weights or static inputs only)."""
    names = set(user_input_names(ep)) - static_names
    runtime = {n for n in ep.graph.nodes if n.op == "placeholder" and n.name in names}
    for node in ep.graph.nodes:
        if node.op == "call_function" and any(a in runtime for a in node.all_input_nodes):
            runtime.add(node)
    return runtime


def data_dependent(node: fx.Node) -> bool:
    """An op whose output shape depends on values: the DATA_DEPENDENT ops, and indexing by a boolean mask."""
    if node.target in DATA_DEPENDENT:
        return True
    if getattr(node.target, "__name__", "") == "flex_attention":
        return True  # its mask is made dense from the values it reads (see flex_attention)
    if node.target is aten.index.Tensor and len(node.args) > 1:
        return any(isinstance(i, fx.Node) and getattr(i.meta.get("val"), "dtype", None) == torch.bool
                   for i in node.args[1])
    return False


def static_ancestors(ep: torch.export.ExportedProgram) -> set:
    """Module inputs upstream of a data-dependent op: these must be static."""
    user = set(user_input_names(ep))
    found: set = set()
    for module in ep.graph_module.modules():
        if not isinstance(module, fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op == "call_function" and data_dependent(node):
                # a flex attention's mask and score functions read their buffers and block mask, not q, k, v
                # and x.repeat_interleave(repeats) takes its shape from the repeats only
                if getattr(node.target, "__name__", "") == "flex_attention":
                    roots = [a for a in pytree.tree_leaves(list(node.args[4:])) if isinstance(a, fx.Node)]
                elif node.target is aten.repeat_interleave.self_Tensor:
                    roots = [node.args[1]]
                else:
                    roots = [node]
                stack, seen = roots, set()
                while stack:
                    cur = stack.pop()
                    if cur in seen:
                        continue
                    seen.add(cur)
                    if cur.op == "placeholder" and cur.name in user:
                        found.add(cur.name)
                    stack.extend(cur.all_input_nodes)
    return found
