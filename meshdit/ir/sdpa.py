"""What ttnn's SDPA kernels do with a program config's q/k chunk sizes: how they split the work over cores, and which
chunk sizes they refuse. One home for these facts: lowering picks chunk sizes with them (lowering/attention/
common.py), the cost model costs an SDPA op with them (cost/ops.py) and the simulated mesh refuses what ttnn
refuses with them (runtime/sim/attention.py).

Three kernels, named as below: "sdpa" (ttnn.transformer.scaled_dot_product_attention), "joint"
(joint_scaled_dot_product_attention: image and prompt tokens) and "ring" (ring_joint_scaled_dot_product_attention:
one ring step's local K/V, the prompt's K/V joined once). Lengths are per device, in tokens, tile-padded.

    work_items(batch_heads, q_lengths, q_chunk)       (batch, head, q chunk) items the cores share
    ring_passes(local, prompt, ring)                  the passes a ring op makes over a core's q chunks
    refusal(kind, config, ...)                        why ttnn refuses the config, or None
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .tiles import TILE

KINDS = ("sdpa", "joint", "ring")
# ttnn's default when an op is given no program config (sdpa_op.cpp: q_chunk_size / k_chunk_size default 32)
DEFAULT_CHUNK = TILE
# Per-core L1 that circular buffers may reach on Wormhole: ttnn 0.81.1 refuses more with "Statically allocated
# circular buffers on core range [...] grow to N B which is beyond max L1 size of 1499136 B"
# (tt_metal/impl/program/program.cpp:2567, seen on the mocked T3K and Galaxy)
L1_BYTES = 1499136
BF16_TILE_BYTES = TILE * TILE * 2
# bfloat4_b tile: 512 B of mantissas + 64 B of shared exponents (the joint kernel's padding mask)
BFP4_TILE_BYTES = 576

# Where the circular buffers of one SDPA core end, in bytes, for bfloat16 q/k/v and SDPA_CONFIG (HiFi2, no fp32
# accumulation): the CB region's start plus tiles per term, with Sq, Sk, Dt the q chunk, k chunk and head dim in
# tiles. Fitted exactly (zero residual) to the "grow to N B" of 131 configs ttnn 0.81.1 refused on the mocked T3K
# (head dims 64-256, q chunks 64-2048, k chunks 128-2048, 3 and 48 heads, padded and whole sequences), and checked
# against 390 configs it accepted (all modelled under L1_BYTES); the terms are the kernels' buffers: Q (double
# buffered when a core gets more than one q chunk), K and V double buffered, the Sq x Sk score block, the output,
# and per-row statistics.
#   kind: (start bytes, Sq*Dt, Sk*Dt, Sq*Sk, Sq, Dt, mask when a K length is not whole k chunks)
_CB_TERMS = {
    "sdpa": (111968, 3, 4, 1, 5, 4, "one tile"),
    "joint": (109920, 4, 4, 1, 5, 0, "Sq x Sk bfloat4_b tiles"),
    "ring": (114112, 5, 4, 1, 9, 0, "one tile"),
}


@dataclass(frozen=True)
class Chunks:
    q: int = DEFAULT_CHUNK
    k: int = DEFAULT_CHUNK


@dataclass(frozen=True)
class Pass:
    """One pass of a kernel over its queries: every q chunk against the keys of `k_lengths`, chunk by chunk,
    `times` times. merged: the pass's output is merged into the output of the passes before it (a ring step after
    the first), rather than written as it is."""

    k_lengths: tuple
    times: int = 1
    merged: bool = False


def ring_passes(local: int, prompt: int, ring: int) -> list:
    """The passes of the ring kernel (ring_joint_sdpa.cpp): one per ring step over one device's keys, the prompt's
    keys joined to one step's k chunks (do_joint_kv; modelled as the last step), every step after the first merging
    its output into the running output by log-sum-exp (sdpa_inner_loop's RING branch)."""
    if ring == 1:
        return [Pass((local, prompt))]
    middle = [Pass((local,), ring - 2, True)] if ring > 2 else []
    return [Pass((local,))] + middle + [Pass((local, prompt), 1, True)]


def q_chunks(q_lengths, q_chunk: int) -> int:
    """Q chunks of one (batch, head): the kernels chunk the image and the prompt queries separately."""
    return sum(math.ceil(n / q_chunk) for n in q_lengths if n)


def work_items(batch_heads: int, q_lengths, q_chunk: int) -> int:
    """The kernels split work by (batch, head, q chunk) over the program config's grid."""
    return batch_heads * q_chunks(q_lengths, q_chunk)


def busy_cores(batch_heads: int, q_lengths, q_chunk: int, cores: int) -> float:
    """Cores busy on average over the rounds the items take: fewer items than cores leave cores idle, and a last
    round that is not full idles the rest (190 items on 56 cores take 4 rounds: 47.5 cores busy on average)."""
    items = work_items(batch_heads, q_lengths, q_chunk)
    return items / math.ceil(items / cores) if items else 1.0


def k_chunks(k_lengths, k_chunk: int) -> int:
    """K chunks one q chunk iterates over: each key stream chunked on its own, its last chunk masked."""
    return sum(math.ceil(n / k_chunk) for n in k_lengths if n)


def padded_rows(lengths, chunk: int) -> int:
    """Rows the kernel computes: each length rounded up to whole chunks (the tail of the last one is masked)."""
    return sum(math.ceil(n / chunk) * chunk for n in lengths if n)


def circular_buffer_bytes(kind: str, chunks: Chunks, head_dim: int, batch_heads: int, q_lengths, k_lengths,
                          cores: int) -> int:
    """Where one core's circular buffers end in L1 (see _CB_TERMS). k_lengths: the K lengths the kernel chunks
    (for the ring: the local shard, the prompt and the logical sequence); a length that is not whole k chunks
    makes the kernel build a padding mask."""
    start, qd, kd, qk, q, d, mask = _CB_TERMS[kind]
    sq, sk, dt = chunks.q // TILE, chunks.k // TILE, math.ceil(head_dim / TILE)
    second_q = sq * dt if work_items(batch_heads, q_lengths, chunks.q) > cores else 0
    tiles = qd * sq * dt + kd * sk * dt + qk * sq * sk + q * sq + d * dt + second_q
    padded = any(n % chunks.k for n in k_lengths if n)
    extra = 0
    if padded:
        extra = sq * sk * BFP4_TILE_BYTES if mask.startswith("Sq x Sk") else BF16_TILE_BYTES
    return start + tiles * BF16_TILE_BYTES + extra


def refusal(kind: str, chunks: Chunks, head_dim: int, batch_heads: int, q_lengths, k_lengths, cores: int) -> str | None:
    """Why ttnn 0.81.1 refuses this program config for these shapes, or None. Chunks must be positive multiples
    of the tile (sdpa_device_operation.cpp, joint_ and ring_joint_sdpa_device_operation.cpp: "q_chunk_size must
    be a positive multiple of TILE_SIZE"); any such size is accepted, powers of two or not, whether or not it
    divides the sequence (the kernels mask the tail); the circular buffers must fit in L1 (program.cpp)."""
    for name, size in (("q_chunk_size", chunks.q), ("k_chunk_size", chunks.k)):
        if size <= 0 or size % TILE:
            return f"{name} must be a positive multiple of TILE_SIZE. Got {name}: {size}, TILE_SIZE: {TILE}"
    end = circular_buffer_bytes(kind, chunks, head_dim, batch_heads, q_lengths, k_lengths, cores)
    if end > L1_BYTES:
        return (f"Statically allocated circular buffers grow to {end} B which is beyond max L1 size of {L1_BYTES} B "
                f"(q chunk {chunks.q}, k chunk {chunks.k}, head dim {head_dim}; modelled)")
    return None
