"""Plan search: for a mesh given by its shape alone ("2x4"), the parallel config and residual layout with the least
modelled step time among those that fit a chip's DRAM.

    candidates(shape, batch)   every MeshConfig x residual layout the mesh admits (cfg only where the batch splits)
    run(todo, lower_one)       lower each, measure it (modelled time, memory), keep the fastest that fits
    choose(results)            the fastest candidate that fits, or ConfigError naming the closest
    search_lines(results, ...) the plan's table of the top candidates

Each candidate is lowered for real (sharding and lowering on a copy of the captured graph; lower() does that), so
what is timed is the program that would be emitted; times are the cost model's (meshdit.cost), modelled, not
measured. Memory is weights plus peak live activations per device, tile-padded, against the chip's DRAM.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .errors import ConfigError, MeshditError
from .sharding import MeshConfig
from .sharding.mesh_config import ParallelFactor

RESIDUALS = ("replicated", "sharded")
SHOWN = 8  # candidates listed in the plan


def _placements(size_by_axis: tuple):
    """Every (factor, axis) a strategy can take: not used (1, 0), or a divisor > 1 of an axis's size."""
    options = [(1, 0)]
    for axis, size in enumerate(size_by_axis):
        options += [(f, axis) for f in range(2, size + 1) if size % f == 0]
    return options


def candidates(shape: tuple, batch: int, residual: str | None = None) -> list:
    """(MeshConfig, residual) pairs for a mesh of `shape`: cfg, sp, tp and ulysses factors on the two axes whose
    product per axis is that axis's size, as MeshConfig validates them; cfg only with a factor dividing `batch`
    (the cfg submeshes split the batch); ulysses either on the sp axis (all-to-all, no ring) or hybrid on the other
    axis. Each with both residual layouts when tp > 1 (the replicated one otherwise), unless `residual` fixes it."""
    options = _placements(tuple(shape))
    found = {}
    for cfg, sp, tp, uly in itertools.product(options, repeat=4):
        used = [1, 1]
        for factor, axis in (cfg, sp, tp, uly):
            used[axis] *= factor
        if tuple(used) != tuple(shape) or (cfg[0] > 1 and batch % cfg[0]):
            continue
        if uly[0] > 1 and (sp[0] == 1 or uly[1] == sp[1]):
            continue  # ulysses alone or on the sp axis is the all-to-all variant below
        variants = [dict(ulysses=uly[0], ulysses_axis=uly[1])] if uly[0] > 1 else [{}]
        if uly[0] == 1 and sp[0] > 1:
            variants.append(dict(ulysses=sp[0], ulysses_axis=None))
        for extra in variants:
            try:
                mesh = MeshConfig(shape[0], shape[1], ParallelFactor(*cfg), ParallelFactor(*sp), ParallelFactor(*tp),
                                  **extra).validated()
            except ConfigError:
                continue
            if mesh.sp.factor > 1 and mesh.tp.factor > 1 and mesh.sp.axis == mesh.tp.axis:
                continue  # sharding takes sp and tp on different axes
            layouts = (residual,) if residual else (RESIDUALS if mesh.tp.factor > 1 else RESIDUALS[:1])
            for layout in layouts:
                found.setdefault((str(mesh), layout), (mesh, layout))
    return list(found.values())


@dataclass
class Candidate:
    mesh: MeshConfig
    residual: str
    seconds: float | None = None  # modelled time of one forward
    weight_bytes: int = 0  # per device, tile-padded
    peak_bytes: int = 0  # peak live activations per device, tile-padded
    dram_bytes: float = 0.0  # the chip's DRAM
    refused: str | None = None  # why it was not lowered (a MeshditError's message)
    program: object = None  # (payload, ir) of the fastest fitting candidate while the search keeps it

    @property
    def fits(self) -> bool:
        return self.refused is None and self.weight_bytes + self.peak_bytes <= self.dram_bytes

    def __str__(self):
        if self.refused is not None:
            return f"{self.mesh} residual {self.residual}: refused ({self.refused})"
        from .report import human_bytes

        memory = f"{human_bytes(self.weight_bytes + self.peak_bytes)} per chip (weights " \
                 f"{human_bytes(self.weight_bytes)}, peak activations {human_bytes(self.peak_bytes)})"
        return f"{self.mesh} residual {self.residual}: {self.seconds * 1e3:,.1f} ms, {memory}" + \
            ("" if self.fits else f", does not fit {self.dram_bytes / 1e9:.0f} GB")


def measure(candidate: Candidate, ir) -> Candidate:
    """Fill in the modelled time and memory of a candidate's lowered program."""
    from .cost import estimate
    from .report import peak_activation_bytes

    est = estimate(ir)
    candidate.seconds = est.seconds
    candidate.weight_bytes = ir.weight_bytes()
    candidate.peak_bytes = peak_activation_bytes(ir)
    candidate.dram_bytes = est.system.chip.dram_bytes
    return candidate


def refuse(candidate: Candidate, error: MeshditError) -> Candidate:
    candidate.refused = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return candidate


def run(todo: list, lower_one) -> tuple:
    """Lower every (MeshConfig, residual) of `todo` with `lower_one(mesh, residual)` -> (payload, program IR); a
    MeshditError refuses the candidate. The chosen one's `.program` is (payload, IR). Returns the chosen Candidate, holding its payload in `.program` (only the
    fastest fitting payload is kept while searching, to bound memory), and every Candidate."""
    results, best = [], None
    for mesh, layout in todo:
        candidate = Candidate(mesh, layout)
        try:
            payload, ir = lower_one(mesh, layout)
        except MeshditError as error:
            results.append(refuse(candidate, error))
            continue
        results.append(measure(candidate, ir))
        if candidate.fits and (best is None or candidate.seconds < best.seconds):
            if best is not None:
                best.program = None
            candidate.program, best = (payload, ir), candidate
    return choose(results), results


def choose(results: list) -> Candidate:
    fitting = [c for c in results if c.fits]
    if fitting:
        return min(fitting, key=lambda c: c.seconds)
    lowered = sorted((c for c in results if c.refused is None), key=lambda c: c.weight_bytes + c.peak_bytes)
    if lowered:
        raise ConfigError("plan search: no parallel config fits a chip's DRAM; the smallest is "
                          f"{lowered[0]}. Use a larger mesh, bf16 activations or bfp8 weights")
    reasons = "; ".join(str(c) for c in results[:4])
    raise ConfigError(f"plan search: every parallel config was refused ({len(results)}), e.g. {reasons}")


def search_lines(results: list, chosen: Candidate) -> list:
    ranked = sorted((c for c in results if c.refused is None), key=lambda c: c.seconds)
    refused = [c for c in results if c.refused is not None]
    lines = [f"  plan search (modelled, not measured): {len(results)} candidates, {len(ranked)} lowered, "
             f"{sum(not c.fits for c in ranked)} do not fit DRAM, {len(refused)} refused; chosen: {chosen.mesh} "
             f"residual {chosen.residual}"]
    for rank, c in enumerate(ranked[:SHOWN], 1):
        lines.append(f"    {rank}. {c}")
    if len(ranked) > SHOWN:
        lines.append(f"    ... {len(ranked) - SHOWN} more, the slowest {ranked[-1].seconds * 1e3:,.1f} ms")
    for c in refused[:3]:
        lines.append(f"    refused: {c}")
    return lines
