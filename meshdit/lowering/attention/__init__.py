"""Attention lowering: one module per strategy, behind one interface.

    lower(b, call: AttentionCall, plan: AttentionPlan) -> (output, joint output or None)

Sharding decides the strategy (sharding/rules/attention.py -> NodeSharding.attention); this package looks it up:
plain, joint, ring, ulysses, hybrid. A new strategy is one module here and one AttentionStrategy value.
A strategy returns None when it cannot lower this instance (a mask computed on device, a mask or causal attention
on a sharded sequence); the node then runs on host.
"""

from __future__ import annotations

import torch

from ...ir.graph import is_const
from ...ir.ops import joint_sdpa
from ...sharding.decisions import AttentionPlan, AttentionStrategy
from ..builder import Builder
from ..program_ir import Code
from ..registry import lowering
from . import hybrid, joint, plain, ring, ulysses
from .common import AttentionCall

aten = torch.ops.aten

STRATEGIES = {
    AttentionStrategy.PLAIN: plain.lower,
    AttentionStrategy.JOINT: joint.lower,
    AttentionStrategy.RING: ring.lower,
    AttentionStrategy.ULYSSES: ulysses.lower,
    AttentionStrategy.HYBRID: hybrid.lower,
}


def _lower(b: Builder, call: AttentionCall):
    plan = b.decision().attention or AttentionPlan.local(call.node)
    if plan.strategy not in (AttentionStrategy.PLAIN, AttentionStrategy.JOINT) and \
            (call.mask is not None or call.causal):
        return None  # the sequence-parallel kernels take neither a mask nor causal attention
    if b.act_dtype != "float32":
        return STRATEGIES[plan.strategy](b, call, plan)
    # ttnn's attention kernels take bfloat16/bfloat8_b only (sdpa_device_operation.cpp): in a float32 program the
    # operands are cast to bfloat16 and everything the strategy makes (padding, masks, K/V buffers) is bfloat16;
    # the outputs are cast back
    floating = [n for n in call.operands + ([call.mask] if call.mask is not None else [])
                if n.meta["val"].dtype.is_floating_point and not is_const(n)]  # constants upload at bfloat16
    saved = {n: b.values[n] for n in floating}
    try:
        for n in floating:
            b.values[n] = b.call("ttnn.typecast", (b.values[n], Code("ttnn.bfloat16")),
                                 shapes=(b.arg_local(n), n.meta["val"].dtype), dtype="bfloat16")
        b.act_dtype = "bfloat16"
        result = STRATEGIES[plan.strategy](b, call, plan)
    finally:
        b.act_dtype = "float32"
        b.values.update(saved)
    if result is None:
        return None
    out, joint_out = result
    return tuple(None if value is None else b.call("ttnn.typecast", (value, Code("ttnn.float32")),
                                                    shapes=(list(b.tensors[value.name].shape), call.dtype),
                                                    dtype="float32")
                 for value in (out, joint_out if call.joint else None))


@lowering(aten.scaled_dot_product_attention.default)
def sdpa(b: Builder, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
         enable_gqa=False):
    if dropout_p:
        return None
    # grouped-query attention (fewer K/V heads than Q heads) needs no flag: ttnn's SDPA maps each group of Q heads
    # to its K/V head when K/V have fewer heads, as torch does with enable_gqa
    result = _lower(b, AttentionCall(b.node, [query, key, value], None, scale, attn_mask, is_causal))
    return None if result is None else result[0]


@lowering(joint_sdpa)
def joint_attention(b: Builder, query, key, value, joint_query, joint_key, joint_value, scale=None,
                    joint_first=False):
    return _lower(b, AttentionCall(b.node, [query, key, value], [joint_query, joint_key, joint_value], scale))
