"""Measured: how long the emitted full-size programs are, flat and as one function per block kind.

    python bench/program_size.py            # rewrites the program-size table in BENCHMARKS.md

Each model is planned on meta in its seed parallel configs (bf16 activations, bfp8 weights) and its program IR
printed twice: flat (`emit_source(ir, blocks=False)`, one forward of every op, as meshdit emitted programs before
block functions) and structured (the default: a forward that calls one function per distinct repeated block).
Lines count the whole program file; the forward and the block functions are counted on their own too.
"""

from __future__ import annotations

import os
import re
import sys
from meshdit import model_zoo
from meshdit.lowering import emit_source

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tables import lower_full_size, measure_and_record  # noqa: E402

CASES = [("sd35-large", "2x4"), ("sd35-large", "4x8"), ("flux1-dev", "2x4"), ("flux1-dev", "4x8"),
         ("mochi1", "2x4"), ("mochi1", "4x8")]


def function_lines(source: str) -> dict:
    """Function name -> its line count, for the top-level functions after make_configs (the model's part)."""
    blocks = re.split(r"\n\n\ndef ", source.split("\n\n\ndef make_configs", 1)[1])[1:]
    return {block.split("(", 1)[0]: len(block.split("\n\n\nif __name__")[0].rstrip().splitlines()) for block in blocks}


def measure(name: str, mesh_key: str) -> dict:
    program = lower_full_size(name, mesh_key)
    mesh = model_zoo.seed_mesh(name, mesh_key)
    flat, structured = emit_source(program.ir, blocks=False), program.source
    functions = function_lines(structured)
    kinds = program.ir.blocks
    return {"model": name, "mesh": str(mesh), "ops": len(program.ir.ops), "flat": len(flat.splitlines()),
            "flat_forward": function_lines(flat)["forward"], "lines": len(structured.splitlines()),
            "forward": functions["forward"],
            "blocks": ", ".join(f"{k.name} x{len(k.instances)} ({functions[k.name]} lines)" for k in kinds.values())}


def table(rows: list) -> str:
    lines = ["Lines of the emitted program.py (the same program IR printed both ways; the rest of the file, "
             "tables of inputs and weights and make_configs, is the same in both).",
             "",
             "| model | mesh config | device ops | flat: lines (forward) | with block functions: lines (forward) "
             "| block functions (instances, lines each) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['mesh']} | {r['ops']} | {r['flat']} ({r['flat_forward']}) "
                     f"| {r['lines']} ({r['forward']}) | {r['blocks']} |")
    return "\n".join(lines)


def main(argv):
    measure_and_record("program-size",
                       "## Emitted program size (measured)\n\n`python bench/program_size.py`. Each distinct "
                       "repeated block is lowered to one function that every layer calls with its own weights.",
                       [c for c in CASES if not argv or c[0] in argv], measure, table)


if __name__ == "__main__":
    main(sys.argv[1:])
