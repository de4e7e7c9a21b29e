"""Write a generated table into BENCHMARKS.md between its begin/end markers (added with a heading if absent)."""

from __future__ import annotations

import os
import re

def lower_full_size(name: str, mesh_key: str, weight_dtype: str = "bfp8"):
    """A full-size zoo model planned on meta (no weights) in a seed config ("2x4") or a mesh config, bf16."""
    import warnings

    import meshdit
    from meshdit import model_zoo

    mesh = model_zoo.seed_mesh(name, mesh_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return meshdit.lower(model_zoo.build(name, device="meta"), mesh,
                             model_zoo.example_inputs(name, device="meta", batch=mesh.cfg.factor),
                             dtype="bf16", weight_dtype=weight_dtype, static_inputs=model_zoo.static_inputs(name))


TARGET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "BENCHMARKS.md")


def measure_and_record(key: str, heading: str, cases, measure, table) -> None:
    """Run `measure` on each case (printing each row as it comes), render the rows with `table`, print the table
    and write it into BENCHMARKS.md's `key` block."""
    rows = []
    for case in cases:
        rows.append(measure(*case) if isinstance(case, tuple) else measure(case))
        print(rows[-1], flush=True)
    body = table(rows)
    print(body)
    replace_block(key, body, heading)


def replace_block(key: str, body: str, heading: str) -> None:
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    text = open(TARGET).read() if os.path.exists(TARGET) else "# Benchmarks\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += f"\n{heading}\n\n{block}\n"
    with open(TARGET, "w") as f:
        f.write(text)
