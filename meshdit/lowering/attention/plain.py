"""Plain attention: one stream, the whole sequence on every device (heads may be split by tp).

    ttnn.transformer.scaled_dot_product_attention(q, k, v, attn_mask=..., is_causal=...)   [B, H, N, D] each

A mask (constant or computed on device) is given as ttnn takes it (attention/mask.py); its q/k/v token counts are
then padded to whole tiles and the output cut back.
"""

from __future__ import annotations

from ...ir.sdpa import Pass
from ..builder import Builder
from .common import AttentionCall, head_padded, pad_head_dim, scale_kwargs, sdpa_program
from .mask import device_mask


def lower(b: Builder, call: AttentionCall, plan):
    kwargs = {"is_causal": bool(call.causal)}
    values, scale, head_dim = pad_head_dim(b, call, [b.value_or_weight(t) for t in call.main])
    shapes = [head_padded(b.local(t), head_dim) for t in call.main]
    out_shape = head_padded(b.local(call.node), head_dim)
    tokens, keys = out_shape[2], shapes[1][2]
    if call.mask is not None:
        masked = device_mask(b, call, shapes[0], shapes[1])
        if masked is None:
            return None
        kwargs["attn_mask"], padded_q, padded_k = masked
        values = [b.pad_dim(v, s, 2, n, call.dtype) for v, s, n in zip(values, shapes, (padded_q, padded_k, padded_k))]
        out_shape, keys = out_shape[:2] + [padded_q] + out_shape[3:], padded_k
    kwargs.update(scale_kwargs(b, scale))
    # with a mask, the chunks must divide its padded q and k lengths (ttnn's check, runtime/sim/attention.py)
    kwargs["program_config"] = sdpa_program(b, "sdpa", out_shape[0] * out_shape[1], [out_shape[2]], [Pass((keys,))],
                                            out_shape[3], masked=call.mask is not None)
    if head_dim is None and out_shape[2] == tokens:
        return b.call("ttnn.transformer.scaled_dot_product_attention", tuple(values), kwargs), None
    out = b.call("ttnn.transformer.scaled_dot_product_attention", tuple(values), kwargs, shapes=(out_shape, call.dtype))
    out = b.slice_dim(out, out_shape, 2, tokens, call.dtype)
    out_shape = out_shape[:2] + [tokens] + out_shape[3:]
    return (b.slice_dim(out, out_shape, -1, head_dim, call.dtype) if head_dim is not None else out), None
