"""Ulysses attention: sequence shards become head shards by an all-to-all on a mesh axis, each device attends over
the whole sequence on its heads, and an all-to-all turns the output back into sequence shards.

    q, k, v   [B, H, N/u, D] -> all_to_all (gather tokens, split heads) -> [B, H/u, N, D]
    attention over the logical N tokens on H/u heads (padding sliced off, then restored)
    output    [B, H/u, N, D] -> all_to_all (gather heads, split tokens) -> [B, H, N/u, D]
The replicated prompt stream [B, H, L, D] is cut by heads on device (mesh_partition) to join, and its output
gathered back over the axis. The hybrid (hybrid.py) runs ring attention between the two all-to-alls.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...ir.sdpa import Pass
from ..builder import Builder
from ..ccl import all_gather_async
from ..program_ir import Code
from .common import AttentionCall, head_padded, pad_head_dim, scale_kwargs, sdpa_program


@dataclass
class HeadShards:
    """q/k/v by heads after the all-to-all (and the prompt stream cut by heads), with their local shapes."""

    values: list  # [q, k, v] (+ [joint q, joint k, joint v])
    shapes: list  # local shapes of q, k, v (+ joint q): [B, H/u, N_padded, D_padded] (+ [B, H/u, L, D_padded])
    scale: float | None
    head_dim: int | None  # the logical head dim when it was padded to whole tiles, else None
    axis: int
    out_shape: list  # the attention output by heads, [B, H/u, N_padded, D_padded]
    joint_shape: list | None  # the joint output by heads, [B, H/u, L, D_padded]


def scatter_heads(b: Builder, call: AttentionCall, axis: int) -> HeadShards:
    degree = b.mesh_shape[axis]
    # a head dim that is not whole tiles is padded before the all-to-all and sliced off before the one back
    values, scale, head_dim = pad_head_dim(b, call, [b.value_or_weight(t) for t in call.operands])
    local = [head_padded(b.local(t), head_dim) for t in call.operands]

    def by_heads(shape):
        return [shape[0], shape[1] // degree, shape[2] * degree, shape[3]]

    out = []
    for value, shape in zip(values[:3], local[:3]):
        # [B, H, N/u, D] -> [B, H/u, N, D]: ttnn's all-to-all grows in_dim (tokens) and splits out_dim (heads)
        out.append(b.call("ttnn.experimental.all_to_all_async_generic", (value,),
                          {"in_dim": 2, "out_dim": 1, "cluster_axis": axis, "num_links": b.system.ccl_links,
                           "topology": Code("ttnn.Topology.Linear")},
                          shapes=(by_heads(shape), call.dtype)))
    shapes = [by_heads(s) for s in local[:3]]
    joint_shape = None
    if call.joint:
        for value, shape in zip(values[3:], local[3:]):
            # [B, H, L, D] on every device -> [B, H/u, L, D]: each keeps its own heads, no data moves
            cut = [shape[0], shape[1] // degree] + shape[2:]
            out.append(b.call("ttnn.mesh_partition", (value, 1), {"cluster_axis": axis}, shapes=(cut, call.dtype)))
        shapes.append([local[3][0], local[3][1] // degree] + local[3][2:])
        joint_shape = shapes[0][:2] + [local[3][2], local[2][-1]]
    out_shape = shapes[0][:3] + [local[2][-1]]
    return HeadShards(out, shapes, scale, head_dim, axis, out_shape, joint_shape)


def gather_heads(b: Builder, call: AttentionCall, shards: HeadShards, out, joint_out):
    """The attention output by heads back to sequence shards (and the joint output gathered over the axis)."""
    if shards.head_dim is not None:
        out = b.slice_dim(out, shards.out_shape, -1, shards.head_dim, call.dtype)
        if call.joint:
            joint_out = b.slice_dim(joint_out, shards.joint_shape, -1, shards.head_dim, call.dtype)
    # [B, H/u, N, D] -> [B, H, N/u, D]: heads gathered, tokens split again
    back = b.call("ttnn.experimental.all_to_all_async_generic", (out,),
                  {"in_dim": 1, "out_dim": 2, "cluster_axis": shards.axis, "num_links": b.system.ccl_links,
                   "topology": Code("ttnn.Topology.Linear")},
                  shapes=(b.local(call.node, 0 if call.joint else None), call.dtype))
    if not call.joint:
        return back, None
    # [B, H/u, L, D] -> [B, H, L, D]
    return back, all_gather_async(b, joint_out, 1, shards.axis, shapes=(b.local(call.node, 1), call.dtype))


def lower(b: Builder, call: AttentionCall, plan):
    shards = scatter_heads(b, call, plan.ulysses_axis)
    q, k, v = shards.values[:3]
    # After the all-to-all each device holds whole sequences, zero-padded at the end for the sequence shards:
    # attention runs on the logical tokens only (padded keys would take softmax weight), and its output is padded
    # back so the all-to-all returns whole-tile shards.
    padded, logical = shards.out_shape[2], call.main[0].meta["val"].shape[2]
    q, k, v = (b.slice_dim(t, shape, 2, logical, call.dtype) for t, shape in zip((q, k, v), shards.shapes))
    sliced = shards.out_shape[:2] + [logical, shards.out_shape[3]]
    kwargs = scale_kwargs(b, shards.scale)
    joint_out = None
    heads = shards.out_shape[0] * shards.out_shape[1]
    if call.joint:
        length = shards.joint_shape[2]
        program = sdpa_program(b, "joint", heads, [logical, length], [Pass((logical, length))], shards.out_shape[3])
        out, joint_out = b.call("ttnn.transformer.joint_scaled_dot_product_attention", (q, k, v, *shards.values[3:]),
                                {"joint_strategy": "rear", "program_config": program, **kwargs},
                                shapes=[(sliced, call.dtype), (shards.joint_shape, call.dtype)])
    else:
        program = sdpa_program(b, "sdpa", heads, [logical], [Pass((logical,))], shards.out_shape[3])
        out = b.call("ttnn.transformer.scaled_dot_product_attention", (q, k, v),
                     {"is_causal": False, "program_config": program, **kwargs}, shapes=(sliced, call.dtype))
    out = b.pad_dim(out, sliced, 2, padded, call.dtype)
    return gather_heads(b, call, shards, out, joint_out)
