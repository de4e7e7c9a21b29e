"""The plan: a readable summary of what each stage did to a model, printed by the demo and kept on the Program."""

from __future__ import annotations

import collections

from .lowering.ir import ProgramIR
from .passes.graph import ModelGraph


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def repeated_blocks(mg: ModelGraph) -> list:
    """Identical repeated blocks: (container, instances, distinct structures), from the nodes' module paths.

    A block's structure is its op sequence with shapes; blocks that share it can share one plan (the later goal:
    plan a repeated block once, so lowering a 38-block model costs about one block)."""
    groups: dict = collections.defaultdict(lambda: collections.defaultdict(list))
    for node in mg.op_nodes():
        stack = node.meta.get("nn_module_stack") or {}
        for path, _cls in stack.values():
            path = path.replace("L['self'].", "").replace("L__self__.", "")
            parts = path.split(".")
            for i, part in enumerate(parts):
                if part.isdigit():
                    container, index = ".".join(parts[:i]), int(part)
                    shape = tuple(node.meta["val"].shape) if hasattr(node.meta.get("val"), "shape") else ()
                    groups[container][index].append((str(node.target), shape))
                    break
            else:
                continue
            break
    rows = []
    for container, blocks in groups.items():
        signatures = {tuple(ops) for ops in blocks.values()}
        rows.append((container, len(blocks), len(signatures)))
    return sorted(rows)


def plan_text(mg: ModelGraph, ir: ProgramIR, timings: dict, mesh: str) -> str:
    lines = [f"meshdit plan: {mg.model_name} on mesh {mesh}, activations {ir.act_dtype}, "
             f"matmul weights {ir.weight_dtype}" + (" (planned on meta)" if mg.on_meta else "")]
    lines.append("  stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    stats = mg.gm.meta.get("pass_stats", {})
    if stats:
        lines.append("  passes: " + ", ".join(f"{k} -> {v['nodes']} nodes" for k, v in stats.items()))
    inputs = ", ".join(f"{i.name}{list(i.spec.shape)}" for i in ir.inputs)
    lines.append(f"  inputs: {inputs}")
    if ir.static_inputs:
        lines.append("  static inputs (baked in, checked on every call): " +
                     ", ".join(f"{k} {v}" for k, v in ir.static_inputs.items()))
    kinds = collections.Counter(p.kind for p in mg.patterns)
    lines.append("  recognised: " + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))
    mlps = collections.Counter(p.info.get("act") for p in mg.patterns if p.kind == "mlp")
    if mlps:
        lines.append("  mlp activations: " + ", ".join(f"{k} x{n}" for k, n in sorted(mlps.items())))
    for container, count, distinct in repeated_blocks(mg):
        lines.append(f"  repeated blocks: {container} x{count}, {distinct} distinct structure(s)")
    cov = ir.coverage()
    n_dev, n_host = sum(cov["device"].values()), sum(cov["host"].values())
    lines.append(f"  ttnn ops: {n_dev} on device, {n_host} on host")
    lines.append("    device: " + ", ".join(f"{k.replace('ttnn.', '')} x{n}" for k, n in
                                             sorted(cov["device"].items(), key=lambda kv: -kv[1])))
    if n_host:
        lines.append("    host fallback: " + ", ".join(f"{k} x{n}" for k, n in sorted(cov["host"].items())))
    peak = max((t.nbytes for t in ir.tensors.values()), default=0)
    lines.append(f"  weights: {len(ir.weights)} tensors, {_mib(ir.weight_bytes())} per device (tile-padded); "
                 f"largest activation {_mib(peak)}")
    for note in mg.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
