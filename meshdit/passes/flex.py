"""flex_attention (a higher-order op) as scaled_dot_product_attention with a constant mask.

Specialisation (passes/specialize.py) hands each flex_attention here: its mask function, evaluated at every (batch,
head, query, key) on the static values it reads, gives the dense boolean mask; a score_mod must leave the scores as
they are (one that changes them has no SDPA form). The block tables the model built for the flex kernel (under vmap)
are never computed: `only_build_block_masks` names the nodes that serve only them, and specialisation skips them.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from ..errors import SpecializationError, node_location
from .mutations import _mutates_first_argument

aten = torch.ops.aten


def flex_as_sdpa(spec, node, args):
    """The node's value for the specialiser `spec`: an SDPA node in its graph with the dense mask as a constant
    (a tuple of Vals: the output, and no log-sum-exp or max)."""
    from .specialize import Val, _is_val  # (specialize calls here: imported when first used)

    q, k, v, score_mod, block_mask, scale = args[:6]
    score_buffers = list(args[7]) if len(args) > 7 else []
    mask_buffers = list(args[8]) if len(args) > 8 else []
    where = node_location(node)
    if not all(_is_val(t) and t.kind == "runtime" for t in (q, k, v)):
        raise SpecializationError(f"flex_attention at {where}: query, key and value must be computed at run time")
    for buffer in score_buffers + mask_buffers:
        if _is_val(buffer) and (buffer.kind != "const" or buffer.value is None):
            raise SpecializationError(f"flex_attention at {where} reads a run-time tensor in its mask or score "
                                      "function; pass the inputs it is computed from in static_inputs")
    score_values = [b.value if _is_val(b) else b for b in score_buffers]
    mask_values = [b.value if _is_val(b) else b for b in mask_buffers]
    batch, heads, queries = q.meta.shape[:3]
    keys = k.meta.shape[-2]
    index = [torch.arange(n).reshape([n if i == d else 1 for i in range(4)])
             for d, n in enumerate((batch, heads, queries, keys))]
    score_gm = score_mod.value if _is_val(score_mod) else score_mod
    scores = torch.randn(batch, heads, queries, keys)
    with torch.no_grad():
        if not torch.equal(score_gm(scores, *index, *score_values), scores):
            raise SpecializationError(f"flex_attention at {where} has a score_mod that changes the scores; only "
                                      "masking (mask_mod) has an SDPA form on the device")
        mask_gm = block_mask[-1].value if _is_val(block_mask[-1]) else block_mask[-1]
        dense = torch.as_tensor(mask_gm(*index, *mask_values)).to(torch.bool).expand(batch, heads, queries, keys)
    if bool((dense == dense[:, :1]).all()):
        dense = dense[:, :1]  # the same for every head: broadcast over them
    kwargs = {"scale": scale.value if _is_val(scale) else scale}
    meta_mask = None
    if not bool(dense.all()):
        mask = spec.const_from_value(f"flex_mask_{node.name}", dense.contiguous())
        kwargs["attn_mask"], meta_mask = spec.const_node(mask, node.name), mask.meta
    meta = aten.scaled_dot_product_attention.default(q.meta, k.meta, v.meta, attn_mask=meta_mask,
                                                     scale=kwargs["scale"])
    new = spec.graph.call_function(aten.scaled_dot_product_attention.default, (q.node, k.node, v.node), kwargs)
    new.name = spec._unique(node.name)
    new.meta.update({key: node.meta[key] for key in ("stack_trace", "nn_module_stack") if key in node.meta})
    new.meta["val"] = meta
    return Val("const", (Val("runtime", meta, node=new), None, None), None)


def only_build_block_masks(graph: fx.Graph) -> set:
    """Nodes whose values serve only as a flex attention's block mask (its sparse block tables, built under vmap):
    flex_attention below evaluates the mask function itself, so these are never computed. Found as what the
    output does not need when the block tables are not read (in-place writes into needed values are needed)."""
    from .specialize import ASSERTIONS

    flex = [n for n in graph.nodes if getattr(n.target, "__name__", "") == "flex_attention"]
    if not flex:
        return set()
    tables = {id(user): set(pytree.tree_leaves(list(user.args[4][:-1]))) for user in flex}
    needed: set = set()

    def need(start):
        stack = [start]
        while stack:
            n = stack.pop()
            if n in needed:
                continue
            needed.add(n)
            skip = tables.get(id(n), set())
            stack.extend(a for a in n.all_input_nodes if a not in skip)

    need(next(n for n in graph.nodes if n.op == "output"))
    for node in graph.nodes:
        if node.target in ASSERTIONS:
            need(node)
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            if node not in needed and node.op == "call_function" and _mutates_first_argument(node.target):
                base = node.args[0]
                while isinstance(base, fx.Node) and base.op == "call_function" and base not in needed and \
                        base.all_input_nodes:
                    base = base.all_input_nodes[0]
                if base in needed:
                    need(node)
                    changed = True
    return {n for n in graph.nodes if n.op == "call_function" and n not in needed}
