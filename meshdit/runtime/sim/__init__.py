"""A simulated TT-NN: the subset of the ttnn 0.81.1 API meshdit emits, executed on CPU with torch.

A MeshDevice of R x C devices holds, for each device tensor, one torch tensor per device (its shard), so a program
written for a mesh runs here with the data each chip would hold. Every op runs per device on that device's shard;
collectives (added with sharding) move data between shards. Each op's output is rounded to its data format
(runtime/numerics.py), so bfloat16 / bfloat8_b PCC is meaningful.

Signatures follow ttnn's: same positional order and keyword names, so a call accepted here is spelled as ttnn
spells it. Memory configs, program configs and compute kernel configs are accepted and recorded, not simulated.
"""

from __future__ import annotations

import functools
import math
import types
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from ..numerics import round_to

__all__ = []  # the module is used as a namespace: `ttnn = meshdit.runtime.sim`


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
        self.traces = {}  # trace id -> _Trace, captured and not yet released
        self.recording = None  # the _Trace being captured, between begin_ and end_trace_capture
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
        from ...ir.tiles import tile_padded

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


# --- tensor files: ttnn.dump_tensor / ttnn.load_tensor ---------------------------------------------------------
class DumpTensorMode:
    DISTRIBUTED_GATHER = "DISTRIBUTED_GATHER"  # ttnn's default; on one host it writes every shard, as LOCAL does
    LOCAL = "LOCAL"


SIM_TENSOR_FORMAT = "meshdit-sim-tensor/1"


def _tensor_file(file_name) -> str:
    """ttnn refuses a tensor file name not ending in .tensorbin; so does the simulation, so that a path accepted
    here is accepted on device."""
    import os

    path = os.fspath(file_name)
    if not str(path).endswith(".tensorbin"):
        raise RuntimeError(f"File {path} must have .tensorbin extension")
    return path


def dump_tensor(file_name, tensor, *, mode=DumpTensorMode.DISTRIBUTED_GATHER):
    """Write a tensor's per-device shards with its dtype, layout and mesh shape, so load_tensor gives the same
    tensor back. A safetensors file stands in for ttnn's flatbuffer. As ttnn does, identical shards (replicated
    placements) are stored once; bfloat16 / bfloat8_b values are stored as bfloat16 (they are exact in it), so
    file sizes stay close to the device format's."""
    import json

    from safetensors.torch import save_file

    stored, index = [], []
    for shard in tensor.shards:
        same = next((k for k, s in enumerate(stored)
                     if s.shape == shard.shape and torch.equal(s.to(shard.dtype), shard)), None)
        if same is None:
            same = len(stored)
            compact = shard.to(torch.bfloat16) if tensor.dtype in (bfloat16, bfloat8_b) else shard
            # keep full precision whenever bfloat16 would change a value (e.g. fp32 subnormals)
            stored.append((compact if torch.equal(compact.to(shard.dtype), shard) else shard).contiguous())
        index.append(same)
    mesh = tensor._device.shape if tensor._device is not None else tensor._host_mesh
    metadata = {"format": SIM_TENSOR_FORMAT, "dtype": tensor.dtype.name, "layout": tensor.layout.name,
                "mesh_shape": json.dumps(list(mesh) if mesh is not None else None), "shards": json.dumps(index)}
    save_file({f"shard_{k}": s for k, s in enumerate(stored)}, _tensor_file(file_name), metadata=metadata)


def load_tensor(file_name, *, device=None):
    """Read a dump_tensor file: a host tensor (per-device shards kept on host), or on `device` when given.

    An unreadable or truncated file raises, as ttnn's TT_FATAL does; like ttnn, a flipped byte inside the values
    is not detected here (callers that must not use a damaged file checksum it, as the weight cache does)."""
    import json
    import os

    from safetensors import safe_open

    path = _tensor_file(file_name)
    if not os.path.exists(path):
        raise RuntimeError(f"Unable to load the tensor from {path}.  The file does not exist.")
    if not os.path.isfile(path):
        raise RuntimeError(f"Unable to load the tensor from {path}.  The file is not a file.")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            stored = {name: f.get_tensor(name) for name in f.keys()}
        if metadata.get("format") != SIM_TENSOR_FORMAT:
            raise ValueError(f"not a {SIM_TENSOR_FORMAT} file")
        dtype = {d.name: d for d in (float32, bfloat16, bfloat8_b, int32, uint32)}[metadata["dtype"]]
        layout = {"TILE": TILE_LAYOUT, "ROW_MAJOR": ROW_MAJOR_LAYOUT}[metadata["layout"]]
        mesh = json.loads(metadata["mesh_shape"])
        shards = [stored[f"shard_{k}"] for k in json.loads(metadata["shards"])]
    except Exception as error:  # safetensors' own errors, a missing key, bad JSON: all mean a damaged file
        raise RuntimeError(f"TT_FATAL (simulated): {path}: the file is truncated or corrupt ({error})") from error
    shards = [s.to(torch.float32) if s.is_floating_point() else s for s in shards]
    shards = [s.clone() if any(s is t for t in shards[:k]) else s for k, s in enumerate(shards)]  # no aliasing
    if device is None:
        tensor = Tensor(_shards=shards, _dtype=dtype, _layout=layout, device=None)
        tensor._host_mesh = MeshShape(mesh) if mesh is not None else None
        return tensor
    if len(shards) > 1 and (mesh is None or tuple(mesh) != tuple(device.shape)):
        raise RuntimeError(f"TT_FATAL (simulated): {path} holds shards for a {mesh} mesh, not {device!r}")
    return to_device(Tensor(_shards=shards, _dtype=dtype, _layout=layout, device=None), device)


# --- op plumbing ------------------------------------------------------------------------------------------------
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
    n = len(ref.shards)
    columns = [_shards(x, n) for x in inputs]
    return _out(ref, [fn(*(col[i] for col in columns)) for i in range(n)], dtype)


def _f(x):
    return x.to(torch.float32) if isinstance(x, torch.Tensor) and x.is_floating_point() else x


# --- compute ops --------------------------------------------------------------------------------------------------
def linear(input_tensor_a, input_tensor_b, *, bias=None, transpose_a=False, transpose_b=False, memory_config=None,
           dtype=None, program_config=None, activation=None, compute_kernel_config=None, core_grid=None, **_):
    def fn(a, b, c=None):
        a = a.transpose(-1, -2) if transpose_a else a
        b = b.transpose(-1, -2) if transpose_b else b
        y = torch.matmul(_f(a), _f(b))
        if c is not None:
            y = y + _f(c)
        if activation is not None:
            y = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}[activation](y)
        return y

    inputs = (input_tensor_a, input_tensor_b) + ((bias,) if bias is not None else ())
    return _map(fn, *inputs, dtype=dtype)


def matmul(input_tensor_a, input_tensor_b, **kwargs):
    return linear(input_tensor_a, input_tensor_b, **kwargs)


def _norm(kind):
    def op(input_tensor, *, epsilon=1e-12, weight=None, bias=None, residual_input_tensor=None, memory_config=None,
           program_config=None, compute_kernel_config=None, **_):
        def fn(x, w=None, b=None, r=None):
            x = _f(x) + (_f(r) if r is not None else 0)
            if kind == "layer":
                y = F.layer_norm(x, x.shape[-1:], eps=epsilon)
            else:
                y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + epsilon)
            if w is not None:
                y = y * _f(w).reshape(-1)
            if b is not None:
                y = y + _f(b).reshape(-1)
            return y

        extras = [t for t in (weight, bias, residual_input_tensor)]
        names = [t is not None for t in extras]
        inputs = [input_tensor] + [t for t in extras if t is not None]

        def call(x, *rest):
            it = iter(rest)
            w, b, r = (next(it) if present else None for present in names)
            return fn(x, w, b, r)

        return _map(call, *inputs)

    return op


layer_norm = _norm("layer")
rms_norm = _norm("rms")


def _pre_all_gather(kind):
    """Per-row partial statistics of this device's slice of the hidden dim, one tile (32 columns) per statistic:
    sum(x) at column 0 and sum(x^2) at column 32 (layer norm), or sum(x^2) at column 0 (RMS norm)."""
    def op(input_tensor, *, dtype=None, compute_kernel_config=None, memory_config=None, **_):
        def fn(x):
            x = _f(x)
            stats = torch.zeros(x.shape[:-1] + (64 if kind == "layer" else 32,))
            if kind == "layer":
                stats[..., 0], stats[..., 32] = x.sum(-1), (x * x).sum(-1)
            else:
                stats[..., 0] = (x * x).sum(-1)
            return stats

        return _map(fn, input_tensor, dtype=dtype or float32)

    return op


def _post_all_gather(kind):
    """Normalise this device's slice with statistics gathered from every device on the axis."""
    def op(input_tensor, stats, *, epsilon=1e-12, weight=None, bias=None, memory_config=None,
           compute_kernel_config=None, program_config=None, dtype=None, **_):
        width = 64 if kind == "layer" else 32

        def fn(x, st, w=None, b=None):
            x = _f(x)
            st = _f(st).reshape(st.shape[:-1] + (st.shape[-1] // width, width))
            count = x.shape[-1] * st.shape[-2]
            if kind == "layer":
                mean = st[..., 0].sum(-1, keepdim=True) / count
                var = st[..., 32].sum(-1, keepdim=True) / count - mean * mean
                y = (x - mean) * torch.rsqrt(var + epsilon)
            else:
                y = x * torch.rsqrt(st[..., 0].sum(-1, keepdim=True) / count + epsilon)
            if w is not None:
                y = y * _f(w).reshape(-1)
            if b is not None:
                y = y + _f(b).reshape(-1)
            return y

        extras = [t for t in (weight, bias) if t is not None]

        def call(x, st, *rest):
            it = iter(rest)
            return fn(x, st, next(it) if weight is not None else None, next(it) if bias is not None else None)

        return _map(call, input_tensor, stats, *extras, dtype=dtype)

    return op


layer_norm_pre_all_gather, layer_norm_post_all_gather = _pre_all_gather("layer"), _post_all_gather("layer")
rms_norm_pre_all_gather, rms_norm_post_all_gather = _pre_all_gather("rms"), _post_all_gather("rms")


def gelu(input_tensor, *, fast_and_approximate_mode=False, memory_config=None, **_):
    approximate = "tanh" if fast_and_approximate_mode else "none"
    return _map(lambda x: F.gelu(_f(x), approximate=approximate), input_tensor)


def _unary(fn):
    def op(input_tensor, *, memory_config=None, **_):
        return _map(lambda x: fn(_f(x)), input_tensor)

    return op


silu = _unary(F.silu)
relu = _unary(F.relu)
neg = _unary(torch.neg)
exp = _unary(torch.exp)
sin = _unary(torch.sin)
cos = _unary(torch.cos)
tanh = _unary(torch.tanh)
sigmoid = _unary(torch.sigmoid)
rsqrt = _unary(torch.rsqrt)
sqrt = _unary(torch.sqrt)
reciprocal = _unary(torch.reciprocal)
abs = _unary(torch.abs)  # noqa: A001 - ttnn's name


def _binary(fn):
    def op(input_tensor_a, input_tensor_b, *, dtype=None, memory_config=None, **_):
        return _map(lambda a, b: fn(_f(a), _f(b)), input_tensor_a, input_tensor_b, dtype=dtype)

    return op


add = _binary(torch.add)
subtract = _binary(torch.sub)
multiply = _binary(torch.mul)
divide = _binary(torch.div)
mul, sub, div = multiply, subtract, divide


def _reduction(fn):
    def op(input_tensor, dim=None, keepdim=False, *, memory_config=None, **_):
        dims = dim if dim is not None else list(range(len(input_tensor.shape)))
        return _map(lambda x: fn(_f(x), dim=dims, keepdim=keepdim), input_tensor)

    return op


mean = _reduction(torch.mean)
sum = _reduction(torch.sum)  # noqa: A001 - ttnn's name


def softmax(input_tensor, dim=-1, *, memory_config=None, compute_kernel_config=None, numeric_stable=True):
    return _map(lambda x: torch.softmax(_f(x), dim=dim), input_tensor)


def typecast(input_tensor, dtype, *, memory_config=None, **_):
    if dtype.name in ("int32", "uint32"):
        return _map(lambda x: x.to(torch.int64), input_tensor, dtype=dtype)
    return _map(lambda x: x.to(torch.float32), input_tensor, dtype=dtype)


# --- data movement --------------------------------------------------------------------------------------------------
def reshape(input_tensor, shape, *, memory_config=None, **_):
    return _map(lambda x: x.reshape(tuple(shape)), input_tensor)


def permute(input_tensor, dims, *, memory_config=None, pad_value=0.0):
    return _map(lambda x: x.permute(tuple(dims)).contiguous(), input_tensor)


def transpose(input_tensor, dim1, dim2, *, memory_config=None, pad_value=0.0):
    return _map(lambda x: x.transpose(dim1, dim2).contiguous(), input_tensor)


def slice(input_tensor, starts, ends, slice_step=None, *, memory_config=None, **_):  # noqa: A001 - ttnn's name
    steps = slice_step or [1] * len(starts)
    index = tuple(builtins_slice(s, e, st) for s, e, st in zip(starts, ends, steps))
    return _map(lambda x: x[index].contiguous(), input_tensor)


def concat(tensors, dim=0, *, memory_config=None, **_):
    ref = tensors[0]
    _check_device(*tensors)
    n = len(ref.shards)
    return _out(ref, [torch.cat([t.shards[i] for t in tensors], dim=dim) for i in range(n)])


def pad(input_tensor, padding, value, *, use_multicore=True, memory_config=None, **_):
    flat = []
    for lo, hi in reversed([tuple(p) for p in padding]):
        flat += [lo, hi]
    return _map(lambda x: F.pad(x, flat, value=value), input_tensor)


def repeat(input_tensor, repeat_dims, *, memory_config=None, **_):
    return _map(lambda x: x.repeat(tuple(repeat_dims)), input_tensor)


# --- attention ----------------------------------------------------------------------------------------------------
def _attention(q, k, v, mask=None, scale=None, causal=False):
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return F.scaled_dot_product_attention(_f(q), _f(k), _f(v), attn_mask=_f(mask) if mask is not None else None,
                                          is_causal=causal, scale=scale)


def _scaled_dot_product_attention(input_tensor_q, input_tensor_k, input_tensor_v, *, attn_mask=None,
                                  is_causal=True, scale=None, memory_config=None, program_config=None,
                                  compute_kernel_config=None, **_):
    inputs = (input_tensor_q, input_tensor_k, input_tensor_v) + ((attn_mask,) if attn_mask is not None else ())
    return _map(lambda q, k, v, m=None: _attention(q, k, v, m, scale, is_causal), *inputs)


def _joint_scaled_dot_product_attention(input_tensor_q, input_tensor_k, input_tensor_v, joint_tensor_q,
                                        joint_tensor_k, joint_tensor_v, *, joint_strategy, program_config,
                                        scale=None, compute_kernel_config=None):
    if joint_strategy != "rear":
        raise RuntimeError(f"TT_FATAL (simulated): joint_strategy must be 'rear', got {joint_strategy!r}")
    if program_config is None:
        raise TypeError("joint_scaled_dot_product_attention(): program_config is required")
    _check_device(input_tensor_q, joint_tensor_q)
    n = input_tensor_q.shape[-2]
    outs, joint_outs = [], []
    for i in range(len(input_tensor_q.shards)):
        q = torch.cat([input_tensor_q.shards[i], joint_tensor_q.shards[i]], dim=-2)
        k = torch.cat([input_tensor_k.shards[i], joint_tensor_k.shards[i]], dim=-2)
        v = torch.cat([input_tensor_v.shards[i], joint_tensor_v.shards[i]], dim=-2)
        o = _attention(q, k, v, scale=scale)
        outs.append(o[..., :n, :])
        joint_outs.append(o[..., n:, :])
    return _out(input_tensor_q, outs), _out(joint_tensor_q, joint_outs)


# --- collectives: data moves between the shards of the devices on one line of the mesh ---------------------------
def _collective(tensor, cluster_axis, per_line):
    _check_device(tensor)
    shards = list(tensor.shards)
    out = [None] * len(shards)
    for line in tensor._device.lines(cluster_axis):
        results = per_line([shards[i] for i in line])
        for i, value in zip(line, results):
            out[i] = value
    return _out(tensor, out)


def all_gather(input_tensor, dim, *, cluster_axis=None, memory_config=None, topology=None, num_links=None, **_):
    """Every device receives the concatenation, in line order, of the pieces of all devices on its line."""
    return _collective(input_tensor, cluster_axis, lambda parts: [torch.cat(parts, dim=dim)] * len(parts))


def reduce_scatter(input_tensor, dim, *, cluster_axis=None, memory_config=None, topology=None, num_links=None, **_):
    """The sum over the line, of which device k keeps the k-th chunk along `dim`."""
    def per_line(parts):
        total = torch.stack([_f(p) for p in parts]).sum(0)
        return list(total.chunk(len(parts), dim=dim))

    return _collective(input_tensor, cluster_axis, per_line)


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


def _all_gather_async(input_tensor, dim, cluster_axis, mesh_device, topology, multi_device_global_semaphore, *,
                      persistent_output_tensor=None, num_links=None, memory_config=None, subdevice_id=None,
                      use_optimal_ccl_for_llama=False, use_broadcast=False, barrier_semaphore=None,
                      sub_core_grids=None, num_workers_per_link=None, num_buffers_per_channel=None):
    """ttnn.experimental.all_gather_async (its cluster_axis/mesh_device overload): all_gather's data movement."""
    _check_mesh("all_gather_async", input_tensor, mesh_device)
    _check_semaphores("all_gather_async", "multi_device_global_semaphore", multi_device_global_semaphore, 2)
    result = all_gather(input_tensor, dim, cluster_axis=cluster_axis, topology=topology)
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


def _reduce_scatter_minimal_async(input_tensor, persistent_output_buffers=None, dim=None,
                                  multi_device_global_semaphore=None, *, barrier_semaphore=None, num_links=None,
                                  memory_config=None, intermediate_memory_config=None, topology=None,
                                  subdevice_id=None, cluster_axis=None, chunks_per_sync=None,
                                  num_workers_per_link=None, num_buffers_per_channel=None, compute_kernel_config=None):
    _check_semaphores("reduce_scatter_minimal_async", "multi_device_global_semaphore",
                      multi_device_global_semaphore, 3)
    return reduce_scatter(input_tensor, dim, cluster_axis=cluster_axis, topology=topology)


def _all_reduce_async(input_tensor, cluster_axis=None, mesh_device=None, barrier_semaphores=None,
                      rs_global_semaphores=None, ag_global_semaphores=None, math_op=None, *, memory_config=None,
                      topology=None, num_links=None, subdevice_id=None):
    """ttnn.experimental.all_reduce_async (its cluster_axis/mesh_device overload): a sum over the line."""
    _check_mesh("all_reduce_async", input_tensor, mesh_device)
    for name, value, count in (("barrier_semaphores", barrier_semaphores, 2),
                               ("rs_global_semaphores", rs_global_semaphores, 3),
                               ("ag_global_semaphores", ag_global_semaphores, 2)):
        _check_semaphores("all_reduce_async", name, value, count)
    if math_op != ReduceType.Sum:
        raise RuntimeError(f"TT_FATAL (simulated): all_reduce_async: only ReduceType.Sum is simulated, got {math_op}")
    return all_reduce(input_tensor, cluster_axis=cluster_axis, topology=topology)


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


def mesh_partition(input_tensor, dim, cluster_axis=None, *, memory_config=None):
    """Each device keeps its own chunk of a tensor replicated along the line; no data moves.

    As on device, a TILE tensor splits along its rows (dim -2) only into whole 32-row tiles: real ttnn stops with
    "height begin index aligned to tiles" (64 rows over 4 devices, 16 rows each, fails)."""
    rank = len(input_tensor.shape)
    dim = dim % rank
    ring = len(input_tensor._device.lines(cluster_axis)[0]) if input_tensor._device is not None else 1
    rows = input_tensor.shape[dim]
    if input_tensor.layout is TILE_LAYOUT and rank >= 2 and dim == rank - 2 and ring > 1:
        if rows % ring or (rows // ring) % 32:
            raise RuntimeError(f"TT_FATAL (simulated): mesh_partition of {list(input_tensor.shape)} along dim {dim} "
                               f"over {ring} devices: height begin index aligned to tiles (each piece must be a "
                               "whole number of 32-row tiles)")
    return _collective(input_tensor, cluster_axis,
                       lambda parts: [p.chunk(len(parts), dim=dim)[k].contiguous() for k, p in enumerate(parts)])


def _ring_joint_scaled_dot_product_attention(
        input_tensor_q, input_tensor_k, input_tensor_v, joint_tensor_q=None, joint_tensor_k=None,
        joint_tensor_v=None, *, persistent_output_buffer_k, persistent_output_buffer_v, joint_strategy, logical_n,
        program_config, scale=None, compute_kernel_config=None, dim, multi_device_global_semaphore, num_links,
        cluster_axis, mesh_device, topology, ccl_core_grid_offset, **_):
    """Ring attention over the sequence-sharded main stream, prompt ("joint") tokens appended once.

    Each device starts with its own K/V chunk; at every step it attends to the chunk it holds, then passes that
    chunk to the next device on the ring (real data movement between shards), accumulating with an online
    softmax. After ring-size steps every device has seen every chunk. The gathered K/V land in the persistent
    buffers, as the real op's all-gather does. Keys at global sequence positions >= logical_n (the padding that
    makes every shard whole tiles) are masked out, as the real op does. Returns (output, joint output, lse)."""
    if joint_strategy != "rear" or dim != 2:
        raise RuntimeError("TT_FATAL (simulated): ring joint SDPA supports joint_strategy='rear', dim=2")
    _check_device(input_tensor_q)
    has_joint = joint_tensor_q is not None
    n_dev = len(input_tensor_q.shards)
    outs, joint_outs, lses = [None] * n_dev, [None] * n_dev, [None] * n_dev
    k_buf, v_buf = [None] * n_dev, [None] * n_dev
    for line in mesh_device.lines(cluster_axis):
        ring = len(line)
        held = [(_f(input_tensor_k.shards[i]), _f(input_tensor_v.shards[i]), pos) for pos, i in enumerate(line)]
        state = {}
        for pos, i in enumerate(line):
            q = _f(input_tensor_q.shards[i])
            queries = torch.cat([q, _f(joint_tensor_q.shards[i])], dim=-2) if has_joint else q
            sc = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
            state[i] = [queries, sc, None, None, None, [None] * ring, [None] * ring]
            if has_joint:  # the prompt K/V join once
                _online_step(state[i], _f(joint_tensor_k.shards[i]), _f(joint_tensor_v.shards[i]))
        for _step in range(ring):
            for pos, i in enumerate(line):
                k, v, origin = held[pos]
                first = origin * k.shape[-2]  # global position of the chunk's first key
                valid = torch.arange(first, first + k.shape[-2]) < logical_n
                _online_step(state[i], k, v, valid)
                state[i][5][origin], state[i][6][origin] = k, v
            held = [held[(pos - 1) % ring] for pos in range(ring)]  # each device passes its chunk on
        for pos, i in enumerate(line):
            queries, _sc, m, l, acc, ks, vs = state[i]
            out = acc / l
            n_local = input_tensor_q.shards[i].shape[-2]
            outs[i], joint_outs[i] = out[..., :n_local, :], out[..., n_local:, :]
            lses[i] = m + torch.log(l)
            k_buf[i], v_buf[i] = torch.cat(ks, dim=-2), torch.cat(vs, dim=-2)
    persistent_output_buffer_k.shards = [round_to(t, persistent_output_buffer_k.dtype.name) for t in k_buf]
    persistent_output_buffer_v.shards = [round_to(t, persistent_output_buffer_v.dtype.name) for t in v_buf]
    joint_ref = joint_tensor_q if has_joint else input_tensor_q
    return (_out(input_tensor_q, outs), _out(joint_ref, joint_outs), _out(input_tensor_q, lses, float32))


def _online_step(state, k, v, valid=None):
    """Fold one K/V chunk into a running softmax (max m, denominator l, numerator acc).

    valid: per key, whether it is a real token; masked keys score -inf. A chunk of padding only (a device whose
    shard is all padding) leaves the running max at -inf; exp() is then taken against 0, giving 0, not NaN."""
    queries, scale, m, l, acc = state[:5]
    scores = torch.matmul(queries, k.transpose(-1, -2)) * scale
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    chunk_max = scores.amax(-1, keepdim=True)
    new_m = chunk_max if m is None else torch.maximum(m, chunk_max)
    shift = torch.where(torch.isinf(new_m), torch.zeros_like(new_m), new_m)  # -inf - -inf would be NaN
    p = torch.exp(scores - shift)
    correction = torch.exp(m - shift) if m is not None else None
    l_new = p.sum(-1, keepdim=True) + (l * correction if l is not None else 0)
    acc_new = torch.matmul(p, v) + (acc * correction if acc is not None else 0)
    state[2], state[3], state[4] = new_m, l_new, acc_new


transformer = SimpleNamespace(
    scaled_dot_product_attention=_scaled_dot_product_attention,
    joint_scaled_dot_product_attention=_joint_scaled_dot_product_attention,
    ring_joint_scaled_dot_product_attention=_ring_joint_scaled_dot_product_attention,
)
experimental = SimpleNamespace(all_to_all_async_generic=_all_to_all_async_generic, all_gather_async=_all_gather_async,
                               reduce_scatter_minimal_async=_reduce_scatter_minimal_async,
                               all_reduce_async=_all_reduce_async)

import builtins as _builtins  # noqa: E402  (after the ops that shadow builtins' names)

builtins_slice = _builtins.slice


# --- trace capture and replay -----------------------------------------------------------------------------------
# On a device, the ops issued between begin_trace_capture and end_trace_capture are recorded into a command buffer
# (not run), and execute_trace replays it: the same programs on the same buffers, so a replay reads whatever the
# input buffers hold now and writes into the same output buffers. The simulation records each op called on the
# capturing mesh (its function, argument objects and output tensors) and replays by calling the function again on
# those argument objects, then moving the new values into the recorded output tensors. Arguments are read at replay
# time, so a replay recomputes from the current inputs; collectives and ring attention replay like any op (their
# persistent buffers and semaphores are arguments, made before capture).
#
# Capture does run the ops here (the simulation needs their shapes), but end_trace_capture then fills every
# captured output with NaN: on hardware they hold nothing until execute_trace, and a caller that reads them
# before replaying must not see plausible numbers.

class MeshTraceId(int):
    def __repr__(self):
        return f"MeshTraceId({int(self)})"


@dataclass
class _Recorded:
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
_op_depth = [0]  # > 0 inside an op or a replay: an op another op calls (matmul -> linear) is not recorded again


def _refuse_during_capture(device, what):
    """ttnn stops host writes to and reads from a mesh that is capturing a trace."""
    if getattr(device, "recording", None) is not None:
        raise RuntimeError(f"TT_FATAL (simulated): {what} are not supported during trace capture (on {device!r})")


def _device_of(values):
    """The mesh an op runs on: that of its first device tensor, or a mesh_device argument."""
    for value in values:
        if isinstance(value, Tensor) and value._device is not None:
            return value._device
        if isinstance(value, MeshDevice):
            return value
        if isinstance(value, (list, tuple)):
            found = _device_of(value)
            if found is not None:
                return found
    return None


def _output_tensors(result) -> list:
    if isinstance(result, Tensor):
        return [result]
    if isinstance(result, (list, tuple)):
        return [t for t in result if isinstance(t, Tensor)]
    return []


def _recorded_op(name, fn):
    """fn, recorded into the trace its mesh is capturing (if any) each time it is called."""
    @functools.wraps(fn)
    def op(*args, **kwargs):
        trace = None
        if _op_depth[0] == 0:
            device = _device_of(list(args) + list(kwargs.values()))
            trace = device.recording if device is not None else None
        _op_depth[0] += 1
        try:
            result = fn(*args, **kwargs)
        finally:
            _op_depth[0] -= 1
        if trace is not None:
            trace.ops.append(_Recorded(name, fn, args, dict(kwargs), _output_tensors(result)))
        return result

    return op


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
    for record in trace.ops:  # captured, not yet run (see above)
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
    _op_depth[0] += 1
    try:
        for record in trace.ops:
            fresh = _output_tensors(record.fn(*record.args, **record.kwargs))
            if len(fresh) != len(record.outputs) or any(
                    new.shape != old.shape or new.dtype is not old.dtype for new, old in zip(fresh, record.outputs)):
                raise RuntimeError(f"TT_FATAL (simulated): replaying {record.name} gave "
                                   f"{[(n.shape, n.dtype) for n in fresh]}, captured "
                                   f"{[(o.shape, o.dtype) for o in record.outputs]}")
            for new, old in zip(fresh, record.outputs):
                old.shards = new.shards  # a new list: shards may alias other tensors' storage, never write into them
    finally:
        _op_depth[0] -= 1


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


# Every public function above that is not host/device management is an op: record it while its mesh captures.
# Done by exclusion so that an op added later is recorded without anyone remembering to list it.
_NOT_OPS = {"open_mesh_device", "close_mesh_device", "create_global_semaphore", "replicate_tensor_to_mesh_mapper",
            "create_mesh_mapper", "get_device_tensors", "from_device", "to_device", "from_torch", "to_torch",
            "dump_tensor", "load_tensor", "begin_trace_capture", "end_trace_capture", "execute_trace",
            "release_trace", "copy_host_to_device_tensor", "trace_ops"}
for _name, _fn in list(globals().items()):
    if isinstance(_fn, types.FunctionType) and _fn.__module__ == __name__ and not _name.startswith("_") \
            and _name not in _NOT_OPS:
        globals()[_name] = _recorded_op(_name, _fn)
for _prefix, _space in (("transformer.", transformer), ("experimental.", experimental)):
    for _name, _fn in list(vars(_space).items()):
        setattr(_space, _name, _recorded_op(_prefix + _name, _fn))
del _name, _fn, _prefix, _space
