"""Modelled time of one forward of a ProgramIR on its mesh: the sum of its device ops' costs on one chip.

Every device of a (sub)mesh runs the same op list on its own shard, so one chip's sum is the forward's time; with
cfg on the mesh both halves run side by side on their submeshes, so the forward takes one branch's time. Ops run
one after another (ttnn's queue runs one op at a time per chip); the only overlap modelled is ring attention's K/V
exchange under its compute (ccl.py).

    est = estimate(program.ir)                 # the system the mesh implies (2x4 T3K, 4x8 Galaxy, 1x1 N150)
    est = estimate(program.ir, "galaxy")       # or a named system / a systems.System with run settings
    est.seconds, est.totals["matmul"], est.blocks, print(est)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..lowering.program_ir import COLLECTIVE_OPS, Op, ProgramIR
from .calibration import FITTED, Efficiency
from .ccl import collective_cost
from .ops import MATMULS, SDPAS, Context, OpCost, data_movement_cost, matmul_cost, sdpa_cost
from .systems import System, system_for

CATEGORIES = ("matmul", "attention", "collectives", "data movement", "dispatch")
OUTSIDE = "(outside blocks)"


@dataclass
class BlockCost:
    """The modelled cost of one block kind, summed over its instances (or of the ops outside any block)."""

    name: str
    instances: int
    seconds: dict = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0.0))
    ops: int = 0  # device ops, all instances
    flops: float = 0.0
    waste_flops: float = 0.0
    waste_bytes: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def add(self, cost: OpCost, overhead: float, times: int = 1) -> None:
        for category, seconds in cost.seconds.items():
            self.seconds[category] += seconds * times
        if cost.device_op:
            self.seconds["dispatch"] += overhead * times * (1 + cost.extra_ops)
            self.ops += times * (1 + cost.extra_ops)
        self.flops += cost.flops * times
        self.waste_flops += cost.waste_flops * times
        self.waste_bytes += cost.waste_bytes * times


@dataclass
class Estimate:
    seconds: float  # one forward of the program on its mesh (cfg halves side by side)
    system: System
    efficiency: Efficiency
    totals: dict  # category -> seconds; sums to `seconds`
    blocks: list  # BlockCost per block kind, in program order, then the ops outside blocks
    flops: float  # per chip
    dram_bytes: float  # per chip
    link_bytes: float  # per chip, on the bottleneck link of each collective
    waste_flops: float  # tile padding
    waste_bytes: float
    device_ops: int
    host_ops: int  # host fallbacks: not modelled (a round trip to the host each)
    cfg_factor: int = 1

    def __str__(self):
        head = (f"modelled forward on {self.system}: {self.seconds * 1e3:,.1f} ms per chip"
                + (f" (cfg {self.cfg_factor}: branches side by side)" if self.cfg_factor > 1 else ""))
        lines = [head, f"  efficiencies: {self.efficiency}",
                 "  " + summary(self.totals, self.seconds),
                 f"  {self.device_ops} device ops; {self.flops / 1e9:,.1f} GFLOP, {self.dram_bytes / 2**30:,.2f} GiB "
                 f"DRAM, {self.link_bytes / 2**20:,.1f} MiB on bottleneck links per chip; tile padding wastes "
                 f"{self.waste_flops / max(self.flops, 1):.1%} of FLOPs, {self.waste_bytes / 2**20:,.1f} MiB of DRAM "
                 "traffic" + (f"; {self.host_ops} host ops not modelled" if self.host_ops else "")]
        return "\n".join(lines + ["  " + line for line in self.block_table()])

    def block_table(self) -> list:
        """The per-block breakdown as markdown table lines: modelled ms per category (all instances of each block
        kind), and what tile padding wastes."""
        lines = ["| block | x | ms each | " + " | ".join(CATEGORIES) + " (ms, all instances) | padding waste |",
                 "|---|---|---|" + "---|" * len(CATEGORIES) + "---|"]
        for b in self.blocks:
            cells = " | ".join(f"{b.seconds[c] * 1e3:,.1f}" for c in CATEGORIES)
            lines.append(f"| {b.name} | {b.instances} | {b.total / b.instances * 1e3:,.2f} | {cells} "
                         f"| {b.waste_flops / max(b.flops, 1):.1%} FLOPs, {b.waste_bytes / 2**20:,.1f} MiB |")
        return lines


def summary(totals: dict, seconds: float) -> str:
    return ", ".join(f"{c} {totals[c] * 1e3:,.1f} ms ({totals[c] / seconds:.0%})" for c in CATEGORIES if seconds)


def op_cost(op: Op, ctx: Context) -> OpCost:
    if op.on_host:
        return OpCost({}, device_op=False)
    if op.fn in MATMULS:
        return matmul_cost(op, ctx)
    if op.fn in SDPAS:
        return sdpa_cost(op, ctx)
    if op.fn in COLLECTIVE_OPS:
        return collective_cost(op, ctx)
    return data_movement_cost(op, ctx)


def estimate(ir: ProgramIR, system: "System | str | None" = None, efficiency: Efficiency | None = None) -> Estimate:
    system = system_for(ir.mesh_shape, system)
    eff = efficiency or FITTED
    ctx = Context(ir, system, eff)
    overhead = eff.op_overhead_s
    # every instance of a block kind has the same ops, shapes and weight specs (lowering/blocks.py): cost the
    # first and count it once per instance
    kinds: dict = {}
    in_block = set()
    for call in ir.calls:
        kinds.setdefault(call.kind, []).append(call)
        in_block.update(range(call.start, call.end))
    blocks, flops, dram, link = [], 0.0, 0.0, 0.0
    for kind, calls in kinds.items():
        block = BlockCost(kind, len(calls))
        for op in ir.ops[calls[0].start:calls[0].end]:
            cost = op_cost(op, ctx)
            block.add(cost, overhead, len(calls))
            dram += cost.dram_bytes * len(calls)
            link += cost.link_bytes * len(calls)
        blocks.append(block)
    outside = BlockCost(OUTSIDE, 1)
    for index, op in enumerate(ir.ops):
        if index in in_block:
            continue
        cost = op_cost(op, ctx)
        outside.add(cost, overhead)
        dram += cost.dram_bytes
        link += cost.link_bytes
    blocks.append(outside)
    totals = {c: sum(b.seconds[c] for b in blocks) for c in CATEGORIES}
    flops = sum(b.flops for b in blocks)
    return Estimate(sum(totals.values()), system, eff, totals, blocks, flops, dram, link,
                    sum(b.waste_flops for b in blocks), sum(b.waste_bytes for b in blocks),
                    sum(b.ops for b in blocks), sum(op.on_host for op in ir.ops), ir.cfg_factor)
