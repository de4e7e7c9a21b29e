"""Rounding as Tenstorrent data formats round, so simulated PCC means what it would on hardware.

- bfloat16: round-to-nearest-even to 8 exponent / 7 mantissa bits (torch's own bfloat16 cast).
- bfloat8_b: block floating point. In TILE layout each row of a 16x16 face (16 consecutive values along the last
  dim) shares one 8-bit exponent; each value keeps a sign and a 7-bit mantissa aligned to that exponent, so values
  much smaller than the block maximum lose precision or flush to zero. Emulated per 16-wide group of the last dim.
- float32 / int32 / uint32: exact.
Arithmetic itself is done in float32 (the matmul configs accumulate in fp32) and rounded at each op's output.
"""

from __future__ import annotations

import torch

BFP_GROUP = 16
BFP8_MANTISSA_BITS = 7


def round_bfloat16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).to(torch.float32)


def round_bfloat8_b(t: torch.Tensor) -> torch.Tensor:
    t = t.to(torch.float32)
    if t.numel() == 0:
        return t
    shape = t.shape
    flat = t.reshape(-1, shape[-1]) if t.dim() else t.reshape(1, 1)
    width = flat.shape[-1]
    pad = (-width) % BFP_GROUP
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    groups = flat.reshape(flat.shape[0], -1, BFP_GROUP)
    # Shared exponent: that of the largest magnitude in the group (values first rounded to bf16, as the packer does).
    groups = round_bfloat16(groups)
    biggest = groups.abs().amax(dim=-1, keepdim=True)
    exponent = torch.floor(torch.log2(torch.where(biggest > 0, biggest, torch.ones_like(biggest))))
    step = torch.pow(2.0, exponent - (BFP8_MANTISSA_BITS - 1))
    limit = 2 ** BFP8_MANTISSA_BITS - 1
    quantised = torch.clamp(torch.round(groups / step), -limit, limit) * step
    quantised = torch.where(biggest > 0, quantised, torch.zeros_like(quantised))
    out = quantised.reshape(flat.shape[0], -1)[:, :width]
    return out.reshape(shape)


def round_to(t: torch.Tensor, dtype_name: str) -> torch.Tensor:
    """Round a float32 tensor to a device data format (name as in ttnn: bfloat16, bfloat8_b, ...)."""
    if dtype_name == "float32":
        return t.to(torch.float32)
    if dtype_name == "bfloat16":
        return round_bfloat16(t)
    if dtype_name == "bfloat8_b":
        return round_bfloat8_b(t)
    if dtype_name in ("int32", "uint32"):
        return t.to(torch.int64)
    raise ValueError(f"unknown device dtype {dtype_name}")
