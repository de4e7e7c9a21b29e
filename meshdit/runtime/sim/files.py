"""Tensor files: the simulated ttnn.dump_tensor / ttnn.load_tensor.

The weight cache (runtime/device.py) writes converted weights with dump_tensor and reads them back with
load_tensor, on real ttnn and here alike. The simulation keeps ttnn's contract (the .tensorbin extension, every
per-device shard and the mesh shape it was laid out for, a damaged file raising) so that the cache's logic is tested
here; the bytes are a safetensors file, not ttnn's flatbuffer.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .tensor import ROW_MAJOR_LAYOUT, TILE_LAYOUT, MeshShape, Tensor, bfloat8_b, bfloat16, float32, int32, \
    to_device, uint32


class DumpTensorMode:
    DISTRIBUTED_GATHER = "DISTRIBUTED_GATHER"  # ttnn's default; on one host it writes every shard, as LOCAL does
    LOCAL = "LOCAL"


SIM_TENSOR_FORMAT = "meshdit-sim-tensor/1"


def _tensor_file(file_name) -> str:
    """ttnn refuses a tensor file name not ending in .tensorbin; so does the simulation, so that a path accepted
    here is accepted on device."""
    path = os.fspath(file_name)
    if not str(path).endswith(".tensorbin"):
        raise RuntimeError(f"File {path} must have .tensorbin extension")
    return path


def dump_tensor(file_name, tensor, *, mode=DumpTensorMode.DISTRIBUTED_GATHER):
    """Write a tensor's per-device shards with its dtype, layout and mesh shape, so load_tensor gives the same
    tensor back. A safetensors file stands in for ttnn's flatbuffer. As ttnn does, identical shards (replicated
    placements) are stored once; bfloat16 / bfloat8_b values are stored as bfloat16 (they are exact in it), so
    file sizes stay close to the device format's."""
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
