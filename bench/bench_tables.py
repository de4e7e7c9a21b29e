"""Write a generated table into BENCHMARKS.md between its begin/end markers (added with a heading if absent)."""

from __future__ import annotations

import os
import re

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
