"""Joint attention: two streams (image + prompt tokens) in one softmax, whole sequences on every device.

    ttnn.transformer.joint_scaled_dot_product_attention(q, k, v, joint q, joint k, joint v, joint_strategy="rear")
    [B, H, N, D] and [B, H, L, D] -> ([B, H, N, D], [B, H, L, D])
"""

from __future__ import annotations

from ...ir.sdpa import Pass
from ..builder import Builder
from .common import AttentionCall, head_padded, pad_head_dim, scale_kwargs, sdpa_program


def lower(b: Builder, call: AttentionCall, plan):
    q, length = b.local(call.main[0]), b.local(call.joint[0])[-2]
    keys, joint_keys = b.local(call.main[1])[-2], b.local(call.joint[1])[-2]
    values, scale, head_dim = pad_head_dim(b, call, [b.value_or_weight(t) for t in call.operands])
    # image and prompt queries against image and prompt keys, in one pass
    program = sdpa_program(b, "joint", q[0] * q[1], [q[2], length], [Pass((keys, joint_keys))], call.head_dim)
    kwargs = {"joint_strategy": "rear", "program_config": program, **scale_kwargs(b, scale)}
    if head_dim is None:
        return b.call("ttnn.transformer.joint_scaled_dot_product_attention", tuple(values), kwargs)
    shapes = [head_padded(b.local(call.node, i), head_dim) for i in range(2)]
    out, joint_out = b.call("ttnn.transformer.joint_scaled_dot_product_attention", tuple(values), kwargs,
                            shapes=[(shapes[0], call.dtype), (shapes[1], call.dtype)])
    return (b.slice_dim(out, shapes[0], -1, head_dim, call.dtype),
            b.slice_dim(joint_out, shapes[1], -1, head_dim, call.dtype))
