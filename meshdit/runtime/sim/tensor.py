"""The simulated mesh's objects: dtypes, layouts, config objects, MeshDevice, Tensor, mesh mappers, host <-> device
moves, and the plumbing every simulated op runs through (_map, _out, _f, _check_device).

A device Tensor is one torch tensor per device (its shard), so a program written for a mesh runs with the data each
chip would hold. Every op's output goes through `_out`, which rounds it to the output data format (bfloat16,
bfloat8_b) as the hardware stores it: that rounding is what makes the simulated PCC meaningful.

Config objects (compute kernel, SDPA program configs, memory configs) are accepted and kept, not simulated: they
exist so that a call spelled as ttnn spells it runs here unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from ...ir.tiles import TILE, tile_padded  # the tile fact, shared with lowering
from ..numerics import round_to


# --- enums and small config objects ---------------------------------------------------------------------------------
class DataType:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"DataType.{self.name.upper()}"


float32, bfloat16, bfloat8_b = DataType("float32"), DataType("bfloat16"), DataType("bfloat8_b")
int32, uint32 = DataType("int32"), DataType("uint32")


class Layout:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Layout.{self.name}"


TILE_LAYOUT, ROW_MAJOR_LAYOUT = Layout("TILE"), Layout("ROW_MAJOR")
MathFidelity = SimpleNamespace(LoFi="LoFi", HiFi2="HiFi2", HiFi3="HiFi3", HiFi4="HiFi4")
Topology = SimpleNamespace(Ring="Ring", Linear="Linear")
ReduceType = SimpleNamespace(Sum="Sum", Mean="Mean", Max="Max", Min="Min")
DRAM_MEMORY_CONFIG = "DRAM_MEMORY_CONFIG"
L1_MEMORY_CONFIG = "L1_MEMORY_CONFIG"


@dataclass(frozen=True)
class CoreCoord:
    x: int
    y: int


@dataclass
class WormholeComputeKernelConfig:
    math_fidelity: str = "Invalid"
    math_approx_mode: bool = True
    fp32_dest_acc_en: bool = False
    packer_l1_acc: bool = False
    dst_full_sync_en: bool = False


@dataclass
class SDPAProgramConfig:
    compute_with_storage_grid_size: CoreCoord
    q_chunk_size: int
    k_chunk_size: int
    exp_approx_mode: bool | None = None
    sub_core_grids: object = None
    max_cores_per_head_batch: int = 16


@dataclass(frozen=True)
class MinimalMatmulConfig:
    """ttnn.MinimalMatmulConfig: block sizes in tiles (keyword-only in ttnn, each defaulting to 1)."""

    M_block_size: int = 1
    K_block_size: int = 1
    N_block_size: int = 1
    subblock_h: int = 1
    subblock_w: int = 1
    compute_with_storage_grid_size: CoreCoord = CoreCoord(1, 1)


class UnaryOpType(enum.Enum):
    GELU = "GELU"
    GELU_TANH = "GELU_TANH"
    SILU = "SILU"
    RELU = "RELU"


@dataclass(frozen=True)
class UnaryWithParam:
    """A fused activation as ttnn's kernels take it: GELU's parameter is its fast-approximation flag."""

    op_type: UnaryOpType
    param: float | None = None


class MeshShape(tuple):
    def __new__(cls, *dims):
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = tuple(dims[0])
        return super().__new__(cls, dims)


# --- devices ----------------------------------------------------------------------------------------------------
class MeshDevice:
    """R x C simulated devices. Device (r, c) is index r * C + c in every tensor's shard list."""

    GRID = CoreCoord(8, 7)  # Wormhole compute grid with worker dispatch, as on T3K

    def __init__(self, shape, trace_region_size=0):
        self.shape = MeshShape(shape)
        self.is_open = True
        self.trace_region_size = trace_region_size  # bytes reserved for traces at open; 0 means none
        self.traces = {}  # trace id -> trace._Trace, captured and not yet released
        self.recording = None  # the trace._Trace being captured, between begin_ and end_trace_capture
        self.submeshes = []

    def get_num_devices(self):
        return self.shape[0] * self.shape[1]

    def compute_with_storage_grid_size(self):
        return self.GRID

    def create_submeshes(self, submesh_shape):
        """Split along the axis whose size differs, in order (as ttnn does for cfg submeshes)."""
        rows, cols = self.shape
        sub_rows, sub_cols = MeshShape(submesh_shape)
        if rows % sub_rows or cols % sub_cols:
            raise RuntimeError(f"TT_FATAL (simulated): {self.shape} does not split into {tuple(submesh_shape)}")
        # submeshes share their parent's trace region (TT-DiT captures one trace per cfg submesh)
        subs = [MeshDevice((sub_rows, sub_cols), self.trace_region_size)
                for _ in range((rows // sub_rows) * (cols // sub_cols))]
        self.submeshes.extend(subs)
        return subs

    def lines(self, cluster_axis):
        """Device indices grouped by line along `cluster_axis` (the devices a collective on that axis spans)."""
        rows, cols = self.shape
        if cluster_axis == 0:
            return [[r * cols + c for r in range(rows)] for c in range(cols)]
        return [[r * cols + c for c in range(cols)] for r in range(rows)]

    def __repr__(self):
        return f"MeshDevice({self.shape[0]}x{self.shape[1]} grid, {self.get_num_devices()} devices, simulated)"


@dataclass(frozen=True)
class CoreRange:
    start: CoreCoord
    end: CoreCoord


class CoreRangeSet:
    def __init__(self, ranges):
        self.ranges = list(ranges)


class GlobalSemaphore:
    """Stands for a device semaphore; the simulated collectives synchronise by construction."""

    def __init__(self, cores, initial_value):
        self.cores, self.value = cores, initial_value


def create_global_semaphore(mesh_device, cores, initial_value, buffer_type=None):
    return GlobalSemaphore(cores, initial_value)


def open_mesh_device(mesh_shape=None, l1_small_size=0, trace_region_size=0, num_command_queues=1,
                     dispatch_core_config=None, offset=None, physical_device_ids=(), worker_l1_size=0):
    """ttnn's parameters; trace_region_size is the one the simulation uses (a trace needs a region)."""
    return MeshDevice(mesh_shape or MeshShape(1, 1), trace_region_size)


def close_mesh_device(mesh_device):
    """Close the mesh and its submeshes. Traces not released stay listed in `traces`, so a test can tell whether
    the caller released them."""
    mesh_device.is_open = False
    for sub in mesh_device.submeshes:
        close_mesh_device(sub)


def _refuse_during_capture(device, what):
    """ttnn stops host writes to and reads from a mesh that is capturing a trace. Here rather than in trace.py:
    tensor creation and host <-> device moves need it, and trace.py builds on this module."""
    if getattr(device, "recording", None) is not None:
        raise RuntimeError(f"TT_FATAL (simulated): {what} are not supported during trace capture (on {device!r})")


# --- tensors ----------------------------------------------------------------------------------------------------
class Tensor:
    """A (possibly distributed) tensor: one torch shard per device, or a single host copy.

    A host tensor made with a mesh_mapper holds its per-device shards on host, as ttnn's multi-device host tensors
    do (the cached weight format); `to_device` uploads them as they are."""

    _host_mesh = None  # a host tensor split by a mesh mapper: the mesh shape its shards are laid out on

    def __init__(self, tensor=None, data_type=None, device=None, layout=None, mem_config=None, tile=None,
                 cq_id=None, pad_value=None, mesh_mapper=None, *, _shards=None, _dtype=None, _layout=None):
        if _shards is not None:
            self.shards, self.dtype, self.layout, self._device = _shards, _dtype, _layout, device
            return
        array = torch.as_tensor(np.asarray(tensor))
        self.dtype = data_type or (float32 if array.is_floating_point() else int32)
        self.layout = layout or ROW_MAJOR_LAYOUT
        value = round_to(array.to(torch.float32) if array.is_floating_point() else array, self.dtype.name)
        if device is None and mesh_mapper is not None:
            self.shards, self._device = mesh_mapper.split(value, mesh_mapper.mesh_shape), None
            self._host_mesh = mesh_mapper.mesh_shape
        elif device is None:
            self.shards, self._device = [value], None
        else:
            _refuse_during_capture(device, "Writes")
            mapper = mesh_mapper or replicate_tensor_to_mesh_mapper(device)
            self.shards, self._device = mapper.split(value, device), device

    # ttnn.Tensor surface
    @property
    def shape(self):
        return tuple(self.shards[0].shape)

    @property
    def padded_shape(self):
        return tile_padded(self.shape) if self.layout is TILE_LAYOUT else self.shape

    def device(self):
        return self._device

    def to_numpy(self):
        return self.shards[0].numpy()

    def __repr__(self):
        where = f"on {self._device!r}" if self._device else "on host"
        return f"Tensor(shape={list(self.shape)}, dtype={self.dtype}, {where})"


class _Mapper:
    """How a host tensor is split over the mesh: per mesh axis, None (replicate) or the tensor dim sharded."""

    def __init__(self, dims, mesh_shape=None):
        self.dims = tuple(dims)
        self.mesh_shape = mesh_shape  # the mesh it was made for: where a host tensor's shards go

    def split(self, value, device):
        rows, cols = device.shape if isinstance(device, MeshDevice) else device  # a device or a mesh shape
        row_parts = value.chunk(rows, self.dims[0]) if self.dims[0] is not None else [value] * rows
        shards = []
        for part in row_parts:
            col_parts = part.chunk(cols, self.dims[1]) if self.dims[1] is not None else [part] * cols
            shards.extend(p.clone() for p in col_parts)
        return shards


@dataclass(frozen=True)
class PlacementShard:
    dim: int


@dataclass(frozen=True)
class PlacementReplicate:
    pass


class MeshMapperConfig:
    def __init__(self, placements):
        self.placements = list(placements)


def _mesh_shape_of(mesh_device):
    """A MeshDevice's shape, or a MeshShape itself (create_mesh_mapper has an overload taking one)."""
    return mesh_device.shape if isinstance(mesh_device, MeshDevice) else MeshShape(mesh_device)


def replicate_tensor_to_mesh_mapper(mesh_device):
    return _Mapper((None, None), _mesh_shape_of(mesh_device))


def create_mesh_mapper(mesh_device, config):
    return _Mapper(tuple(p.dim if isinstance(p, PlacementShard) else None for p in config.placements),
                   _mesh_shape_of(mesh_device))


def get_device_tensors(tensor):
    return [Tensor(_shards=[s], _dtype=tensor.dtype, _layout=tensor.layout, device=None) for s in tensor.shards]


def from_device(tensor, blocking=True, *, queue_id=None):
    _refuse_during_capture(tensor._device, "Reads")
    return Tensor(_shards=list(tensor.shards), _dtype=tensor.dtype, _layout=tensor.layout, device=None)


def to_device(tensor, device, memory_config=None, *, queue_id=None):
    _refuse_during_capture(device, "Writes")
    if len(tensor.shards) > 1 and len(tensor.shards) != device.get_num_devices():
        raise RuntimeError(f"TT_FATAL (simulated): a host tensor of {len(tensor.shards)} shards does not fit "
                           f"{device!r}")
    shards = tensor.shards if len(tensor.shards) > 1 else _Mapper((None, None)).split(tensor.shards[0], device)
    return Tensor(_shards=shards, _dtype=tensor.dtype, _layout=tensor.layout, device=device)


def from_torch(tensor, dtype=None, *, layout=None, device=None, mesh_mapper=None, **_ignored):
    return Tensor(tensor.detach().cpu().float().numpy() if tensor.is_floating_point() else tensor.numpy(),
                  data_type=dtype, device=device, layout=layout, mesh_mapper=mesh_mapper)


def to_torch(tensor, dtype=None, *, mesh_composer=None, **_ignored):
    return tensor.shards[0].clone()


# --- op plumbing: every op runs per device on that device's shard and rounds its output --------------------------
def _out(ref: Tensor, shards, dtype=None) -> Tensor:
    dtype = dtype or ref.dtype
    return Tensor(_shards=[round_to(s, dtype.name) if dtype.name not in ("int32", "uint32") else s.to(torch.int64)
                           for s in shards], _dtype=dtype, _layout=ref.layout, device=ref._device)


def _check_device(*tensors):
    for t in tensors:
        if isinstance(t, Tensor) and t._device is None:
            raise RuntimeError("TT_FATAL (simulated): input tensor must be on device, got a host tensor")


def _shards(x, n):
    return x.shards if isinstance(x, Tensor) else [x] * n


def _map(fn, *inputs, dtype=None):
    ref = next(x for x in inputs if isinstance(x, Tensor))
    _check_device(*inputs)
    for x in inputs:  # ttnn divides by tile and page counts: an op on an empty tensor dies with SIGFPE
        if isinstance(x, Tensor) and any(s.numel() == 0 for s in x.shards):
            raise RuntimeError(f"TT_FATAL (simulated): an op on an empty tensor {list(x.shape)}; real ttnn crashes "
                               "on zero-volume tensors (SIGFPE), so a program must not compute on them")
    n = len(ref.shards)
    columns = [_shards(x, n) for x in inputs]
    return _out(ref, [fn(*(col[i] for col in columns)) for i in range(n)], dtype)


def _f(x):
    return x.to(torch.float32) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
