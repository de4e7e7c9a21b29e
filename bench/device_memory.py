"""Measured by the real ttnn allocator: do full-size models fit one Wormhole chip in the seeds' configs?

    python bench/device_memory.py                   # rewrites the device-memory table in BENCHMARKS.md
    python bench/device_memory.py sd35-large        # one model

Each model is planned on meta (no weights), its program saved, and run by the real ttnn 0.81.1 on a mocked T3K
or Galaxy (meshdit.conformance): weights are allocated on device uninitialised (same buffers, no host copies), one
forward pass of one cfg branch runs through real ttnn (every op validated, the real allocator), untraced. The mock
computes no values. DRAM per chip is 12 banks of 1,072,693,184 B (11.99 GiB), as the allocator reports it.
Next to the measured figures: meshdit's own modelled weight bytes (the program IR, tile-padded).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from meshdit import conformance, model_zoo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tables import lower_full_size, measure_and_record  # noqa: E402

GIB = 1024 ** 3
# (model, mesh, weight dtype): the seeds' configs (a mesh shape names the seed's parallel config); SD3.5 also with
# bf16 weights (TT-DiT's default for SD3.5); and the hybrid ulysses x ring, which takes both mesh axes for the
# sequence and so leaves no axis for tp: every chip holds all the weights.
CASES = [("sd35-large", "2x4", "bf16"), ("sd35-large", "2x4", "bfp8"), ("sd35-large", "4x8", "bf16"),
         ("sd35-large", "4x8", "bfp8"), ("flux1-dev", "2x4", "bfp8"), ("flux1-dev", "4x8", "bfp8"),
         ("flux1-schnell", "2x4", "bfp8"), ("flux1-schnell", "4x8", "bfp8"), ("mochi1", "2x4", "bfp8"),
         ("mochi1", "4x8", "bfp8"), ("motif-image-6b", "2x4", "bf16"), ("motif-image-6b", "4x8", "bf16"),
         ("sd35-large", "4x8 cfg2@0 sp8@1 ulysses2@0", "bfp8"), ("mochi1", "4x8 sp8@1 ulysses4@0", "bfp8")]


def measure(name: str, mesh_key: str, weight_dtype: str) -> dict:
    program = lower_full_size(name, mesh_key, weight_dtype)
    mesh = model_zoo.seed_mesh(name, mesh_key)
    with tempfile.TemporaryDirectory() as directory:
        program.save_program(directory)
        start = time.perf_counter()
        try:
            report = conformance.run_on_mock(directory, weights=False)
        except conformance.ConformanceError as error:
            return {"model": name, "mesh": str(mesh), "weights": weight_dtype, "error": str(error).splitlines()[-1]}
        seconds = time.perf_counter() - start
    return {"model": name, "mesh": str(mesh), "weights": weight_dtype, "ops": report.device_operations,
            "modelled_weights": program.ir.weight_bytes() / GIB, "weights_gib": report.weights_bytes / GIB,
            "peak_gib": report.peak_dram_bytes / GIB, "capacity_gib": report.dram_capacity / GIB,
            "fits": report.fits, "seconds": seconds, "cluster": report.cluster}


def table(rows: list) -> str:
    lines = ["Measured by the real ttnn 0.81.1 allocator on mocked clusters (weights allocated, not written; one "
             "untraced forward of one cfg branch). Per chip; modelled = meshdit's own count from the program IR. "
             "The hybrid ulysses x ring rows use both mesh axes for the sequence, so there is no tp: every chip "
             "holds all the weights.",
             "",
             "| model | mesh config | weights | device ops | weights, modelled (GiB) | weights, allocator (GiB) "
             "| peak DRAM, allocator (GiB) | DRAM per chip (GiB) | fits | mock run (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['mesh']} | {r['weights']} | rejected: {r['error']} | | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['mesh']} ({r['cluster']}) | {r['weights']} | {r['ops']} "
                     f"| {r['modelled_weights']:.2f} | {r['weights_gib']:.2f} | {r['peak_gib']:.2f} "
                     f"| {r['capacity_gib']:.2f} | {'yes' if r['fits'] else 'NO'} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv):
    measure_and_record("device-memory",
                       "## Full-size models on one Wormhole chip's DRAM (measured, real ttnn allocator in mock mode)"
                       "\n\n`python bench/device_memory.py`.",
                       [c for c in CASES if not argv or c[0] in argv], measure, table)


if __name__ == "__main__":
    main(sys.argv[1:])
