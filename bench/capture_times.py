"""Measured: how long meshdit takes to plan full-size models on meta, next to plain torch.export of each.

    python bench/capture_times.py            # rewrites the capture table in BENCHMARKS.md

Each figure is one wall-clock run on the machine that runs the script (no weights are allocated: meta device).
"""

from __future__ import annotations

import os
import platform
import sys
import time
import warnings

import torch

import meshdit
from meshdit import model_zoo
from meshdit.capture import _meta_safe_autocast

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tables import measure_and_record  # noqa: E402

MODELS = ["sd35-large", "flux1-dev", "mochi1"]


def measure(name: str) -> dict:
    model = model_zoo.build(name, device="meta")
    inputs = model_zoo.example_inputs(name, device="meta")
    start = time.perf_counter()
    with torch.no_grad(), _meta_safe_autocast():
        torch.export.export(model, (), {**inputs, "return_dict": False}, strict=False)
    export_s = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        program = meshdit.lower(model, "1x1", inputs, dtype="bf16", static_inputs=model_zoo.static_inputs(name))
        total = time.perf_counter() - start
    stages = dict(line.split(" ", 1) for line in program.plan().splitlines()[1].split(": ", 1)[1].split(", "))
    return {"model": name, "params": sum(p.numel() for p in model.parameters()) / 1e9, "export": export_s,
            "capture": float(stages["capture"].rstrip("s")), "passes": float(stages["passes"].rstrip("s")),
            "lowering": sum(float(stages.get(k, "0s").rstrip("s")) for k in ("lowering", "emit")), "total": total,
            "ops": sum(sum(v.values()) for v in program.coverage().values())}


def table(rows: list) -> str:
    lines = [
        f"Measured on {platform.machine()} with {os.cpu_count()} cores, torch {torch.__version__}, "
        f"meshdit {meshdit.__version__}; one run each, seconds, meta device (no weights allocated).",
        "",
        "| model | params (B) | plain torch.export | meshdit capture | passes | lowering+emit | meshdit.lower total "
        "| ttnn ops | total / export |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:.2f} | {r['export']:.1f} | {r['capture']:.1f} | {r['passes']:.1f} "
                     f"| {r['lowering']:.2f} | {r['total']:.1f} | {r['ops']} | {r['total'] / r['export']:.2f}x |")
    return "\n".join(lines)


def main(argv):
    measure_and_record("capture-times",
                       "## Planning full-size models on meta (measured)\n\n`python bench/capture_times.py`. The goal "
                       "is a total no slower than plain torch.export, which needs planning each repeated block once.",
                       argv or MODELS, measure, table)

if __name__ == "__main__":
    main(sys.argv[1:])
