"""Plain attention: one stream, the whole sequence on every device (heads may be split by tp).

    ttnn.transformer.scaled_dot_product_attention(q, k, v, attn_mask=..., is_causal=...)   [B, H, N, D] each
"""

from __future__ import annotations

import torch

from ...ir.graph import is_const
from ..builder import Builder
from ..weights import ADDITIVE_MASK, IDENTITY
from .common import AttentionCall, head_padded, pad_head_dim, scale_kwargs


def lower(b: Builder, call: AttentionCall, plan):
    kwargs = {"is_causal": bool(call.causal)}
    if call.mask is not None:
        if not is_const(call.mask):
            return None  # a mask computed on device: not lowered yet (runs on host)
        kwargs["attn_mask"] = b.weight(call.mask, ADDITIVE_MASK if call.mask.meta["val"].dtype == torch.bool
                                       else IDENTITY)
    values, scale, head_dim = pad_head_dim(b, call, [b.arg(t) for t in call.main])
    kwargs.update(scale_kwargs(b, scale))
    if head_dim is None:
        return b.call("ttnn.transformer.scaled_dot_product_attention", tuple(values), kwargs), None
    shape = head_padded(b.local(call.node), head_dim)
    out = b.call("ttnn.transformer.scaled_dot_product_attention", tuple(values), kwargs, shapes=(shape, call.dtype))
    return b.slice_dim(out, shape, -1, head_dim, call.dtype), None
