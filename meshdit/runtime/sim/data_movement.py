"""Data movement ops: reshape, permute, transpose, slice, concat, pad, repeat, to_layout.

Each rearranges every device's shard on its own; nothing moves between devices (the collectives in ccl.py do that).
"""

from __future__ import annotations

import builtins

import torch
import torch.nn.functional as F

from .registry import sim_op
from .tensor import TILE, TILE_LAYOUT, _check_device, _map, _out


@sim_op("reshape")
def reshape(input_tensor, shape, *, memory_config=None, **_):
    return _map(lambda x: x.reshape(tuple(shape)), input_tensor)


@sim_op("permute")
def permute(input_tensor, dims, *, memory_config=None, pad_value=0.0):
    return _map(lambda x: x.permute(tuple(dims)).contiguous(), input_tensor)


@sim_op("transpose")
def transpose(input_tensor, dim1, dim2, *, memory_config=None, pad_value=0.0):
    return _map(lambda x: x.transpose(dim1, dim2).contiguous(), input_tensor)


@sim_op("slice")
def slice(input_tensor, starts, ends, slice_step=None, *, memory_config=None, **_):  # noqa: A001 - ttnn's name
    steps = slice_step or [1] * len(starts)
    index = tuple(builtins.slice(s, e, st) for s, e, st in zip(starts, ends, steps))
    return _map(lambda x: x[index].contiguous(), input_tensor)


@sim_op("concat")
def concat(tensors, dim=0, *, memory_config=None, **_):
    ref = tensors[0]
    _check_device(*tensors)
    n = len(ref.shards)
    return _out(ref, [torch.cat([t.shards[i] for t in tensors], dim=dim) for i in range(n)])


@sim_op("pad")
def pad(input_tensor, padding, value, *, use_multicore=True, memory_config=None, **_):
    if input_tensor.layout.name == "TILE" and any(p[0] for p in padding):
        raise RuntimeError("TT_FATAL (simulated) @ pad.cpp: front_padding_is_zero (ttnn.pad: on device tile padding "
                           "does not support front padding; pad a ROW_MAJOR tensor)")
    flat = []
    for lo, hi in reversed([tuple(p) for p in padding]):
        flat += [lo, hi]
    return _map(lambda x: F.pad(x, flat, value=value), input_tensor)


@sim_op("repeat")
def repeat(input_tensor, repeat_dims, *, memory_config=None, **_):
    return _map(lambda x: x.repeat(tuple(repeat_dims)), input_tensor)


@sim_op("to_layout")
def to_layout(tensor, layout, dtype=None, memory_config=None, sub_core_grids=None, pad_value=0.0):
    """Tilize or untilize: the values stay; what changes is which ops take the tensor (a row-major tensor slices and
    partitions at any width). bfloat8_b exists only in tiles, as on device."""
    _check_device(tensor)
    if layout.name == "ROW_MAJOR" and tensor.dtype.name == "bfloat8_b":
        raise RuntimeError("TT_FATAL (simulated): bfloat8_b tensors must be in TILE layout")
    out = _out(tensor, list(tensor.shards))
    out.layout = layout
    return out


def _heads_check(what, head_size, where):
    """ttnn's head split and concat work on whole 32-wide tiles of the head dim (split_query_key_value_and_split_heads
    .cpp: `head_size % TILE_WIDTH == 0`; concatenate_heads.cpp: `head_size % TILE_SIZE == 0`)."""
    if head_size % TILE:
        raise RuntimeError(f"TT_FATAL (simulated) @ {where}: {what}: head size {head_size} is not a multiple of the "
                           f"tile width {TILE} (pad the head dim in the preceding matmul's weights)")


@sim_op("transformer.split_query_key_value_and_split_heads")
def split_query_key_value_and_split_heads(input_tensor, kv_input_tensor=None, *, num_heads, num_kv_heads=None,
                                          transpose_key=True, memory_config=None, use_falcon7b_backend=False):
    """[B, S, 3 * H * D] -> q, k, v as [B, H, S, D] (k as [B, H, D, S] with transpose_key, ttnn's default). The last
    dim holds all of q's heads, then k's, then v's (interleaved memory; ttnn's docstring gives the torch form); with
    kv_input_tensor, q comes from input_tensor [B, S, H * D] and k, v from kv_input_tensor [B, S, 2 * H * D]."""
    where = "split_query_key_value_and_split_heads.cpp"
    _check_device(input_tensor, kv_input_tensor)
    if len(input_tensor.shape) != 3:
        raise RuntimeError(f"TT_FATAL (simulated) @ {where}: input_shape.rank() == 3 (got {list(input_tensor.shape)})")
    if input_tensor.layout is not TILE_LAYOUT:
        raise RuntimeError(f"TT_FATAL (simulated) @ {where}: input tensor must use TILE_LAYOUT")
    if num_kv_heads is not None:
        raise NotImplementedError("simulated split_query_key_value_and_split_heads: num_kv_heads (grouped K/V heads, "
                                  "the falcon7b path) is not simulated")
    width = input_tensor.shape[-1]
    head_size = width // num_heads if kv_input_tensor is not None else width // (3 * num_heads)
    if kv_input_tensor is not None and list(kv_input_tensor.shape) != [*input_tensor.shape[:2], 2 * width]:
        raise RuntimeError(f"TT_FATAL (simulated) @ {where}: kv_input_tensor {list(kv_input_tensor.shape)} must be "
                           f"[batch, sequence, 2 * {width}]")
    _heads_check("split_query_key_value_and_split_heads", head_size, where)
    if head_size * num_heads * (1 if kv_input_tensor is not None else 3) != width:
        raise RuntimeError(f"TT_FATAL (simulated) @ {where}: width {width} is not 3 x {num_heads} heads")

    def heads(x, index):  # [B, S, n * H * D] -> the index-th [B, H, S, D]
        b, s = x.shape[:2]
        return x[..., index * num_heads * head_size:(index + 1) * num_heads * head_size] \
            .reshape(b, s, num_heads, head_size).permute(0, 2, 1, 3).contiguous()

    kv = kv_input_tensor if kv_input_tensor is not None else input_tensor
    first = 0 if kv_input_tensor is not None else 1
    q = _map(lambda x: heads(x, 0), input_tensor)
    k = _map(lambda x: heads(x, first).transpose(-1, -2).contiguous() if transpose_key else heads(x, first), kv)
    v = _map(lambda x: heads(x, first + 1), kv)
    return q, k, v


@sim_op("transformer.concatenate_heads")
def concatenate_heads(input_tensor, *, memory_config=None):
    """[B, H, S, D] -> [B, S, H * D]."""
    where = "concatenate_heads.cpp"
    if len(input_tensor.shape) != 4:
        raise RuntimeError(f"TT_FATAL (simulated) @ {where}: input_logical_shape.rank() == 4 "
                           f"(got {list(input_tensor.shape)})")
    _heads_check("concatenate_heads", input_tensor.shape[-1], where)
    return _map(lambda x: x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1).contiguous(), input_tensor)
