"""Rounding as Tenstorrent data formats round, so simulated PCC means what it would on hardware.

- bfloat16: round-to-nearest-even to 8 exponent / 7 mantissa bits (torch's own bfloat16 cast).
- bfloat8_b: block floating point. In TILE layout each row of a 16x16 face (16 consecutive values along the last
  dim) shares one 8-bit exponent; each value keeps a sign and a 7-bit mantissa aligned to that exponent, so values
  much smaller than the block maximum lose precision or flush to zero. Emulated per 16-wide group of the last dim.
- float32 / int32 / uint32: exact.
Arithmetic itself is done in float32 (the matmul configs accumulate in fp32) and rounded at each op's output.

Math fidelity (matmul operands): Wormhole's multipliers are 5 x 7 bits. A matmul's in1 (weights) goes to SrcA and
in0 (activations) to SrcB (llk_unpack_AB_matmul: "In0 -> srcB, In1 -> srcA"); each fidelity phase multiplies a
4-bit slice of SrcA's mantissa (plus the hidden bit) by a 6-bit slice of SrcB's (tt-metal
tech_reports/matrix_engine/matrix_engine.md): LoFi the high slices only, HiFi2 adds SrcA's next 4 bits, HiFi3 adds
SrcB's next 6 bits against SrcA's high slice, HiFi4 all four products. `fidelity_operands` truncates bfloat16 /
bfloat8_b operands to the mantissa bits their phases read (float32 operands are left exact: their TF32-like source
format is not emulated).
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


# fidelity -> (mantissa bits of SrcA (in1) read, of SrcB (in0) read) for bfloat16-family sources (7 stored bits).
# HiFi3's missing low x low product and HiFi4 are within bfloat16's own precision: treated as exact.
FIDELITY_BITS = {"LoFi": (4, 6), "HiFi2": (7, 6), "HiFi3": (7, 7), "HiFi4": (7, 7)}
BF16_MANTISSA_BITS = 7


def truncate_mantissa(t: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the hidden bit and the `bits` most significant stored mantissa bits of each value (the rest dropped,
    as a multiplier slice reads them: truncation toward zero)."""
    if bits >= BF16_MANTISSA_BITS:
        return t
    mantissa, exponent = torch.frexp(t.to(torch.float32))  # |mantissa| in [0.5, 1): the hidden bit is 0.5
    scale = float(2 ** (bits + 1))
    return torch.ldexp(torch.trunc(mantissa * scale) / scale, exponent)


def fidelity_operands(in0: torch.Tensor, in1: torch.Tensor, fidelity: str, in0_format: str, in1_format: str):
    """A matmul's operands as the fidelity's phases read them (see the module docstring)."""
    a_bits, b_bits = FIDELITY_BITS[fidelity]
    low = ("bfloat16", "bfloat8_b")
    if in0_format in low:
        in0 = truncate_mantissa(in0, b_bits)
    if in1_format in low:
        in1 = truncate_mantissa(in1, a_bits)
    return in0, in1
