"""Data movement ops: reshape, permute, transpose, slice, concat, pad, repeat, to_layout.

Each rearranges every device's shard on its own; nothing moves between devices (the collectives in ccl.py do that).
"""

from __future__ import annotations

import builtins

import torch
import torch.nn.functional as F

from .registry import sim_op
from .tensor import _check_device, _map, _out


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
