"""meshdit's own graph ops: fused operations ATen has no single op for.

Each is a plain torch function, so a rewritten graph still runs in torch and every pass can be checked by running
the graph before and after it. Lowering maps each to TT-NN ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def joint_sdpa(query, key, value, joint_query, joint_key, joint_value, scale=None, joint_first=False):
    """Attention over the union of two token streams (e.g. image and prompt tokens), as one softmax.

    Equals scaled_dot_product_attention on the concatenation of the streams along the sequence dim (-2);
    the output is concatenated in the same order the model concatenated its inputs (`joint_first`: the joint
    stream came first). Lowered to ttnn.transformer.joint_scaled_dot_product_attention (ring variant under sp).
    """
    parts = [(joint_query, joint_key, joint_value), (query, key, value)]
    if not joint_first:
        parts.reverse()
    q = torch.cat([p[0] for p in parts], dim=-2)
    k = torch.cat([p[1] for p in parts], dim=-2)
    v = torch.cat([p[2] for p in parts], dim=-2)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


joint_sdpa.__meshdit_op__ = "joint_sdpa"
