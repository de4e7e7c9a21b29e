"""What every attention strategy shares: the call's operands, head-dim padding, SDPA program configs, scales."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import torch.fx as fx

from ...cost.calibration import FITTED
from ...cost.ops import attention_pass, fidelity_of
from ...ir import sdpa as sdpa_facts
from ...ir.tiles import tile_up
from ..builder import CONFIGS, Builder
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


# Chunk sizes tried (TT-DiT's on Wormhole: q 256 for SD3.5, 128 for Flux and Mochi; k 512, 256 at sp8). q chunks
# below MIN_Q_CHUNK only for streams shorter than it: a q chunk's fixed work is more than the cost model's softmax
# tiles (its K/V pipeline start, the Q read), which is why TT-DiT stays at 128 or more; a stream of 64 queries in a
# 128 chunk computes padding.
Q_CHUNKS = (256, 128, 64, 32)
MIN_Q_CHUNK = 128
K_CHUNKS = (512, 256, 128, 64, 32)


def choose_chunks(b: Builder, kind: str, batch_heads: int, q_lengths, passes, head_dim: int, cores: int,
                  l1_k_lengths=None, masked: bool = False) -> sdpa_facts.Chunks:
    """The q/k chunk sizes of one SDPA op, from its per-device shapes.

    kind: "sdpa", "joint" or "ring" (ir/sdpa.py); q_lengths: the query streams (image, prompt), tile-padded;
    passes: the ir/sdpa.py Passes the kernel makes over these queries (a ring's: ring_passes); l1_k_lengths: the
    key lengths whose padding the kernel masks (default: every pass's). The pair is the one the cost model's SDPA
    term says is fastest on the system's grid (cost/ops.py attention_pass: few heads leave cores idle at large q
    chunks, small ones take more (q chunk, k chunk) steps, each with a fixed cost; small k chunks rescale the
    running output more often, a k chunk that does not divide the keys computes its masked tail), the larger q
    and then k on a tie, and q not below
    MIN_Q_CHUNK unless the queries are shorter. The kernels mask a last partial k chunk (ring_joint_sdpa.cpp's
    local and global masks, the padded and joint masks of the others), so the sequence is not padded to whole k
    chunks: padding it would add the same masked rows to attention and rows to every other op. Sizes ttnn refuses
    (ir/sdpa.py refusal: the circular buffers must fit in L1) are skipped. A masked op needs both chunks to divide
    its padded lengths (the mask's shape)."""
    keys = [n for p in passes for n in p.k_lengths if n]
    l1_k = list(l1_k_lengths if l1_k_lengths is not None else keys)
    fidelity = fidelity_of(b.configs.get("SDPA_CONFIG") or CONFIGS["SDPA_CONFIG"])

    def modelled(chunks):
        return sum(p.times * attention_pass(b.system, FITTED, fidelity, batch_heads, q_lengths, list(p.k_lengths),
                                            head_dim, chunks, cores, merged=p.merged).seconds(0.0, b.system)
                   for p in passes)

    longest = max([n for n in q_lengths if n] or [0])
    q_sizes = [q for q in Q_CHUNKS if q >= MIN_Q_CHUNK or longest < MIN_Q_CHUNK]
    legal = [sdpa_facts.Chunks(q, k) for k in K_CHUNKS for q in q_sizes
             if not (masked and (any(n % q for n in q_lengths if n) or any(n % k for n in keys)))
             and sdpa_facts.refusal(kind, sdpa_facts.Chunks(q, k), head_dim, batch_heads, q_lengths, l1_k,
                                    cores) is None]
    if legal:
        return min(legal, key=lambda c: (modelled(c), -c.q, -c.k))
    return sdpa_facts.Chunks()


def sdpa_program(b: Builder, kind: str, batch_heads: int, q_lengths, passes, head_dim: int, l1_k_lengths=None,
                 masked: bool = False) -> Code:
    """The SDPA program config of one op (choose_chunks). The ring's K/V transfer runs on the last core row, so
    ring attention leaves it free; the others get the whole grid."""
    gx, gy = b.system.grid
    ring = kind == "ring"
    chunks = choose_chunks(b, kind, batch_heads, [tile_up(n) for n in q_lengths],
                           [replace(p, k_lengths=tuple(tile_up(n) for n in p.k_lengths)) for p in passes],
                           tile_up(head_dim),
                           gx * (gy - 1 if ring else gy), l1_k_lengths, masked)
    grid = "ttnn.CoreCoord(DEVICE_GRID.x, DEVICE_GRID.y - 1)" if ring else "DEVICE_GRID"
    name = f"{'RING_' if ring else ''}SDPA_PROGRAM_{chunks.q}_{chunks.k}"
    return b.config(name, (
        f"ttnn.SDPAProgramConfig(compute_with_storage_grid_size={grid}, "
        f"q_chunk_size={chunks.q}, k_chunk_size={chunks.k}, exp_approx_mode=False)"))
