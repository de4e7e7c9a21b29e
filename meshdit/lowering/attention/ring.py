"""Ring attention: the main stream is sequence-sharded on a mesh axis; K/V chunks rotate around it, the prompt
stream's K/V join once, and every device attends its own queries to the whole sequence.

    ttnn.transformer.ring_joint_scaled_dot_product_attention(q, k, v[, joint q, k, v], logical_n=N, ...)
    [B, H, N/ring, D] each (+ [B, H, L, D]) -> ([B, H, N/ring, D], [B, H, L, D], lse)
K and V are all-gathered around the ring inside the op, into persistent buffers [B, H, N, D]; keys at positions
>= logical_n (the zero padding that makes every shard whole tiles) are masked.
"""

from __future__ import annotations

import torch

from ...ir.sdpa import ring_passes
from ..builder import Builder
from ..program_ir import Code
from .common import AttentionCall, head_padded, pad_head_dim, scale_kwargs, sdpa_program


def lower(b: Builder, call: AttentionCall, plan):
    values = [b.value_or_weight(t) for t in call.operands]
    values, scale, head_dim = pad_head_dim(b, call, values)
    shapes = [head_padded(b.local(t), head_dim) for t in call.main + (call.joint[:1] if call.joint else [])]
    out, joint_out, _lse = ring_attention(b, call, plan.ring_axis, values, scale, shapes)
    if head_dim is not None:
        out = b.slice_dim(out, _out_shape(shapes), -1, head_dim, call.dtype)
        if call.joint:
            joint_out = b.slice_dim(joint_out, _joint_shape(shapes), -1, head_dim, call.dtype)
    return out, joint_out


def ring_attention(b: Builder, call: AttentionCall, axis: int, values: list, scale, shapes: list):
    """The ring op on `axis` over q/k/v `values` (and the joint ones) of local `shapes` [q, k, v(, joint q)]; in the
    hybrid these come out of the ulysses all-to-all, with fewer heads and more tokens. Returns (out, joint out, lse)
    at the padded head dim."""
    ring = b.mesh_shape[axis]
    joint = call.joint is not None
    q_local, k_local = shapes[0], shapes[1]
    gathered = k_local[:2] + [k_local[2] * ring] + k_local[3:]  # [B, H, N/ring, D] -> [B, H, N, D]
    key = "X".join(str(d) for d in gathered)
    b.config("RING_CCL_OFFSET", "ttnn.CoreCoord(0, DEVICE_GRID.y - 1)")
    # The gathered K/V (and the buffers) hold the padded sequence; logical_n (the graph's token count) masks keys
    # at positions >= N, so padding never enters a softmax.
    logical_n = call.main[1].meta["val"].shape[2]
    joint_len = shapes[3][2] if joint else 0
    # every ring step runs this device's queries (image and prompt) over one device's keys; the prompt's keys join
    # once; the kernel masks what the local keys, the prompt and logical_n leave of a last k chunk
    program = sdpa_program(b, "ring", q_local[0] * q_local[1], [q_local[2], joint_len],
                           ring_passes(k_local[2], joint_len, ring), q_local[3],
                           l1_k_lengths=[k_local[2], joint_len, logical_n])
    kwargs = {"persistent_output_buffer_k": b.buffer(f"RING_K_{key}", gathered, b.act_dtype),
              "persistent_output_buffer_v": b.buffer(f"RING_V_{key}", gathered, b.act_dtype),
              "joint_strategy": "rear", "logical_n": logical_n, "program_config": program, **scale_kwargs(b, scale),
              "dim": 2, "multi_device_global_semaphore": b.semaphores("ring", axis), "num_links": b.system.ccl_links,
              "cluster_axis": axis, "mesh_device": Code("device"), "topology": Code("ttnn.Topology.Linear"),
              "ccl_core_grid_offset": Code("RING_CCL_OFFSET")}
    out_shape = _out_shape(shapes)
    lse_shape = q_local[:2] + [q_local[2] + joint_len, 1]
    operands = tuple(values) if joint else tuple(values) + (None, None, None)
    return b.call("ttnn.transformer.ring_joint_scaled_dot_product_attention", operands, kwargs,
                  shapes=[(out_shape, call.dtype), (_joint_shape(shapes), call.dtype), (lse_shape, torch.float32)])


def _out_shape(shapes):
    return shapes[0][:-1] + [shapes[2][-1]]  # queries' tokens, values' head dim


def _joint_shape(shapes):
    return shapes[0][:2] + [shapes[3][2] if len(shapes) > 3 else 0, shapes[2][-1]]
