"""The cost model's only fitted numbers, and how they were fitted: three efficiencies fitted on whole published
forwards, and one kernel constant fitted on measured op times.

    matmul            fraction of the fidelity's peak a matmul reaches on the cores it gets
    sdpa              the same for attention (flash attention: QK^T, softmax, PV, online rescaling)
    op_overhead_s     seconds every device op costs beyond its roofline (launch, sync, kernel ramp-up), traced
    SDPA_STEP_CYCLES  cycles each SDPA (q chunk, k chunk) step costs beyond its tiles (below)

FITTED was fitted by `python bench/cost_model.py` on three of TT-DiT's six published Wormhole denoising figures
(the research note's tables: tt-metal models/tt_dit tests/models/*/test_performance_*.py), each modelled on
meshdit's program for TT-DiT's parallel plan, lowered with bf16 weights and TT-DiT's residual layout, with TT-DiT's
run settings (1 link per CCL on 2x4, 4 on Galaxy; ethernet dispatch, 8x8 grid; TT_MM_THROTTLE_PERF=5 where the test
sets it):

    SD3.5 Large, T3K 2x4,    cfg2 sp2 tp2     11 s / 20 steps    -> 0.550 s per forward (cfg halves side by side)
    SD3.5 Large, Galaxy 4x8, cfg2 sp4 tp4     4.2 s / 20 steps   -> 0.210 s per forward
    Mochi-1,     Galaxy 4x8, sp8 tp4          400 s / 50 steps   -> 4.000 s per forward (cfg passes run serially),
                                                                    TT-DiT's FSDP weight gathers included

These are the points whose programs are closest to TT-DiT's blocks; Flux.1-dev's op-by-op RoPE on tile-padded
pairs was a structural gap the efficiencies must not absorb (one ttnn rotary op per q/k since
lowering/rules/rotary.py). Refitted after the fused block emission (rotary op, adaLN folds, addcmul): fewer ops per
block for the same published time moved the per-op overhead from 21.4 to 37.1 us. Refitted again when the SDPA
term gained the softmax's elementwise tiles (cost/ops.py attention_pass) and k chunks came to be chosen by modelled
time: SDPA 0.109 -> 0.119. Refitted once more when a matmul's time became its busiest core's tiles under the layout
ttnn.linear or minimal_matmul gives it (ir/matmul.py) and ttnn.linear's unfused activation a second op: matmul 0.364,
32.9 us per device op. Refitted after Mochi's RoPE became one rotary op per q/k (passes/pair_products.py; 3847 ->
3079 device ops per forward): matmul 0.372, SDPA 0.116, 32.4 us per device op. Refitted when Mochi-1's points
gained what TT-DiT's run does beyond meshdit's program (bench/tt_dit_runs.py: FSDP weight all-gathers over sp, 572
per forward): matmul 0.356, SDPA 0.121, 33.4 us per device op. Refitted when the SDPA term stopped re-reading K/V
per q chunk and gained a fixed cost per (q chunk, k chunk) step, both from ttnn's ring joint SDPA measured alone
(bench/measured_ops.py): matmul 0.327, SDPA 0.161, 27.2 us per device op; Mochi-1 on T3K went from 1.25 to 1.14,
its Galaxy shard's many small steps now dearer per FLOP, as measured. TT-DiT's untraced Mochi-1 pipeline also has a
host phase per forward whose length on TT's hosts is not published; the fit takes it as zero, its lower bound.
Flux.1-dev on both systems and Mochi-1 on T3K are held out; BENCHMARKS.md has every ratio and the reasons for the
misses.
SOURCED is the research note's "set A": datasheet and tech-report efficiencies with no per-op overhead, the
"achievable with good kernels" bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Efficiency:
    matmul: float
    sdpa: float
    op_overhead_s: float

    def __str__(self):
        return (f"matmul {self.matmul:.3f} of peak, SDPA {self.sdpa:.3f} of peak, "
                f"{self.op_overhead_s * 1e6:.1f} us per device op")


# Cycles each SDPA (q chunk, k chunk) step costs beyond its tiles (cost/ops.py attention_pass), a kernel constant:
# fitted together with an op-level efficiency on ttnn's ring joint SDPA measured alone on a Wormhole Galaxy at six
# shapes (bench/measured_ops.py, which says when this differs from its fit). Divided by the SDPA efficiency like the
# rest of the kernel's work.
SDPA_STEP_CYCLES = 6000.0
# From bench/cost_model.py (see the module docstring); rerun it to refit, and it says when these differ
FITTED = Efficiency(matmul=0.327, sdpa=0.161, op_overhead_s=27.2e-6)
# HW note section 7, set A: matmul 0.6 (GEMM_FLOPS.md, BF16 HiFi2 52-65%), SDPA 0.45 (Blackhole ring-joint SDPA
# math utilisation 53-57%, tech_reports/FlashAttention/RingSDPA_SingleChipProxy.md), no per-op overhead
SOURCED = Efficiency(matmul=0.6, sdpa=0.45, op_overhead_s=0.0)


def fit(cases: list, start: Efficiency = SOURCED, tolerance: float = 1e-3) -> Efficiency:
    """The efficiencies that minimise the sum of squared log(modelled / published) over `cases`, a list of
    (model, published seconds) where model(Efficiency) gives modelled seconds. A pattern search in log space: try
    scaling each parameter up and down by a factor, keep any improvement, halve the factor when none helps.
    Efficiencies stay in (0, 1]; the overhead starts at 10 us when `start` has none."""

    def loss(values):
        eff = Efficiency(*values)
        return sum(math.log(model(eff) / published) ** 2 for model, published in cases)

    values = [start.matmul, start.sdpa, start.op_overhead_s or 10e-6]
    best, factor = loss(values), 2.0
    while factor - 1 > tolerance:
        improved = False
        for i in range(3):
            for scale in (factor, 1 / factor):
                trial = list(values)
                trial[i] *= scale
                if i < 2 and trial[i] > 1.0:
                    continue
                value = loss(trial)
                if value < best - 1e-12:
                    values, best, improved = trial, value, True
        if not improved:
            factor = math.sqrt(factor)
    return Efficiency(*values)
