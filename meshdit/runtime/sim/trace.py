"""Trace capture and replay: begin/end_trace_capture, execute_trace, release_trace, copy_host_to_device_tensor, and
the recording state the op registry (registry.py) writes into.

On a device, the ops issued between begin_trace_capture and end_trace_capture are recorded into a command buffer
(not run), and execute_trace replays it: the same programs on the same buffers, so a replay reads whatever the
input buffers hold now and writes into the same output buffers. The simulation records each op called on the
capturing mesh (its function, argument objects and output tensors) and replays by calling the function again on
those argument objects, then moving the new values into the recorded output tensors. Arguments are read at replay
time, so a replay recomputes from the current inputs; collectives and ring attention replay like any op (their
persistent buffers and semaphores are arguments, made before capture).

Capture does run the ops here (the simulation needs their shapes), but end_trace_capture then fills every
captured output with NaN: on hardware they hold nothing until execute_trace, and a caller that reads them
before replaying must not see plausible numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tensor import MeshDevice, Tensor, _Mapper, _refuse_during_capture


class MeshTraceId(int):
    def __repr__(self):
        return f"MeshTraceId({int(self)})"


@dataclass
class Recorded:
    name: str  # as called: "linear", "transformer.ring_joint_scaled_dot_product_attention", ...
    fn: object  # the op's implementation (not the recording wrapper)
    args: tuple
    kwargs: dict
    outputs: list  # the Tensor objects the op returned; a replay writes into these


@dataclass
class _Trace:
    ops: list
    complete: bool = False


_trace_ids = iter(range(1 << 62))  # ids stay unique over the process, as a released id must not come back to life
op_depth = [0]  # > 0 inside an op or a replay: an op another op calls (matmul -> linear) is not recorded again


def device_of(values):
    """The mesh an op runs on: that of its first device tensor, or a mesh_device argument."""
    for value in values:
        if isinstance(value, Tensor) and value._device is not None:
            return value._device
        if isinstance(value, MeshDevice):
            return value
        if isinstance(value, (list, tuple)):
            found = device_of(value)
            if found is not None:
                return found
    return None


def output_tensors(result) -> list:
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (list, tuple)):
        return [t for t in result if isinstance(t, Tensor)]
    return []


def begin_trace_capture(mesh_device, *, cq_id=None):
    if mesh_device.recording is not None:
        raise RuntimeError(f"TT_FATAL (simulated): {mesh_device!r} is already capturing a trace")
    trace_id = MeshTraceId(next(_trace_ids))
    mesh_device.traces[trace_id] = mesh_device.recording = _Trace([])
    return trace_id


def end_trace_capture(mesh_device, trace_id, *, cq_id=None):
    trace = mesh_device.traces.get(trace_id)
    if trace is None or trace is not mesh_device.recording:
        raise RuntimeError(f"TT_FATAL (simulated): {trace_id!r} is not the trace being captured on {mesh_device!r}")
    mesh_device.recording = None
    if mesh_device.trace_region_size <= 0:
        del mesh_device.traces[trace_id]
        raise RuntimeError(f"TT_FATAL (simulated): creating the buffer of a trace of {len(trace.ops)} ops on "
                           f"{mesh_device!r}, but 0 B is allocated for the trace region: open the mesh with "
                           "trace_region_size")
    trace.complete = True
    for record in trace.ops:  # captured, not yet run (see the module docstring)
        for tensor in record.outputs:
            tensor.shards = [torch.full_like(s, float("nan")) if s.is_floating_point() else torch.full_like(s, -1)
                             for s in tensor.shards]


def execute_trace(mesh_device, trace_id, *, cq_id=None, blocking=True):
    """Run the recorded ops again, in order, on the current contents of their argument tensors; each op's new
    values replace those of the output tensors it made at capture (the same Tensor objects)."""
    trace = mesh_device.traces.get(trace_id)
    if trace is None or not trace.complete:
        raise RuntimeError(f"TT_FATAL (simulated): no captured trace {trace_id!r} on {mesh_device!r} (never ended, "
                           "released, or captured on another mesh)")
    if mesh_device.recording is not None:
        raise RuntimeError(f"TT_FATAL (simulated): cannot execute a trace while {mesh_device!r} is capturing one")
    op_depth[0] += 1
    try:
        for record in trace.ops:
            fresh = output_tensors(record.fn(*record.args, **record.kwargs))
            if len(fresh) != len(record.outputs) or any(
                    new.shape != old.shape or new.dtype is not old.dtype for new, old in zip(fresh, record.outputs)):
                raise RuntimeError(f"TT_FATAL (simulated): replaying {record.name} gave "
                                   f"{[(n.shape, n.dtype) for n in fresh]}, captured "
                                   f"{[(o.shape, o.dtype) for o in record.outputs]}")
            for new, old in zip(fresh, record.outputs):
                old.shards = new.shards  # a new list: shards may alias other tensors' storage, never write into them
    finally:
        op_depth[0] -= 1


def release_trace(mesh_device, trace_id):
    if mesh_device.traces.pop(trace_id, None) is None:
        raise RuntimeError(f"TT_FATAL (simulated): no trace {trace_id!r} to release on {mesh_device!r}")


def copy_host_to_device_tensor(host_tensor, device_tensor, cq_id=None):
    """Write a host tensor's values into an existing device tensor (same shape per device, dtype and layout): the
    device buffer stays where it is, which is what lets a captured trace read new inputs."""
    if host_tensor._device is not None or device_tensor._device is None:
        raise RuntimeError("TT_FATAL (simulated): copy_host_to_device_tensor takes a host tensor and a device tensor")
    device = device_tensor._device
    _refuse_during_capture(device, "Writes")
    shards = host_tensor.shards
    if len(shards) == 1 and device.get_num_devices() > 1:
        shards = _Mapper((None, None)).split(shards[0], device)
    if (host_tensor.dtype is not device_tensor.dtype or host_tensor.layout is not device_tensor.layout
            or len(shards) != len(device_tensor.shards)
            or any(h.shape != d.shape for h, d in zip(shards, device_tensor.shards))):
        raise RuntimeError(
            f"TT_FATAL (simulated): copy_host_to_device_tensor: host tensor {[list(s.shape) for s in shards]} "
            f"{host_tensor.dtype} {host_tensor.layout} does not match device tensor "
            f"{[list(s.shape) for s in device_tensor.shards]} {device_tensor.dtype} {device_tensor.layout}")
    device_tensor.shards = [s.clone() for s in shards]


def trace_ops(mesh_device, trace_id) -> list:
    """Names of the ops a trace recorded, in order (a simulation helper; ttnn has no such call)."""
    return [record.name for record in mesh_device.traces[trace_id].ops]
