"""Measured Wormhole op times that the cost model's kernel terms are checked against, one op at a time.

The DiT-level fit (cost_model.py) can only test whole forwards. TT-DiT's MiniMax-H3 bring-up on a Wormhole Galaxy
measured ttnn's ring joint SDPA alone at several shard sizes and chunk shapes (tenstorrent/tt-metal
models/tt_dit/models/minimax_h3_wormhole/sdpa.md at 08d13a4, sections 2.1, 3.2 and 3.4; tt-metal of 2026-09-17/18,
before that note's pack-4 inner-loop change): ring of 8 devices on 4 links, Ring topology, 14 heads per device,
head dim 128, bf16, HiFi2, 63 SDPA cores, no joint (prompt) tokens. The cost model's ring attention term
(cost/ccl.py ring_attention, ring_seconds) is fitted on all six with two numbers: an op-level SDPA efficiency, and
the fixed cycles of each (q chunk, k chunk) step, which calibration.SDPA_STEP_CYCLES keeps for every SDPA the cost
model prices. The efficiency is not kept: the DiT-level fit sets it for TT-DiT's published runs.
"""

from __future__ import annotations

import math
from dataclasses import replace

from meshdit.cost import systems
from meshdit.cost.calibration import SDPA_STEP_CYCLES, Efficiency
from meshdit.cost.ccl import ring_attention, ring_seconds, ring_step_link_s
from meshdit.cost.systems import CCL_FITS
from meshdit.ir.sdpa import Chunks

RING, HEADS, HEAD_DIM, CORES, LINKS = 8, 14, 128, 63, 4
# (rows per device, q chunk, k chunk, measured ms per call, what was measured)
RING_SDPA = [
    (13664, 256, 512, (175.269 + 171.694) / 2, "15 s shard, the shipped chunks (two isolated runs)"),
    (13664, 192, 640, (184.930 + 193.960) / 2, "15 s shard (two isolated runs)"),
    (13664, 192, 512, (185.212 + 190.572) / 2, "15 s shard (two isolated runs)"),
    (14336, 256, 512, 192.9, "15 s shard padded to 56 q chunks"),
    (3424, 256, 512, 15.74, "SP=32-equivalent shard, best of 7"),
    (3424, 160, 256, 16.11, "SP=32-equivalent shard"),
]


STEP_GRID = [250.0 * i for i in range(321)]  # step cycles tried: 0 to 80,000 (80 us at 1 GHz)


def ring_sdpa_seconds(rows: int, q_chunk: int, k_chunk: int, sdpa_efficiency: float, step_cycles: float) -> float:
    """Modelled seconds of one ring joint SDPA call of this shape on a Galaxy device."""
    system = replace(systems.GALAXY, links=LINKS)
    eff = Efficiency(matmul=1.0, sdpa=sdpa_efficiency, op_overhead_s=0.0)
    passes = ring_attention(system, eff, "HiFi2", HEADS, [rows, 0], rows, 0, RING, HEAD_DIM, Chunks(q_chunk, k_chunk),
                            CORES, 2.0, step_cycles)
    chunk_bytes = 2 * HEADS * rows * HEAD_DIM * 2.0  # this device's K and V, bf16
    return ring_seconds(passes, system, ring_step_link_s(system, chunk_bytes, "Ring", LINKS),
                        CCL_FITS[("all_gather", "Ring")].fixed_s)[1]


def fit(points=RING_SDPA) -> tuple:
    """(SDPA efficiency, step cycles) minimising the squared log(modelled / measured) over `points`: for each step
    cost tried, the efficiency is the geometric mean ratio (time is inverse in it while the matrix engine binds)."""
    best = None
    for step in STEP_GRID:
        at_one = [ring_sdpa_seconds(n, q, k, 1.0, step) * 1e3 for n, q, k, _, _ in points]
        eff = math.exp(sum(math.log(a / row[3]) for a, row in zip(at_one, points)) / len(points))
        loss = sum(math.log(ring_sdpa_seconds(*row[:3], eff, step) * 1e3 / row[3]) ** 2 for row in points)
        if best is None or loss < best[0]:
            best = (loss, eff, step)
    return best[1], best[2]


def left_out() -> list:
    """Each shape's modelled/measured ratio under a fit on the other five."""
    out = []
    for i, row in enumerate(RING_SDPA):
        eff, step = fit(RING_SDPA[:i] + RING_SDPA[i + 1:])
        out.append(ring_sdpa_seconds(*row[:3], eff, step) * 1e3 / row[3])
    return out


def report(dit_sdpa_efficiency: float) -> list:
    eff, step = fit()
    print(f"ring SDPA op-level fit: SDPA {eff:.3f}, {step:.0f} cycles per step (calibration.py: "
          f"{SDPA_STEP_CYCLES:.0f})", flush=True)
    if abs(step - SDPA_STEP_CYCLES) > 250:
        print("WARNING: calibration.py's SDPA_STEP_CYCLES differs from this fit: copy it there and refit")
    rows = [(row, ring_sdpa_seconds(*row[:3], eff, SDPA_STEP_CYCLES) * 1e3) for row in RING_SDPA]
    ratios = [ms / row[3] for row, ms in rows]
    held = left_out()
    lines = [f"Fitted on all six: SDPA {eff:.3f} of the 63 cores' HiFi2 peak and {step:,.0f} cycles per (q chunk, k "
             f"chunk) step (calibration.SDPA_STEP_CYCLES, {step / 1e3:.0f} us at 1 GHz before the efficiency "
             "divides it; the note's inner loop spends half of each 66 us step at q256/k512 outside the matrix "
             "engine, section 2.2). Modelled/measured "
             f"{min(ratios):.2f} to {max(ratios):.2f}; each shape left out of the fit and predicted by the other "
             f"five: {min(held):.2f} to {max(held):.2f}. The op-level efficiency is {eff / dit_sdpa_efficiency:.1f}x "
             f"the DiT-level one ({dit_sdpa_efficiency:.3f}), which holds everything TT-DiT's published runs spend "
             "in attention, on their kernels. K and V are read from DRAM once per head, as this kernel does (the "
             "note measures about 0.9 GB of DRAM traffic per call at the 15 s shard, section 2.2; re-reading them "
             "per q chunk, as the model once did, would be 42 GB).", "",
             "| rows per device | q chunk | k chunk | measured ms | modelled ms | ratio | ratio, left out of the fit "
             "| what |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for ((n, q, k, ms, what), modelled), alone in zip(rows, held):
        lines.append(f"| {n} | {q} | {k} | {ms:.1f} | {modelled:.1f} | {modelled / ms:.2f} | {alone:.2f} | {what} |")
    return lines
