"""What every attention strategy shares: the call's operands, head-dim padding, SDPA program configs, scales."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import torch.fx as fx

from ...ir.tiles import tile_up
from ..builder import Builder
from ..program_ir import Code


@dataclass
class AttentionCall:
    """One attention node's operands: the main stream's q/k/v and, for joint attention, the prompt stream's."""

    node: fx.Node
    main: list  # [query, key, value] nodes, [batch, heads, tokens, head dim]
    joint: list | None  # [joint query, joint key, joint value] nodes, or None
    scale: float | None
    mask: fx.Node | None = None
    causal: bool = False

    @property
    def operands(self) -> list:
        return self.main + (self.joint or [])

    @property
    def head_dim(self) -> int:
        return self.main[0].meta["val"].shape[-1]

    @property
    def dtype(self):
        return self.main[0].meta["val"].dtype


def pad_head_dim(b: Builder, call: AttentionCall, values: list):
    """ttnn's attention kernels refuse a head dim that is not whole tiles ("Padding is not supported on the head_dim
    dimension"). Zero-pad q, k, v (and the joint ones) to the next multiple of 32: the extra zeros add nothing to
    q.k, and give zero output columns, sliced off after. The scale is fixed to the logical head dim's.
    Returns (values, scale, logical head dim or None when no padding was needed)."""
    head_dim = call.head_dim
    padded = tile_up(head_dim)
    if padded == head_dim:
        return values, call.scale, None
    out = [b.pad_dim(value, list(b.local(arg)), -1, padded, arg.meta["val"].dtype)
           for value, arg in zip(values, call.operands)]
    return out, (call.scale if call.scale is not None else head_dim ** -0.5), head_dim


def head_padded(shape, head_dim) -> list:
    """A local attention operand shape with its head dim padded to whole tiles (unchanged when head_dim is None)."""
    shape = list(shape)
    return shape if head_dim is None else shape[:-1] + [tile_up(head_dim)]


def float32_scalar(value) -> float:
    """A Python float that a C++ `float` parameter accepts as it is. ttnn's nanobind bindings refuse a float that
    float32 cannot hold exactly (joint SDPA raised "incompatible function arguments" for scale=0.2 and took 0.25),
    so attention scales are rounded to float32 on the host, which is what the kernel uses anyway."""
    return struct.unpack("f", struct.pack("f", float(value)))[0]


def scale_kwargs(b: Builder, scale) -> dict:
    kwargs = {"scale": float32_scalar(scale)} if scale is not None else {}
    kwargs["compute_kernel_config"] = b.config("SDPA_CONFIG")
    return kwargs


def chunk_size(seq: int) -> int:
    """The q/k chunk of an SDPA program: the largest of 256, 128, 64, 32 that divides the tile-padded sequence."""
    padded = tile_up(seq)
    return next((size for size in (256, 128, 64, 32) if padded % size == 0), 32)


def sdpa_program(b: Builder, seq: int, ring: bool = False) -> Code:
    chunk = chunk_size(seq)
    if ring:  # the ring's K/V transfer runs on the last core row: SDPA must leave it free
        return b.config(f"RING_SDPA_PROGRAM_{chunk}", (
            "ttnn.SDPAProgramConfig(compute_with_storage_grid_size=ttnn.CoreCoord(DEVICE_GRID.x, DEVICE_GRID.y - 1), "
            f"q_chunk_size={chunk}, k_chunk_size={chunk}, exp_approx_mode=False)"))
    return b.config(f"SDPA_PROGRAM_{chunk}", (
        "ttnn.SDPAProgramConfig(compute_with_storage_grid_size=DEVICE_GRID, "
        f"q_chunk_size={chunk}, k_chunk_size={chunk}, exp_approx_mode=False)"))
