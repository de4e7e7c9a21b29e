"""Cost of collectives and of ring attention on one mesh axis of the submesh.

Each collective: the fixed and per-step costs of tt-metal's measured CCL fits (systems.CCL_FITS) plus the bytes
on its bottleneck link over the link bandwidth times the links it uses (min of the op's num_links, or the
system's override, and the links per neighbour; the fits were measured on 1 link and are scaled linearly, as the
research note assumes). Topology is the op's (`ttnn.Topology.Linear` or `Ring`).

Ring joint attention: R ring steps (ir/sdpa.py ring_passes); each runs local attention of this device's queries
(its image tokens and the replicated prompt) against one device's K/V while the next device's arrives over one hop,
and merges its output into the previous steps'. A step after the first takes the slower of the two; the prompt's
K/V join one step.
"""

from __future__ import annotations

import math

from ..ir import sdpa as sdpa_facts
from ..lowering.program_ir import BYTES_PER_ELEMENT, COLLECTIVE_OPS, Code, Op
from .ops import Context, OpCost, attention_flops, attention_pass, dram_time, traffic, volume
from .systems import CCL_FITS

# The generic form for a collective without its own fit (all_to_all): link efficiency of a line collective, 94% of
# line rate (HW note section 6, "eta_link 0.94 line"), fixed cost as a line all-gather's
LINE_LINK_EFFICIENCY = 0.94


def topology(op: Op) -> str:
    value = op.kwargs.get("topology")
    return "Ring" if isinstance(value, Code) and value.text.endswith("Ring") else "Linear"


def axis_size(op: Op, ctx: Context) -> int:
    axis = op.kwargs.get("cluster_axis")
    if axis is None:  # a collective over the whole submesh
        return math.prod(ctx.ir.submesh_shape)
    return ctx.ir.submesh_shape[axis]


def links(op: Op, ctx: Context) -> int:
    return ctx.system.links_for(op.kwargs.get("num_links"))


def fit_time(kind: str, topo: str, n: int, bottleneck_bytes: float, links: int) -> float:
    """Seconds of a `kind` collective over n devices by tt-metal's measured fit for its topology, with the bytes
    its bottleneck link carries spread over `links` links."""
    if (kind, topo) not in CCL_FITS:  # no ring fit (all_reduce): the line fit, with its own step count
        topo = "Linear"
    fit = CCL_FITS[(kind, topo)]
    steps = n / 2 if topo == "Ring" else n - 1
    return fit.fixed_s + fit.per_step_s * steps + bottleneck_bytes / (fit.bytes_per_s * links)


def _fit_time(kind: str, op: Op, n: int, bottleneck_bytes: float, ctx: Context) -> float:
    return fit_time(kind, topology(op), n, bottleneck_bytes, links(op, ctx))


def collective_cost(op: Op, ctx: Context) -> OpCost:
    kind = COLLECTIVE_OPS[op.fn]
    if kind == "ring_joint_sdpa":
        return ring_joint_sdpa_cost(op, ctx)
    n = axis_size(op, ctx)
    piece = ctx.spec(op.args[0])  # this device's input
    moved, waste = traffic([piece] + ctx.outputs(op))
    if n <= 1:
        return OpCost({"collectives": 0.0}, 0.0, moved, 0.0, 0.0, waste)
    b = piece.nbytes
    if kind == "all_gather":  # every other device's piece passes the bottleneck link
        link = (n - 1) * b
        seconds = _fit_time(kind, op, n, link, ctx)
    elif kind == "reduce_scatter":  # all but this device's share of the partial sums
        link = (n - 1) / n * b
        seconds = _fit_time(kind, op, n, link, ctx)
    elif kind == "all_reduce":  # a reduce-scatter, then an all-gather of the reduced shares
        link = 2 * (n - 1) / n * b
        seconds = _fit_time(kind, op, n, link, ctx)
    else:  # all_to_all on a line: the middle link carries what each half sends the other, per direction
        link = (n // 2) * (n - n // 2) * b / n
        ag = CCL_FITS[("all_gather", "Linear")]
        rate = ctx.system.chip.link_bytes_per_s * LINE_LINK_EFFICIENCY * links(op, ctx)
        seconds = ag.fixed_s + (n - 1) * ctx.system.chip.hop_latency_s + link / rate
    # a collective also reads its input and writes its output in DRAM; the link is the slower side at these sizes
    seconds = max(seconds, dram_time(ctx, moved))
    return OpCost({"collectives": seconds}, 0.0, moved, link, 0.0, waste)


def ring_attention(system, eff, fidelity: str, batch_heads: int, q_lengths, local_k: int, prompt_k: int, ring: int,
                   head_dim: int, chunks: sdpa_facts.Chunks, cores: int, element_bytes: float,
                   step_cycles: float | None = None) -> list:
    """One device's ring joint attention as the kernel's passes (ir/sdpa.py ring_passes), each with its cost:
    [(ring pass, ops.AttentionPass)]. Its queries (image and prompt) meet one device's K/V per step."""
    return [(p, attention_pass(system, eff, fidelity, batch_heads, q_lengths, list(p.k_lengths), head_dim, chunks,
                               cores, element_bytes, merged=p.merged, step_cycles=step_cycles))
            for p in sdpa_facts.ring_passes(local_k, prompt_k, ring)]


def ring_step_link_s(system, chunk_bytes: float, topo: str, links: int) -> float:
    """Seconds for one device's K and V to cross one hop (both directions of a line, as a line all-gather does)."""
    return system.chip.hop_latency_s + chunk_bytes / (CCL_FITS[("all_gather", topo)].bytes_per_s * links)


def ring_seconds(passes: list, system, step_link_s: float, fixed_s: float) -> tuple:
    """(attention seconds, total seconds) of one device's ring: each step its compute, or its output merge's DRAM
    traffic when that takes longer; after the first step, the next device's K/V arriving when that takes longer."""
    steps = [(p.times, cost.seconds(0.0, system)) for p, cost in passes]
    compute = sum(times * seconds for times, seconds in steps)
    total = steps[0][1] + sum(times * max(seconds, step_link_s) for times, seconds in steps[1:]) + fixed_s
    return compute, total


def ring_joint_sdpa_cost(op: Op, ctx: Context) -> OpCost:
    q, k, v = (ctx.spec(a) for a in op.args[:3])  # this device's image tokens: [B, H, n, d]
    jq, jk = ctx.spec(op.args[3]), ctx.spec(op.args[4])  # the prompt's, the same on every device: [B, H, L, d]
    ring = axis_size(op, ctx)
    prompt_q, prompt_k = (jq.padded_shape[-2], jk.padded_shape[-2]) if jq is not None else (0, 0)
    passes = ring_attention(ctx.system, ctx.eff, ctx.fidelity(op), volume(q.padded_shape[:-2]),
                            [q.padded_shape[-2], prompt_q], k.padded_shape[-2], prompt_k, ring, q.padded_shape[-1],
                            ctx.chunks(op), ctx.sdpa_grid_cores(op), BYTES_PER_ELEMENT[k.dtype])
    flops = sum(p.times * cost.flops for p, cost in passes)
    logical = ring * attention_flops(q, k, False)
    if jq is not None:
        logical += ring * attention_flops(jq, k, False) + attention_flops(q, jk, False) + attention_flops(jq, jk, False)
    chunk = k.nbytes + v.nbytes
    fixed = CCL_FITS[("all_gather", topology(op))].fixed_s if ring > 1 else 0.0
    compute, total = ring_seconds(passes, ctx.system, ring_step_link_s(ctx.system, chunk, topology(op), links(op, ctx)),
                                  fixed)
    moved, waste = traffic(ctx.tensors_read(op) + ctx.outputs(op))
    moved += (ring - 1) * chunk  # the other devices' K/V chunks are read from the persistent buffers
    total = max(total, dram_time(ctx, moved))
    moved += sum(p.times * cost.merge_bytes for p, cost in passes)  # already in each step's time
    return OpCost({"attention": compute, "collectives": total - compute}, flops, moved, (ring - 1) * chunk,
                  flops - logical, waste)
