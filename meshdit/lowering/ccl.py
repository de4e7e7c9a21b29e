"""Collectives: sharding's graph collectives lowered to ttnn's async CCLs, as TT-DiT issues them.

Each async CCL synchronises through global semaphores; the program's semaphore manager (`ccl`, made once per
(sub)mesh in make_configs) hands out the next set for a kind and mesh axis, rotating between two sets as TT-DiT's
CCLManager does, so a CCL never waits on a semaphore the previous one may still be resetting. All-gathers write
into persistent output buffers assigned after lowering (lowering/buffers.py).

Every CCL uses all the ethernet links to a neighbour the system has (Builder.system: cost/systems.py, the one
home of that fact; the cost model reads the emitted num_links back).

Sequence shards are pieces of a sequence zero-padded at its end (sharding/placement.py MeshAxes): a cut pads the
piece first, and the last gather of a sequence is cut back to the logical tokens.
"""

from __future__ import annotations

from ..ir import ops as graph_ops
from ..ir.graph import is_const
from ..ir.tiles import TILE
from .builder import Builder
from .program_ir import Code
from .registry import lowering

LINEAR = Code("ttnn.Topology.Linear")


def all_gather_async(b: Builder, value, dim: int, axis: int, shapes=None, dtype=None):
    kwargs = {"dim": dim, "cluster_axis": axis, "mesh_device": Code("device"), "topology": LINEAR,
              "multi_device_global_semaphore": b.semaphores("all_gather", axis), "num_links": b.system.ccl_links,
              "barrier_semaphore": b.semaphores("barrier", axis)}
    return b.call("ttnn.experimental.all_gather_async", (value,), kwargs, shapes=shapes, dtype=dtype)


def reduce_scatter_async(b: Builder, value, dim: int, axis: int):
    kwargs = {"dim": dim, "multi_device_global_semaphore": b.semaphores("reduce_scatter", axis),
              "barrier_semaphore": b.semaphores("barrier", axis), "num_links": b.system.ccl_links,
              "cluster_axis": axis, "topology": LINEAR}
    return b.call("ttnn.experimental.reduce_scatter_minimal_async", (value,), kwargs)


def all_reduce_async(b: Builder, value, axis: int):
    kwargs = {"cluster_axis": axis, "mesh_device": Code("device"),
              "barrier_semaphores": b.semaphores("all_reduce_barriers", axis),
              "rs_global_semaphores": b.semaphores("reduce_scatter", axis),
              "ag_global_semaphores": b.semaphores("all_gather", axis),
              "math_op": Code("ttnn.ReduceType.Sum"), "topology": LINEAR, "num_links": b.system.ccl_links}
    return b.call("ttnn.experimental.all_reduce_async", (value,), kwargs)


def _pad_for_cut(b: Builder, value, x, dim: int, axis: int):
    """`value` (the input `x` of the collective being lowered) zero-padded so that cutting `dim` over `axis` gives
    the pieces the collective's output holds."""
    piece = b.arg_local(x)
    target = b.mesh_axes.pad_before_cut(piece, b.local(b.node), dim, axis)
    return value if target is None else b.pad_dim(value, list(piece), dim, target, x.meta["val"].dtype)


@lowering(graph_ops.all_gather)
def all_gather(b: Builder, x, dim, axis):
    dim %= len(b.local(x))
    gathered, logical = b.mesh_axes.cut_after_gather(b.local(x), b.local(b.node), dim, axis)
    shape = list(b.local(b.node))
    shape[dim] = gathered
    dtype = b.node.meta["val"].dtype
    # [.., n / devices, ..] per device -> [.., n, ..]
    out = all_gather_async(b, b.arg(x), dim, axis, shapes=(shape, dtype))
    return out if logical is None else b.slice_dim(out, shape, dim, logical, dtype)


@lowering(graph_ops.reduce_scatter)
def reduce_scatter(b: Builder, x, dim, axis):
    dim %= len(b.local(x))
    # a pending sum [.., n, ..] on every device -> its sum, [.., n / devices, ..] per device
    return reduce_scatter_async(b, _pad_for_cut(b, b.arg(x), x, dim, axis), dim, axis)


@lowering(graph_ops.all_reduce)
def all_reduce(b: Builder, x, axis):
    # a pending sum on every device -> its sum on every device (same shape)
    return all_reduce_async(b, b.arg(x), axis)


@lowering(graph_ops.mesh_partition)
def mesh_partition(b: Builder, x, dim, axis):
    dim %= len(b.local(x))
    # [.., n, ..] on every device -> each device keeps its own [.., n / devices, ..]; no data moves
    value = _pad_for_cut(b, b.weight(x) if is_const(x) else b.arg(x), x, dim, axis)
    piece = b.local(b.node)
    if dim >= len(piece) - 2 and piece[dim] % TILE:
        # ttnn partitions a tiled tensor's rows and columns only into whole 32-wide tiles ("height/width begin index
        # aligned to tiles"): untilize, partition, tilize again (a row-major tensor cuts anywhere)
        dtype = b.node.meta["val"].dtype
        whole = list(b.arg_local(x))
        whole[dim] = piece[dim] * b.mesh_shape[axis]
        rows = b.call("ttnn.to_layout", (value, Code("ttnn.ROW_MAJOR_LAYOUT")), shapes=(whole, dtype),
                      layout="ROW_MAJOR")
        cut = b.call("ttnn.mesh_partition", (rows, dim), {"cluster_axis": axis}, shapes=(piece, dtype),
                     layout="ROW_MAJOR")
        return b.call("ttnn.to_layout", (cut, Code("ttnn.TILE_LAYOUT")))
    return b.call("ttnn.mesh_partition", (value, dim), {"cluster_axis": axis})
