"""The plan: a readable summary of what each stage did to a model, printed by the demo and kept on the Program."""

from __future__ import annotations

import collections

from .lowering.blocks import instance_of
from .lowering.program_ir import COLLECTIVE_OPS, ProgramIR, refs_in
from .ir.graph import ModelGraph


def human_bytes(n: float) -> str:
    """Bytes in the largest unit that keeps the figure at least 1 (B, KiB, MiB, GiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} B"


def block_lines(ir: ProgramIR) -> list:
    """One line per module list whose instances became block functions: how many instances, which functions."""
    by_container: dict = collections.defaultdict(list)
    for kind in ir.blocks.values():
        by_container[kind.container].append(kind)
    lines = []
    for container, kinds in by_container.items():
        count = sum(len(k.instances) for k in kinds)
        lines.append(f"  blocks: {container} x{count} as {len(kinds)} function(s): " +
                     ", ".join(f"{k.name} x{len(k.instances)}" for k in kinds))
    return lines


def peak_activation_bytes(ir: ProgramIR) -> int:
    """Peak bytes of live activations on one device, freeing each tensor after its last use (tile-padded)."""
    last_use = ir.last_uses()
    sizes = {i.name: i.spec.nbytes for i in ir.inputs}
    sizes.update({name: spec.nbytes for name, spec in ir.tensors.items()})
    for op in ir.ops:  # outputs written into persistent buffers are counted with the buffers
        if "persistent_output_tensor" in op.kwargs:
            sizes.update({name: 0 for name in op.outputs})
    outputs = set(refs_in(ir.outputs))
    live = {i.name for i in ir.inputs}
    current = sum(sizes[n] for n in live)
    peak = current
    for index, op in enumerate(ir.ops):
        for name in op.outputs:
            live.add(name)
            current += sizes[name]
        peak = max(peak, current)
        for name in [n for n in live if last_use.get(n, -1) <= index and n not in outputs]:
            live.discard(name)
            current -= sizes[name]
    return peak + sum(spec.nbytes for spec in ir.buffers.values())




def collective_table(ir: ProgramIR) -> list:
    """Lines: the collectives of the first instance of each repeated block, then totals for the program."""
    per_block: dict = collections.OrderedDict()
    totals: dict = collections.Counter()
    total_bytes: dict = collections.Counter()
    for op in ir.collectives():
        axis = op.kwargs.get("cluster_axis")
        nbytes = ir.tensors[op.outputs[0]].nbytes
        if op.fn.endswith("ring_joint_scaled_dot_product_attention"):
            nbytes = 2 * ir.buffers[op.kwargs["persistent_output_buffer_k"].text].nbytes  # K and V of the whole ring pass through every device
        key = (COLLECTIVE_OPS[op.fn], axis)
        per_block.setdefault(instance_of(op.module) or "(outside blocks)", []).append((key, nbytes, op.module))
        totals[key] += 1
        total_bytes[key] += nbytes
    lines = []
    seen_containers = set()
    for block, entries in per_block.items():
        container = block.rsplit(".", 1)[0] if block[-1].isdigit() else block
        if container in seen_containers:
            continue
        seen_containers.add(container)
        lines.append(f"    {block}: {len(entries)} collectives")
        for (name, axis), nbytes, module in entries:
            lines.append(f"      {name:16s} axis {axis}  {human_bytes(nbytes):>12s} per device   {module}")
    lines.append("    program total: " + ", ".join(f"{name} on axis {axis} x{n} ({human_bytes(total_bytes[(name, axis)])})"
                                                for (name, axis), n in sorted(totals.items())))
    return lines


def plan_text(mg: ModelGraph, ir: ProgramIR, timings: dict, mesh: str) -> str:
    lines = [f"meshdit plan: {mg.model_name} on mesh {mesh}, activations {ir.act_dtype}, "
             f"matmul weights {ir.weight_dtype}" + (f", matmuls {ir.matmul_fidelity}" if ir.matmul_fidelity != "HiFi2"
                                                    else "") + (" (planned on meta)" if mg.on_meta else "")]
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
    if ir.fusions:
        lines.append("  fused at lowering: " + ", ".join(f"{k} x{n}" for k, n in sorted(ir.fusions.items())))
    lines.extend(block_lines(ir))
    cov = ir.coverage()
    n_dev, n_host = sum(cov["device"].values()), sum(cov["host"].values())
    lines.append(f"  ttnn ops: {n_dev} on device, {n_host} on host")
    lines.append("    device: " + ", ".join(f"{k.replace('ttnn.', '')} x{n}" for k, n in
                                             sorted(cov["device"].items(), key=lambda kv: -kv[1])))
    if n_host:
        lines.append("    host fallback: " + ", ".join(f"{k} x{n}" for k, n in sorted(cov["host"].items())))
    lines.append(f"  memory per device (tile-padded): weights {human_bytes(ir.weight_bytes())} in {len(ir.weights)} tensors, "
                 f"peak activations {human_bytes(peak_activation_bytes(ir))}")
    plan = mg.sharding
    if plan is not None:
        roles = collections.Counter(plan.linear_roles.values())
        attention = ", ".join(f"{strategy.value} x{n}" for strategy, n in sorted(plan.attention_counts().items(),
                                                                                 key=lambda kv: kv[0].value))
        lines.append(f"  sharding: submesh {plan.submesh[0]}x{plan.submesh[1]} per cfg branch "
                     f"(x{ir.cfg_factor}); sp axis {plan.sp_axis}, tp axis {plan.tp_axis}"
                     + (f", ulysses axis {plan.ulysses_axis}" if plan.ulysses_axis is not None else "")
                     + "; linears " + (", ".join(f"{k} x{v}" for k, v in sorted(roles.items())) or "replicated")
                     + f"; attention {attention or 'none'}; sequence sharded from "
                     + (", ".join(f"{n} (dim {t})" for n, t in plan.sp_origins) or "nowhere"))
        if plan.unruled:
            lines.append("  no sharding rule (inputs gathered, run whole): " + ", ".join(
                f"{op} x{len(where)} (first at {where[0]})" for op, where in sorted(plan.unruled.items())))
        lines.append("  collectives (first instance of each repeated block; bytes = output per device):")
        lines.extend(collective_table(ir))
    lines.extend(modelled_time_lines(ir))
    for note in mg.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def modelled_time_lines(ir: ProgramIR) -> list:
    """The cost model's step time for the system the mesh implies, and where it goes (modelled, not measured)."""
    from .cost import NoSystemError, estimate
    from .cost.estimate import summary

    try:
        est = estimate(ir)
    except NoSystemError as error:
        return [f"  modelled time: none ({error})"]
    except Exception as error:  # noqa: BLE001 - the estimate is a report: its failure must not fail lower()
        return [f"  modelled time: none (the cost model failed on this program: {type(error).__name__}: {error}; "
                "program.estimate() raises it)"]
    cfg = f", cfg {ir.cfg_factor} branches side by side" if ir.cfg_factor > 1 else ""
    return [f"  modelled time (cost model, not measured): {est.seconds * 1e3:,.1f} ms per forward on "
            f"{est.system.name} ({est.device_ops} device ops{cfg}); " + summary(est.totals, est.seconds),
            f"    tile padding wastes {est.waste_flops / max(est.flops, 1):.1%} of {est.flops / 1e9:,.1f} GFLOP "
            f"and {est.waste_bytes / 2**20:,.1f} MiB of {est.dram_bytes / 2**20:,.1f} MiB DRAM traffic per chip"]
