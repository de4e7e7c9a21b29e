"""meshdit's own graph ops: fused operations ATen has no single op for.

Each is a plain torch function, so a rewritten graph still runs in torch and every pass can be checked by running
the graph before and after it. Lowering maps each to TT-NN ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def joint_sdpa(query, key, value, joint_query, joint_key, joint_value, scale=None, joint_first=False):
    """Attention over the union of two token streams (e.g. image and prompt tokens), as one softmax.

    Returns (main output, joint output): scaled_dot_product_attention on the concatenation of the streams along
    the sequence dim (-2), split back into the streams. `joint_first` records the order the model concatenated
    them in (key order does not change attention). Lowered to ttnn.transformer.joint_scaled_dot_product_attention
    (the ring variant under sequence parallelism).
    """
    parts = [(joint_query, joint_key, joint_value), (query, key, value)]
    if not joint_first:
        parts.reverse()
    q = torch.cat([p[0] for p in parts], dim=-2)
    k = torch.cat([p[1] for p in parts], dim=-2)
    v = torch.cat([p[2] for p in parts], dim=-2)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    n_joint = joint_query.shape[-2]
    if joint_first:
        return out[..., n_joint:, :], out[..., :n_joint, :]
    n_main = query.shape[-2]
    return out[..., :n_main, :], out[..., n_main:, :]


joint_sdpa.__meshdit_op__ = "joint_sdpa"
