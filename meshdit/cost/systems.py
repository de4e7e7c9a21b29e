"""Wormhole chips and the systems built from them: the hardware constants of the cost model, each with its source.

Sources are named as `../shared/research/hardware_and_costmodel.md` (the research note, "HW note" below) cites them;
paths are in github.com/tenstorrent/tt-metal. Nothing here is fitted: fitted efficiencies live in calibration.py.

    system_for((2, 4))                 # T3K: the system a mesh shape implies
    system_for((2, 4), "galaxy")       # a named system (the mesh must fit in it)
    replace(T3K, links=1)              # run settings (links per CCL, dispatch, matmul throttle) are fields too
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import MeshditError


class NoSystemError(MeshditError):
    """No known system holds the mesh (or the named system is unknown)."""


@dataclass(frozen=True)
class Chip:
    name: str = "Wormhole"
    # AI clock 1.0 GHz. HW note section 1, docs.tenstorrent.com/aibs/wormhole/specifications.html
    clock_hz: float = 1.0e9
    # Matrix engine 8x16 x 16x16 per cycle = 4096 FLOP/cycle/core at LoFi; each higher fidelity adds a phase
    # (HiFi2 2, HiFi3 3, HiFi4 4). HW note section 1, tech_reports/GEMM_FLOPS/GEMM_FLOPS.md
    flops_per_cycle_lofi: int = 4096
    fidelity_phases: dict = field(default_factory=lambda: {"LoFi": 1, "HiFi2": 2, "HiFi3": 3, "HiFi4": 4})
    # The matrix engine's elementwise add/sub/mul: 8x16 elements per cycle, a multiply once per fidelity phase, add
    # and subtract in one; row reductions (max, sum) 16x16 per cycle. tech_reports/matrix_engine/matrix_engine.md
    eltwise_elements_per_cycle: int = 128
    reduce_elements_per_cycle: int = 256
    # Compute grid 8x8 with dispatch on ethernet cores (how TT-DiT opens T3K and Galaxy). HW note section 1,
    # tt_metal/core_descriptors/wormhole_b0_80_arch.yaml; GEMM_FLOPS.md ("max for Wormhole is 8x8")
    grid_ethernet_dispatch: tuple = (8, 8)
    # GDDR6, 6 channels: 288 GB/s spec. HW note section 1, WH spec page
    dram_bytes_per_s: float = 288e9
    # Achieved fraction of the spec: 239-261 GB/s measured inside matmuls, 267 GB/s micro-benchmark; the note's
    # sketch uses 288 * 0.85 = 245 GB/s. HW note sections 1 and 6, tech_reports/Saturating_DRAM_bandwidth
    dram_efficiency: float = 0.85
    # 12 GB GDDR6 per chip. HW note section 1
    dram_bytes: float = 12e9
    # Ethernet: 100 Gb/s per direction per link = 12.5 GB/s. HW note section 1,
    # tech_reports/EthernetMultichip/BasicEthernetGuide.md
    link_bytes_per_s: float = 12.5e9
    # One hop on the 1-D fabric: 711 ns (fit over message sizes). HW note section 1, tech_reports/CCLs/CCL_bandwidth.md
    hop_latency_s: float = 711e-9

    def peak_flops_per_core(self, fidelity: str) -> float:
        return self.flops_per_cycle_lofi / self.fidelity_phases[fidelity] * self.clock_hz

    def tile_cycles(self, op: str, fidelity: str = "LoFi") -> float:
        """Cycles of the matrix engine for one 32x32 tile of an elementwise "mul", "add" (or subtract) or a row
        "reduce" (max: no fidelity phases)."""
        elements = 32 * 32
        if op == "reduce":
            return elements / self.reduce_elements_per_cycle
        phases = self.fidelity_phases[fidelity] if op == "mul" else 1
        return elements / self.eltwise_elements_per_cycle * phases

    @property
    def dram_effective_bytes_per_s(self) -> float:
        return self.dram_bytes_per_s * self.dram_efficiency


WORMHOLE = Chip()


@dataclass(frozen=True)
class CclFit:
    """Time of one collective measured on 1 link of a WH LoudBox (bf16, large messages): fixed + per-step * steps +
    bytes on the bottleneck link / bandwidth. `steps` is N-1 on a line, N/2 on a ring."""

    fixed_s: float
    per_step_s: float
    bytes_per_s: float  # per link, both directions together where the topology uses both


# All from tech_reports/CCLs/results/SUMMARY_wormhole_b0_bfloat16_6144.md via HW note sections 1 and 6.
CCL_FITS = {
    # all_gather line: 4.47 us + 1.91 us (N-1); 11.7-11.8 GB/s achieved (94% of line rate)
    ("all_gather", "Linear"): CclFit(4.47e-6, 1.91e-6, 11.8e9),
    # all_gather ring: 4.47 us + 2.50 us N/2; 10.4 GB/s per direction, both directions used
    ("all_gather", "Ring"): CclFit(4.47e-6, 2.50e-6, 2 * 10.4e9),
    # reduce_scatter line: 3.23 us + 3.97 us (N-1); 10.5-11.1 GB/s
    ("reduce_scatter", "Linear"): CclFit(3.23e-6, 3.97e-6, 11.1e9),
    # reduce_scatter ring: 3.23 us + 3.06 us N/2; 8.2-8.3 GB/s per direction
    ("reduce_scatter", "Ring"): CclFit(3.23e-6, 3.06e-6, 2 * 8.3e9),
    # all_reduce line: 9.07 us + 5.82 us (N-1); its bytes move as a reduce-scatter then an all-gather (ccl.py)
    ("all_reduce", "Linear"): CclFit(9.07e-6, 5.82e-6, 11.1e9),
}


@dataclass(frozen=True)
class System:
    name: str
    mesh_shape: tuple
    # Ethernet links between two neighbouring chips. HW note sections 1-2: n300 L<->R 2 links
    # (BasicEthernetGuide); T3K/QuietBox 2 (t3k_mesh_graph_descriptor.textproto, count 2); WH Galaxy 4
    # (single_galaxy_mesh_graph_descriptor.textproto, count 4)
    links_per_neighbour: int
    # Compute grid with dispatch on worker cores (runtime/device.py open_mesh): a row goes to dispatch on T3K/Galaxy
    # chips, 8x7 (tt_dit_perf_techniques.md, "dispatch cores");
    # an N150 keeps 8x8 (HW note section 1: "compute grid 8x8 = 64 on n150")
    worker_dispatch_grid: tuple = (8, 7)
    chip: Chip = WORMHOLE
    # Run settings, not hardware: None means what the program's ops say
    # Where dispatch runs when meshdit's programs open this system on hardware (runtime/device.py open_mesh; the
    # mocked clusters always take worker dispatch): "ethernet" leaves the whole 8x8 grid to compute, as TT-DiT runs
    # T3K and Galaxy; "worker" gives a row of it to dispatch. Galaxy: ethernet, with all 4 links per CCL, as TT-DiT.
    # T3K: worker, keeping both links per CCL; TT-DiT's ethernet dispatch there runs with 1 link, which the cost
    # model puts slower for 3 of the 4 seed models on T3K (SD3.5 Large 486 vs 503 ms, Flux.1-dev 623 vs 677,
    # Motif 375 vs 388; Mochi-1 15.0 vs 14.7 s per forward, modelled on the seed configs' programs on
    # 2026-12-02). Unverified on hardware either way.
    dispatch: str = "worker"
    links: int | None = None  # links every CCL uses; None: the op's num_links (capped by links_per_neighbour)
    # TT_MM_THROTTLE_PERF=5 caps matmul throughput at 33% of peak on > 48 cores (HW note section 1,
    # ttnn/cpp/ttnn/operations/compute_throttle_utils.hpp); None: not set
    mm_throttle: float | None = None

    @property
    def grid(self) -> tuple:
        return self.chip.grid_ethernet_dispatch if self.dispatch == "ethernet" else self.worker_dispatch_grid

    @property
    def ccl_links(self) -> int:
        """The num_links meshdit's programs give every CCL on this system: every ethernet link to a neighbour (4 on
        Galaxy, as TT-DiT runs it; 2 on T3K, where TT-DiT uses 1 with dispatch on ethernet cores while meshdit
        dispatches on worker cores there: see `dispatch`). ttnn refuses more ("Requested link index 2 is out of
        bounds. 2 ethernet channels available", tt_metal/fabric/fabric.cpp:163, seen on the mocked T3K; 4 on the
        mocked Galaxy)."""
        return max(1, self.links_per_neighbour)

    def links_for(self, op_links: int | None) -> int:
        wanted = self.links if self.links is not None else (op_links or 1)
        return max(1, min(wanted, self.links_per_neighbour))

    def __str__(self):
        settings = [f"{self.dispatch} dispatch ({self.grid[0]}x{self.grid[1]} cores)"]
        if self.links is not None:
            settings.append(f"{self.links} link(s) per CCL")
        if self.mm_throttle is not None:
            settings.append(f"matmul throttle {self.mm_throttle:.0%}")
        return f"{self.name} {self.mesh_shape[0]}x{self.mesh_shape[1]}, " + ", ".join(settings)


# HW note section 2: n150 one WH; n300 two WH on one board; T3K/QuietBox 4 x n300 as a 2x4 mesh; Galaxy 32 WH 4x8
N150 = System("N150", (1, 1), links_per_neighbour=0, worker_dispatch_grid=(8, 8))
N300 = System("N300", (1, 2), links_per_neighbour=2)
T3K = System("T3K", (2, 4), links_per_neighbour=2)
GALAXY = System("Galaxy", (4, 8), links_per_neighbour=4, dispatch="ethernet")
SYSTEMS = {"n150": N150, "n300": N300, "t3k": T3K, "quietbox": T3K, "galaxy": GALAXY}


def _fits(mesh: tuple, system: System) -> bool:
    rows, cols = system.mesh_shape
    return (mesh[0] <= rows and mesh[1] <= cols) or (mesh[0] <= cols and mesh[1] <= rows)


def system_for(mesh_shape: tuple, system: "System | str | None" = None) -> System:
    """The named system, or the one the mesh shape implies: an exact match (1x1 N150, 1x2 N300, 2x4 T3K, 4x8 Galaxy),
    else the smallest system the mesh fits in (a 2x2 mesh runs on part of a T3K)."""
    mesh = tuple(mesh_shape)
    if isinstance(system, System):
        chosen = system
    elif system is not None:
        if system.lower() not in SYSTEMS:
            raise NoSystemError(f"unknown system {system!r}; known: {sorted(SYSTEMS)}")
        chosen = SYSTEMS[system.lower()]
    else:
        candidates = [N150, N300, T3K, GALAXY]
        exact = [s for s in candidates if s.mesh_shape == mesh]
        fitting = [s for s in candidates if _fits(mesh, s)]
        if not exact and not fitting:
            raise NoSystemError(f"no known system holds a {mesh[0]}x{mesh[1]} mesh (largest: Galaxy 4x8)")
        chosen = (exact or fitting)[0]
    if not _fits(mesh, chosen):
        raise NoSystemError(f"a {mesh[0]}x{mesh[1]} mesh does not fit on {chosen.name} {chosen.mesh_shape}")
    return chosen


__all__ = ["Chip", "CclFit", "CCL_FITS", "System", "N150", "N300", "T3K", "GALAXY", "SYSTEMS", "system_for",
           "NoSystemError", "replace"]
