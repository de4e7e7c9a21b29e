"""Attention masks as ttnn's SDPA takes them.

ttnn.transformer.scaled_dot_product_attention reads an additive mask (0 where a key is attended, -inf where not) of
shape [batch, 1 or heads, q tokens, k tokens] exactly, tilized, with both token counts whole q/k chunks (32 without a
program config). Models hand torch's SDPA boolean or additive masks that broadcast ([B, 1, 1, Sk] over the queries,
[Sq, Sk] over the batch), on any token count. So:

    boolean            where(mask, 0, -inf)                 (a constant one: on host, as its weight transform)
    fewer dims         reshape to 4 dims
    broadcast dims     ttnn.repeat to [B, 1 or H, Sq, Sk]
    token counts       padded to whole tiles: padded keys -inf (never attended), padded queries 0 (their rows are
                       sliced off the output); q, k, v are zero-padded to match
"""

from __future__ import annotations

import torch

from ...ir.graph import is_const
from ...ir.tiles import tile_up
from ..builder import TTNN_DTYPE, Builder
from ..program_ir import Code
from ..weights import ADDITIVE_MASK, IDENTITY
from .common import AttentionCall


def device_mask(b: Builder, call: AttentionCall, q_shape, k_shape):
    """(mask value, padded q tokens, padded k tokens), or None when this mask cannot be given to the kernel (its
    heads are split by tp while the mask has all of them)."""
    mask = call.mask
    meta = mask.meta["val"]
    dtype = call.dtype  # the mask is read in the activation format
    batch, heads, sq, sk = q_shape[0], q_shape[1], q_shape[2], k_shape[2]
    local = list(b.arg_local(mask))  # a mask with a row per head is split with the heads (sharding/rules/attention.py)
    shape = [1] * (4 - meta.dim()) + local
    target = [batch, shape[1] if shape[1] == heads else 1, sq, sk]
    if shape[1] not in (1, heads) or any(s not in (1, t) for s, t in zip(shape, target)):
        return None
    boolean = meta.dtype in (torch.bool, torch.uint8)
    if is_const(mask):
        value = b.weight(mask, ADDITIVE_MASK if boolean else IDENTITY)
    else:
        value = b.arg(mask)
        if boolean:
            act = b.dtype_of(dtype)
            predicate = b.call("ttnn.typecast", (value, Code(TTNN_DTYPE[act])), shapes=(local, dtype))
            value = b.call("ttnn.where", (predicate, 0.0, float("-inf")), shapes=(local, dtype))
    if local != shape:
        value = b.call("ttnn.reshape", (value, shape), shapes=(shape, dtype))
    repeats = [t // s for s, t in zip(shape, target)]
    if any(r > 1 for r in repeats):
        value = b.call("ttnn.repeat", (value, repeats), shapes=(target, dtype))
    padded_q, padded_k = tile_up(sq), tile_up(sk)
    value = b.pad_dim(value, target, 3, padded_k, dtype, fill=float("-inf"))
    target = target[:3] + [padded_k]
    value = b.pad_dim(value, target, 2, padded_q, dtype)
    return value, padded_q, padded_k
