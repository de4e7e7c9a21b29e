"""Attention: sharded heads stay local; a sequence-sharded main stream picks a strategy.

Heads sharded on an axis (tp, or the inputs already split by heads): every device attends over its own heads.
Main stream sequence-sharded on a sequence axis: ring attention on the sp axis, the ulysses all-to-all on the
ulysses axis, both in the hybrid; the decision record names the strategy and its axes, and lowering has one
module per strategy (lowering/attention/). Anything else runs on whole tensors.
"""

from __future__ import annotations

import torch

from ...ir.ops import joint_sdpa
from ..decisions import AttentionPlan, AttentionStrategy
from ...ir.graph import shape_of
from ..placement import R, Shard
from . import OpOnAxis, sharding_rule

aten = torch.ops.aten

HEADS, TOKENS = Shard(1), Shard(2)  # of [batch, heads, tokens, head dim]


@sharding_rule(aten.scaled_dot_product_attention.default, joint_sdpa)
def attention(op: OpOnAxis):
    joint = op.node.target is joint_sdpa
    main = [op.args[k] for k in ("query", "key", "value")]
    prompt = [op.args[k] for k in ("joint_query", "joint_key", "joint_value")] if joint else []
    mask = None if joint else op.args.get("attn_mask")
    masks = {mask: R} if mask is not None else {}
    main_have = [op.placement(t) for t in main]
    if all(h == HEADS for h in main_have) or (op.axis == op.plan.tp_axis and HEADS in main_have):
        if mask is not None and len(shape_of(mask)) == 4 and shape_of(mask)[1] == shape_of(main[0])[1] > 1:
            masks = {mask: HEADS}  # a mask row per head: each device takes its heads' rows
        return {**{t: HEADS for t in main + prompt}, **masks}, ((HEADS, HEADS) if joint else HEADS)
    # the sequence-parallel kernels (ring, all-to-all) take neither a mask nor causal nor grouped-query attention,
    # and the ring needs as many keys per device as queries (ttnn: N_local_q <= N_local_kv)
    causal = not joint and op.args.get("is_causal")
    grouped = shape_of(main[1])[1] != shape_of(main[0])[1]  # grouped-query: the ring kernels take equal heads
    self_attention = shape_of(main[1])[2] == shape_of(main[0])[2]
    if op.on_sequence_axis and main_have[0] == TOKENS:
        if mask is None and not causal and not grouped and self_attention:
            _add_sequence_axis(op)
            reqs = {**{t: TOKENS for t in main}, **{t: R for t in prompt}, **masks}
            return reqs, ((TOKENS, R) if joint else TOKENS)
        if not joint and not causal:
            # Each device attends its own queries to every key: the keys and values whole on every device (a
            # cross-attention's prompt usually is already), a mask's query rows split with the queries. No
            # communication for the queries; the output stays sequence-sharded.
            if mask is not None and len(shape_of(mask)) >= 2 and shape_of(mask)[-2] == shape_of(main[0])[2] > 1:
                masks = {mask: Shard(len(shape_of(mask)) - 2)}
            return {main[0]: TOKENS, main[1]: R, main[2]: R, **masks}, TOKENS
    return {**{t: R for t in main + prompt}, **masks}, ((R, R) if joint else R)


def _add_sequence_axis(op: OpOnAxis) -> None:
    """Record that the main stream is sequence-sharded on this axis: the ulysses axis adds the all-to-all, any
    other sequence axis the ring; both make the hybrid."""
    current = op.decision.attention or AttentionPlan.local(op.node)
    ring = current.ring_axis if op.axis == op.plan.ulysses_axis else op.axis
    ulysses = op.axis if op.axis == op.plan.ulysses_axis else current.ulysses_axis
    strategy = (AttentionStrategy.HYBRID if ring is not None and ulysses is not None else
                AttentionStrategy.ULYSSES if ulysses is not None else AttentionStrategy.RING)
    op.decision.attention = AttentionPlan(strategy, ring, ulysses)
