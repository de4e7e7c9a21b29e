"""Heads-first attention, as TT-DiT emits it: one fused QKV linear and ttnn's head split before attention,
ttnn's head concat after it.

    linear(x, Wq) -> reshape [B, N, H, D] -> permute(0, 2, 1, 3) ─┐
    linear(x, Wk) -> reshape [B, N, H, D] -> permute(0, 2, 1, 3) ─┼─> (per-head norms) -> attention
    linear(x, Wv) -> reshape [B, N, H, D] -> permute(0, 2, 1, 3) ─┘
becomes
    ttnn.linear(x, W_qkv) -> ttnn.transformer.split_query_key_value_and_split_heads -> q, k, v as [B, H, N, D]
and
    attention output [B, H, N, D] -> permute(0, 2, 1, 3) -> reshape [B, N, H * D]
becomes
    ttnn.transformer.concatenate_heads.

Both are recognised from graph structure at lowering, per device (local shapes, after sharding). Per-head work
after the permute (norms, RoPE: passes/heads_first.py moves Flux's and Mochi's there from [B, N, H, D]) stays
between the split and attention. Where the pattern does not hold (a bias on only some projections, K/V from another
stream, head dims that are not whole tiles, which both ttnn ops refuse), the separate linears, reshapes and permutes
are emitted as before, and the plan's "fused at lowering" line says which attentions were fused and why the others
were not.
"""

from __future__ import annotations

import torch

from ...ir.graph import is_const
from ...ir.op_classes import LAYOUT, PER_HEAD
from ...ir.ops import ATTENTION
from ...ir.tiles import TILE
from ...sharding.placement import Shard
from ..builder import TTNN_DTYPE, Builder
from ..program_ir import Code
from ..weights import ROW, TRANSPOSE, heads_fused

aten = torch.ops.aten
HEADS_PERM = [0, 2, 1, 3]  # [B, N, H, D] <-> [B, H, N, D]


def _only_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].args[0] is node else None


def _heads_view(lin):
    """(reshape, permute) when the linear's output is only viewed as heads [B, N, H, D] and permuted to
    [B, H, N, D], else None."""
    reshape = _only_user(lin)
    if reshape is None or reshape.target is not aten.reshape.default:
        return None
    out, shape = list(lin.meta["val"].shape), list(reshape.meta["val"].shape)
    if len(out) != 3 or len(shape) != 4 or shape[:2] != out[:2] or shape[2] * shape[3] != out[2]:
        return None
    permute = _only_user(reshape)
    if permute is None or permute.target is not aten.permute.default or list(permute.args[1]) != HEADS_PERM:
        return None
    return reshape, permute


def _per_head(node) -> bool:
    """Work on one head's values at a time, which the head split can precede: norms and views, and RoPE's elementwise
    ops with tables, slices and concatenations of the head dim, x @ M with a constant M."""
    return node.target in PER_HEAD | LAYOUT or (node.target is aten.matmul.default and is_const(node.args[1]))


def _attention_slot(permute):
    """(attention node, argument index) the permuted heads reach, through per-head work only (passes/heads_first.py
    moves norms and RoPE after the permute); None when they reach anything else or several attention arguments."""
    slots, seen, stack = set(), set(), [permute]
    while stack:
        node = stack.pop()
        for user in node.users:
            if user.target in ATTENTION:
                slots.add((user, list(user.args).index(node)))
            elif not _per_head(user) or len(seen) > 64:
                return None
            elif user not in seen:
                seen.add(user)
                stack.append(user)
    return next(iter(slots)) if len(slots) == 1 else None


def qkv_group(b: Builder, lin):
    """The fused QKV projection `lin` belongs to, or (None, reason) when it stays three linears.

    Returns ((q, k, v) linears in attention order, their (reshape, permute) pairs), "" on a match."""
    x = lin.args[0]
    siblings = [u for u in x.users if u.target is aten.linear.default and u.args[0] is x]
    slots = {}
    for sib in siblings:
        view = _heads_view(sib)
        slot = _attention_slot(view[1]) if view else None
        if slot is not None:
            slots[sib] = (slot, view)
    if lin not in slots:
        return None, "its output is not only viewed as heads and fed to attention"
    attention, index = slots[lin][0]
    start = index - index % 3  # q, k, v of one stream are consecutive arguments (sdpa 0-2, joint 0-2 and 3-5)
    found, reason = _qkv_group(b, lin, slots, attention, start)
    key = (attention.name, start)
    if key not in b.fusion_seen:  # counted once per attention stream (each of its three linears asks)
        b.fusion_seen.add(key)
        b.fusions["fused QKV + split heads" if found else f"QKV kept as 3 linears ({reason})"] += 1
    return found, reason


def _qkv_group(b: Builder, lin, slots, attention, start):
    by_index = {s[0][1]: sib for sib, s in slots.items() if s[0][0] is attention}
    if any(start + i not in by_index for i in range(3)):
        return None, "q, k and v do not all reach attention as projection -> reshape -> permute(0, 2, 1, 3) of one "\
                     "input (per-head work such as norms or RoPE in [B, N, H, D], or K/V from another stream)"
    group = tuple(by_index[start + i] for i in range(3))
    weights, biases = [g.args[1] for g in group], [g.args[2] if len(g.args) > 2 else None for g in group]
    if not all(is_const(w) for w in weights) or len({tuple(w.meta["val"].shape) for w in weights}) != 1:
        return None, "its q, k, v weights are not constants of one shape"
    if any(bias is None for bias in biases) and any(bias is not None for bias in biases):
        return None, "only some of its q, k, v projections have a bias"
    if any(bias is not None and not is_const(bias) for bias in biases):
        return None, "its biases are computed"
    decisions = [b.decision(g) for g in group]
    if len({tuple(d.layout or ()) for d in decisions}) != 1 or \
            len({tuple(d.arg_layouts.get(w.name) or ()) for d, w in zip(decisions, weights)}) != 1:
        return None, "its q, k, v projections are sharded differently"
    if any(b.dtype_of(g.meta["val"].dtype, g) != b.dtype_of(lin.meta["val"].dtype, lin) for g in group):
        return None, "its q, k, v projections have different dtypes"
    heads = b.local(slots[lin][1][1])  # [B, H, N, D] per device
    if len(b.local(lin.args[0])) != 3:
        return None, "its input is not [B, N, C]"
    if heads[-1] % TILE:
        return None, f"its head dim {heads[-1]} is not whole {TILE}-wide tiles (ttnn's head split refuses it)"
    return (group, tuple(slots[g][1] for g in group)), ""


def fused_qkv(b: Builder, input, weight, bias):
    """Lower the linear being lowered, and its k/v siblings, as one fused QKV linear plus the head split; None when
    it does not belong to a fused group (qkv_group says why)."""
    lin = b.node
    found, _ = qkv_group(b, lin)
    if found is None:
        return None
    group, views = found
    weights = [g.args[1] for g in group]
    biases = [g.args[2] if len(g.args) > 2 else None for g in group]
    q_heads = b.local(views[0][1])  # [B, H, N, D] per device
    layout = b.decision(group[0]).arg_layouts.get(weights[0].name)
    # devices the output dim is cut over (column-parallel tp): each holds whole heads of q, k and v
    groups = 1
    for axis, placement in enumerate(layout or ()):
        if isinstance(placement, Shard) and placement.dim % 2 == 0:
            groups *= b.mesh_shape[axis]
    kwargs = {}
    owner = group[0]  # the linear whose sharding decision holds q's upload layouts (k's and v's are the same)
    fused_w = b.weight(weights[0], heads_fused(TRANSPOSE, groups), dtype=b.weight_dtype, more=tuple(weights[1:]),
                       owner=owner)
    if biases[0] is not None:
        kwargs["bias"] = b.weight(biases[0], heads_fused(ROW, groups), more=tuple(biases[1:]), owner=owner)
    kwargs.update(compute_kernel_config=b.config("MATMUL_CONFIG"), dtype=Code(TTNN_DTYPE[b.act_dtype]))
    dtype = lin.meta["val"].dtype
    local = list(b.local(lin))
    qkv = b.call("ttnn.linear", (b.arg(input), fused_w), kwargs, shapes=(local[:-1] + [3 * local[-1]], dtype))
    outs = b.call("ttnn.transformer.split_query_key_value_and_split_heads", (qkv,),
                  {"num_heads": q_heads[1], "transpose_key": False}, shapes=[(q_heads, dtype)] * 3)
    for g, (reshape, permute), out in zip(group, views, outs):
        for node in (g, reshape):
            if node is not lin:
                b.absorbed[node] = None  # read by nothing but the next node of the chain, absorbed too
        b.absorbed[permute] = out
    b.holds[qkv.name] = None  # q, k and v side by side: no graph node's value
    return qkv  # the value of `lin` itself: read by nobody but its reshape, which is absorbed


def merging_reshape(b: Builder, permute):
    """The reshape that merges the heads after `permute`, when the two are one ttnn.transformer.concatenate_heads:
    permute(0, 2, 1, 3) of [B, H, N, D] (D whole tiles) whose only reader reshapes it to [B, N, H * D]; else None."""
    input, dims = permute.args[0], permute.args[1]
    if list(dims) != HEADS_PERM or len(input.meta["val"].shape) != 4:
        return None
    reshape = _only_user(permute)
    if reshape is None or reshape.target is not aten.reshape.default:
        return None
    heads, merged = list(b.local(input)), list(b.local(reshape))
    if merged != [heads[0], heads[2], heads[1] * heads[3]] or heads[-1] % TILE:
        return None
    return reshape


def concatenate_heads(b: Builder, input, dims):
    """permute(0, 2, 1, 3) and the reshape merging the heads (merging_reshape): one
    ttnn.transformer.concatenate_heads, the reshape absorbed; None otherwise."""
    reshape = merging_reshape(b, b.node)
    if reshape is None:
        return None
    out = b.call("ttnn.transformer.concatenate_heads", (b.arg(input),),
                 shapes=(list(b.local(reshape)), reshape.meta["val"].dtype))
    b.absorbed[reshape] = out
    b.fusions["concatenate heads"] += 1
    return out


