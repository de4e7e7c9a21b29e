"""A simulated TT-NN: the subset of the ttnn 0.81.1 API meshdit emits, executed on CPU with torch.

A MeshDevice of R x C devices holds, for each device tensor, one torch tensor per device (its shard), so a program
written for a mesh runs here with the data each chip would hold. Every op runs per device on that device's shard;
collectives (added with sharding) move data between shards. Each op's output is rounded to its data format
(runtime/numerics.py), so bfloat16 / bfloat8_b PCC is meaningful.

Signatures follow ttnn's: same positional order and keyword names, so a call accepted here is spelled as ttnn
spells it. Memory configs, program configs and compute kernel configs are accepted and recorded, not simulated.
"""

from __future__ import annotations

import math
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

    def __init__(self, shape):
        self.shape = MeshShape(shape)
        self.is_open = True

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
        return [MeshDevice((sub_rows, sub_cols)) for _ in range((rows // sub_rows) * (cols // sub_cols))]

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


def open_mesh_device(mesh_shape=None, **_ignored):
    return MeshDevice(mesh_shape or MeshShape(1, 1))


def close_mesh_device(mesh_device):
    mesh_device.is_open = False


# --- tensors ----------------------------------------------------------------------------------------------------
class Tensor:
    """A (possibly distributed) tensor: one torch shard per device, or a single host copy."""

    def __init__(self, tensor=None, data_type=None, device=None, layout=None, mem_config=None, tile=None,
                 cq_id=None, pad_value=None, mesh_mapper=None, *, _shards=None, _dtype=None, _layout=None):
        if _shards is not None:
            self.shards, self.dtype, self.layout, self._device = _shards, _dtype, _layout, device
            return
        array = torch.as_tensor(np.asarray(tensor))
        self.dtype = data_type or (float32 if array.is_floating_point() else int32)
        self.layout = layout or ROW_MAJOR_LAYOUT
        value = round_to(array.to(torch.float32) if array.is_floating_point() else array, self.dtype.name)
        if device is None:
            self.shards, self._device = [value], None
        else:
            mapper = mesh_mapper or replicate_tensor_to_mesh_mapper(device)
            self.shards, self._device = mapper.split(value, device), device

    # ttnn.Tensor surface
    @property
    def shape(self):
        return tuple(self.shards[0].shape)

    @property
    def padded_shape(self):
        from ...lowering.ir import tile_padded

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

    def __init__(self, dims):
        self.dims = tuple(dims)

    def split(self, value, device):
        rows, cols = device.shape
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


def replicate_tensor_to_mesh_mapper(mesh_device):
    return _Mapper((None, None))


def create_mesh_mapper(mesh_device, config):
    return _Mapper(tuple(p.dim if isinstance(p, PlacementShard) else None for p in config.placements))


def get_device_tensors(tensor):
    return [Tensor(_shards=[s], _dtype=tensor.dtype, _layout=tensor.layout, device=None) for s in tensor.shards]


def from_device(tensor, blocking=True, *, queue_id=None):
    return Tensor(_shards=list(tensor.shards), _dtype=tensor.dtype, _layout=tensor.layout, device=None)


def to_device(tensor, device, memory_config=None, *, queue_id=None):
    shards = tensor.shards if len(tensor.shards) > 1 else _Mapper((None, None)).split(tensor.shards[0], device)
    return Tensor(_shards=shards, _dtype=tensor.dtype, _layout=tensor.layout, device=device)


def from_torch(tensor, dtype=None, *, layout=None, device=None, mesh_mapper=None, **_ignored):
    return Tensor(tensor.detach().cpu().float().numpy() if tensor.is_floating_point() else tensor.numpy(),
                  data_type=dtype, device=device, layout=layout, mesh_mapper=mesh_mapper)


def to_torch(tensor, dtype=None, *, mesh_composer=None, **_ignored):
    return tensor.shards[0].clone()


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


def _all_to_all_async_generic(input_tensor, in_dim, out_dim, *, persistent_output_buffer=None, num_links=None,
                              memory_config=None, topology=None, subdevice_id=None, cluster_axis=None):
    """Device i cuts its tensor into ring-size chunks along in_dim and sends chunk j to device j; each device
    concatenates what it receives, in line order, along out_dim."""
    def per_line(parts):
        n = len(parts)
        chunks = [p.chunk(n, dim=in_dim) for p in parts]
        return [torch.cat([chunks[i][j] for i in range(n)], dim=out_dim).contiguous() for j in range(n)]

    return _collective(input_tensor, cluster_axis, per_line)


def mesh_partition(input_tensor, dim, cluster_axis=None, *, memory_config=None):
    """Each device keeps its own chunk of a tensor replicated along the line; no data moves."""
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
    buffers, as the real op's all-gather does. Returns (output, joint output, log-sum-exp)."""
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
                _online_step(state[i], k, v)
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


def _online_step(state, k, v):
    """Fold one K/V chunk into a running softmax (max m, denominator l, numerator acc)."""
    queries, scale, m, l, acc = state[:5]
    scores = torch.matmul(queries, k.transpose(-1, -2)) * scale
    chunk_max = scores.amax(-1, keepdim=True)
    new_m = chunk_max if m is None else torch.maximum(m, chunk_max)
    p = torch.exp(scores - new_m)
    correction = torch.exp(m - new_m) if m is not None else None
    l_new = p.sum(-1, keepdim=True) + (l * correction if l is not None else 0)
    acc_new = torch.matmul(p, v) + (acc * correction if acc is not None else 0)
    state[2], state[3], state[4] = new_m, l_new, acc_new


transformer = SimpleNamespace(
    scaled_dot_product_attention=_scaled_dot_product_attention,
    joint_scaled_dot_product_attention=_joint_scaled_dot_product_attention,
    ring_joint_scaled_dot_product_attention=_ring_joint_scaled_dot_product_attention,
)
experimental = SimpleNamespace(all_to_all_async_generic=_all_to_all_async_generic)

import builtins as _builtins  # noqa: E402  (after the ops that shadow builtins' names)

builtins_slice = _builtins.slice
