"""Collectives: all_gather, reduce_scatter, all_reduce, their ttnn.experimental async variants, all_to_all, and
mesh_partition.

Data moves between the shards of the devices on one line of the mesh (a cluster_axis), so a program that gathers,
reduces or partitions along the wrong axis gets wrong numbers here. The async variants check what ttnn validates
(the semaphore counts, the mesh, a persistent output buffer's shape) and then do their sync op's data movement;
they call it through registry.public_op, so replacing the sync op on the package replaces the async path too.
"""

from __future__ import annotations

import torch

from ..device import SEMAPHORE_COUNTS  # the counts the program's semaphore manager makes: one home
from .registry import public_op, sim_op
from .tensor import TILE, TILE_LAYOUT, GlobalSemaphore, ReduceType, _check_device, _f, _out


def _collective(tensor, cluster_axis, per_line):
    _check_device(tensor)
    shards = list(tensor.shards)
    out = [None] * len(shards)
    for line in tensor._device.lines(cluster_axis):
        results = per_line([shards[i] for i in line])
        for i, value in zip(line, results):
            out[i] = value
    return _out(tensor, out)


@sim_op("all_gather")
def all_gather(input_tensor, dim, *, cluster_axis=None, memory_config=None, topology=None, num_links=None, **_):
    """Every device receives the concatenation, in line order, of the pieces of all devices on its line."""
    return _collective(input_tensor, cluster_axis, lambda parts: [torch.cat(parts, dim=dim)] * len(parts))


@sim_op("reduce_scatter")
def reduce_scatter(input_tensor, dim, *, cluster_axis=None, memory_config=None, topology=None, num_links=None, **_):
    """The sum over the line, of which device k keeps the k-th chunk along `dim`."""
    def per_line(parts):
        total = torch.stack([_f(p) for p in parts]).sum(0)
        return list(total.chunk(len(parts), dim=dim))

    return _collective(input_tensor, cluster_axis, per_line)


@sim_op("all_reduce")
def all_reduce(input_tensor, *, cluster_axis=None, memory_config=None, topology=None, num_links=None, **_):
    return _collective(input_tensor, cluster_axis,
                       lambda parts: [torch.stack([_f(p) for p in parts]).sum(0)] * len(parts))


def _check_semaphores(op: str, name: str, semaphores, count: int) -> None:
    """The async CCLs synchronise through global semaphores: check the count each needs, as ttnn's validation does."""
    if not isinstance(semaphores, (list, tuple)) or len(semaphores) != count or \
            not all(isinstance(sem, GlobalSemaphore) for sem in semaphores):
        raise RuntimeError(f"TT_FATAL (simulated): {op}: {name} must be {count} global semaphores, got {semaphores!r}")


def _check_mesh(op: str, tensor, mesh_device) -> None:
    if mesh_device is not tensor._device:
        raise RuntimeError(f"TT_FATAL (simulated): {op}: mesh_device is not the device the input tensor is on")


@sim_op("experimental.all_gather_async")
def _all_gather_async(input_tensor, dim, cluster_axis, mesh_device, topology, multi_device_global_semaphore, *,
                      persistent_output_tensor=None, num_links=None, memory_config=None, subdevice_id=None,
                      use_optimal_ccl_for_llama=False, use_broadcast=False, barrier_semaphore=None,
                      sub_core_grids=None, num_workers_per_link=None, num_buffers_per_channel=None):
    """ttnn.experimental.all_gather_async (its cluster_axis/mesh_device overload): all_gather's data movement."""
    _check_mesh("all_gather_async", input_tensor, mesh_device)
    _check_semaphores("all_gather_async", "multi_device_global_semaphore", multi_device_global_semaphore,
                      SEMAPHORE_COUNTS["all_gather"])
    result = public_op("all_gather")(input_tensor, dim, cluster_axis=cluster_axis, topology=topology)
    if persistent_output_tensor is None:
        return result
    # the gather writes into the given buffer and returns it, as on device: an earlier gather's result held in the
    # same buffer (the same Tensor object) is overwritten. The shards are replaced rather than written in place:
    # the simulation's own torch views (a slice here is a view, on device a copy) must not see the write.
    out = persistent_output_tensor
    if out._device is not result._device or out.dtype is not result.dtype or \
            [tuple(s.shape) for s in out.shards] != [tuple(s.shape) for s in result.shards]:
        raise RuntimeError(f"TT_FATAL (simulated): all_gather_async: persistent_output_tensor {out.shape} "
                           f"{out.dtype} does not match the gathered {result.shape} {result.dtype}")
    out.shards = list(result.shards)
    return out


@sim_op("experimental.reduce_scatter_minimal_async")
def _reduce_scatter_minimal_async(input_tensor, persistent_output_buffers=None, dim=None,
                                  multi_device_global_semaphore=None, *, barrier_semaphore=None, num_links=None,
                                  memory_config=None, intermediate_memory_config=None, topology=None,
                                  subdevice_id=None, cluster_axis=None, chunks_per_sync=None,
                                  num_workers_per_link=None, num_buffers_per_channel=None, compute_kernel_config=None):
    _check_semaphores("reduce_scatter_minimal_async", "multi_device_global_semaphore",
                      multi_device_global_semaphore, SEMAPHORE_COUNTS["reduce_scatter"])
    return public_op("reduce_scatter")(input_tensor, dim, cluster_axis=cluster_axis, topology=topology)


@sim_op("experimental.all_reduce_async")
def _all_reduce_async(input_tensor, cluster_axis=None, mesh_device=None, barrier_semaphores=None,
                      rs_global_semaphores=None, ag_global_semaphores=None, math_op=None, *, memory_config=None,
                      topology=None, num_links=None, subdevice_id=None):
    """ttnn.experimental.all_reduce_async (its cluster_axis/mesh_device overload): a sum over the line."""
    _check_mesh("all_reduce_async", input_tensor, mesh_device)
    for name, value, count in (("barrier_semaphores", barrier_semaphores, SEMAPHORE_COUNTS["all_reduce_barriers"]),
                               ("rs_global_semaphores", rs_global_semaphores, SEMAPHORE_COUNTS["reduce_scatter"]),
                               ("ag_global_semaphores", ag_global_semaphores, SEMAPHORE_COUNTS["all_gather"])):
        _check_semaphores("all_reduce_async", name, value, count)
    if math_op != ReduceType.Sum:
        raise RuntimeError(f"TT_FATAL (simulated): all_reduce_async: only ReduceType.Sum is simulated, got {math_op}")
    return public_op("all_reduce")(input_tensor, cluster_axis=cluster_axis, topology=topology)


@sim_op("experimental.all_to_all_async_generic")
def _all_to_all_async_generic(input_tensor, in_dim, out_dim, *, persistent_output_buffer=None, num_links=None,
                              memory_config=None, topology=None, subdevice_id=None, cluster_axis=None):
    """Device i cuts its tensor into ring-size chunks along out_dim and sends chunk j to device j; each device
    concatenates what it receives, in line order, along in_dim. As in ttnn (all_to_all_async_generic's output
    spec): the output grows along in_dim and shrinks along out_dim by the ring size."""
    def per_line(parts):
        n = len(parts)
        chunks = [p.chunk(n, dim=out_dim) for p in parts]
        return [torch.cat([chunks[i][j] for i in range(n)], dim=in_dim).contiguous() for j in range(n)]

    return _collective(input_tensor, cluster_axis, per_line)


@sim_op("mesh_partition")
def mesh_partition(input_tensor, dim, cluster_axis=None, *, memory_config=None):
    """Each device keeps its own chunk of a tensor replicated along the line; no data moves.

    As on device, a TILE tensor splits along its rows (dim -2) or columns (dim -1) only into whole 32-wide tiles:
    real ttnn stops with "height (width) begin index aligned to tiles" (64 rows over 4 devices, 16 rows each, fails;
    so do 96 columns over 2, 48 each)."""
    rank = len(input_tensor.shape)
    dim = dim % rank
    ring = len(input_tensor._device.lines(cluster_axis)[0]) if input_tensor._device is not None else 1
    rows = input_tensor.shape[dim]
    if input_tensor.layout is TILE_LAYOUT and rank >= 2 and dim >= rank - 2 and ring > 1:
        if rows % ring or (rows // ring) % TILE:
            side = "height" if dim == rank - 2 else "width"
            raise RuntimeError(f"TT_FATAL (simulated): mesh_partition of {list(input_tensor.shape)} along dim {dim} "
                               f"over {ring} devices: Can only slice tilized tensor with {side} begin index aligned "
                               f"to tiles (each piece must be a whole number of {TILE}-wide tiles)")
    return _collective(input_tensor, cluster_axis,
                       lambda parts: [p.chunk(len(parts), dim=dim)[k].contiguous() for k, p in enumerate(parts)])
