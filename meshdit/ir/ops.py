"""meshdit's own graph ops: operations ATen has no single op for, which the passes and sharding insert.

Each is a plain torch function, so a rewritten graph still runs in torch and every pass can be checked by running
the graph before and after it; lowering maps each to TT-NN ops.

  joint_sdpa      attention over the union of two token streams (the passes fuse it from attention over a cat)
  all_gather, reduce_scatter, all_reduce, mesh_partition
                  collectives (sharding inserts them where a consumer needs another placement). Their torch value is
                  their input: in the global view a collective changes where data lives, not what it is, so a
                  sharded graph still runs in torch and must match the unsharded one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def joint_sdpa(query, key, value, joint_query, joint_key, joint_value, scale=None, joint_first=False):
    """Attention over the union of two token streams (image and prompt tokens, say), as one softmax.

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


ATTENTION = frozenset({aten.scaled_dot_product_attention.default, joint_sdpa})


def all_gather(x, dim: int, axis: int):
    """S(dim) -> R on mesh axis `axis`."""
    return x


def reduce_scatter(x, dim: int, axis: int):
    """P -> S(dim) on mesh axis `axis`."""
    return x


def all_reduce(x, axis: int):
    """P -> R on mesh axis `axis`."""
    return x


def mesh_partition(x, dim: int, axis: int):
    """R -> S(dim) on mesh axis `axis`: each device keeps its own chunk, no data moves."""
    return x


COLLECTIVES = frozenset({all_gather, reduce_scatter, all_reduce, mesh_partition})
