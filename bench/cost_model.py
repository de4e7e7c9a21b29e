"""Modelled, not measured: the cost model (meshdit/cost) against TT-DiT's published Wormhole denoising times.

    python bench/cost_model.py                     # lowers the six seed plans, fits, rewrites BENCHMARKS.md's section
    python bench/cost_model.py --cache /tmp/irs    # keep the lowered program IRs there (lowering takes 25-150 s each)

Each published point (research notes: tt-metal models/tt_dit tests/models/*/test_performance_*.py) is modelled on
meshdit's program for TT-DiT's parallel plan: the seed config, bf16 weights (TT-DiT's default), TT-DiT's residual
layout (hidden-sharded for SD3.5 and Flux, replicated for Mochi), with TT-DiT's run settings (ethernet dispatch:
8x8 grid; 1 link per CCL on 2x4 and 4 on Galaxy; TT_MM_THROTTLE_PERF=5 where the test sets it), plus what TT-DiT's
run does beyond its device program (tt_dit_runs.py: Mochi-1's FSDP gathers; its host phase is measured and reported,
not fitted). What still differs is the op list inside each block; the per-block table says where. Three
efficiencies (calibration.py) are fitted on three points and the other three are held out. The SDPA term alone is
also checked against measured op times (measured_ops.py).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import pickle
import sys
import warnings
from dataclasses import replace

from meshdit import cost, model_zoo
from meshdit.cost import calibration, systems
from meshdit.cost.ops import MATMULS
from meshdit.lowering.program_ir import COLLECTIVE_OPS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tables import replace_block  # noqa: E402
import measured_ops  # noqa: E402
import tt_dit_runs  # noqa: E402


# (model, mesh, published s per step, forwards per step, TT-DiT's residual layout, links, throttle, source)
# Per step -> per forward: SD3.5 runs cfg on the mesh (both halves side by side: one forward per step); Flux.1-dev
# is guidance-distilled (one forward); Mochi-1's pipeline runs the uncond and cond passes one after the other on
# the whole mesh (two forwards per step).
POINTS = [
    ("sd35-large", "2x4", 11.0 / 20, 1, "sharded", 1, False, "QuietBox denoise 11 s / 20 steps"),
    ("sd35-large", "4x8", 4.2 / 20, 1, "sharded", 4, True, "Galaxy denoise 4.2 s / 20 steps, THROTTLE=5"),
    ("flux1-dev", "2x4", 0.75, 1, "sharded", 1, False, "QuietBox 0.75 s per step"),
    ("flux1-dev", "4x8", 0.30, 1, "sharded", 4, False, "Galaxy 0.30 s per step"),
    ("mochi1", "2x4", 1320.0 / 50, 2, "replicated", 1, False, "QuietBox denoise 1320 s / 50 steps"),
    ("mochi1", "4x8", 400.0 / 50, 2, "replicated", 4, True, "Galaxy denoise 400 s / 50 steps, THROTTLE=5"),
]
FIT_SET = [("sd35-large", "2x4"), ("sd35-large", "4x8"), ("mochi1", "4x8")]
WHY_FIT_SET = ("the points whose meshdit programs are closest to TT-DiT's blocks, so the efficiencies do not absorb "
               "a structural gap: SD3.5 Large on both systems (TT-DiT's residual layout, fused QKV with ttnn's head "
               "split and concat, GELU inside ff1's matmul) pins matmul, collectives and per-op overhead, Mochi-1 on Galaxy (71% of its FLOPs are "
               "attention, HW note section 4) pins "
               "SDPA. Flux.1-dev was held out on both systems because its RoPE ran op by op on tensors whose last "
               "dim is 2, padded to 32-wide tiles (tt_dit_perf_techniques.md estimated +0.6-1.1 s per step before "
               "this model existed); since passes/pairs.py that rotation is one matmul per q/k (one "
               "rotary_embedding_llama since lowering/rules/rotary.py), and Flux stays held out, now a test of the "
               "fit; Mochi-1 on QuietBox tests the move between systems")
# the obvious alternative, one point per model, reported for comparison
ONE_PER_MODEL = [("sd35-large", "4x8"), ("flux1-dev", "2x4"), ("mochi1", "4x8")]
# TT-DiT's blocks as the research notes describe them (tt_dit_design.md sections 4.3, 4.4, 9.2;
# tt_dit_perf_techniques.md), per model family, to set against meshdit's counts per block kind
TT_DIT_BLOCKS = {
    "sd35-large": "joint block: fused QKV per stream, fused GELU in ff1, adaLN folded into 4 distributed LayerNorms; "
                  "CCLs 6 all-gathers + 4 stats all-gathers + 2 reduce-scatters + 1 ring SDPA (last block: 4 + 3 + "
                  "1 + 1); ~60 small ops",
    "flux1-dev": "double block as SD3.5's, RoPE as x*cos + rotate90(x)*sin (3 ops per q/k; meshdit: one "
                 "rotary_embedding_llama per q/k); single block: 2 stats "
                 "all-gathers + 2 all-gathers + 2 reduce-scatters + 1 ring SDPA, attention out and MLP down in one "
                 "row-parallel matmul",
    "mochi1": "residual replicated over tp: 8 all-gathers (2 modulation, 4 attention, 2 FF) + 2 reduce-scatters + "
              "1 ring SDPA; FSDP: each block linear's weight all-gathered over sp before use (in its modelled time, "
              "tt_dit_runs.py); fused QKV; RoPE in one rotary_embedding_llama per q/k (meshdit too, since "
              "passes/pair_products.py); SDPA q/k chunks 128/512 on both systems (MochiAttention's "
              "sdpa_chunk_size_map for Wormhole sp2/tp4 and sp8/tp4)",
}


def lower(name: str, mesh_key: str, residual: str, cache: str | None):
    path = os.path.join(cache, f"{name}_{mesh_key}_{residual}.pkl") if cache else None
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)["ir"]
    import meshdit

    mesh = model_zoo.seed_mesh(name, mesh_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model_zoo.build(name, device="meta"), mesh,
                                model_zoo.example_inputs(name, device="meta", batch=mesh.cfg.factor),
                                dtype="bf16", weight_dtype="bf16", static_inputs=model_zoo.static_inputs(name),
                                check=False, residual=residual)
    if path:
        os.makedirs(cache, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump({"ir": program.ir}, f)
    return program.ir


def tt_dit_system(ir, links: int, throttle: bool):
    """TT-DiT's run settings on the system the mesh implies."""
    # TT_MM_THROTTLE_PERF=5 caps matmul throughput at 33% (HW note section 1, compute_throttle_utils.hpp)
    return replace(systems.system_for(ir.mesh_shape), dispatch="ethernet", links=links,
                   mm_throttle=0.33 if throttle else None)


def narrow_seconds(ir, system, eff) -> float:
    """Modelled seconds (dispatch included) of the ops whose largest tensor's last dim fills at most a quarter of
    its 32-wide tile: the op-by-op RoPE on [..., d/2, 2] pairs TT-DiT does in one to three ops per q/k."""
    walk = importlib.import_module("meshdit.cost.estimate")
    ctx = walk.Context(ir, system, eff)
    total = 0.0
    for op in ir.ops:
        specs = ctx.tensors_read(op) + ctx.outputs(op)
        biggest = max(specs, key=lambda s: s.nbytes, default=None)
        if op.on_host or biggest is None or not biggest.shape or biggest.shape[-1] > 8:
            continue
        c = walk.op_cost(op, ctx)
        total += sum(c.seconds.values()) + (eff.op_overhead_s * (1 + c.extra_ops) if c.device_op else 0.0)
    return total


def ring_sdpa_use(ir, system) -> str:
    """Chunk sizes and busy cores of the first ring attention: ttnn's SDPA splits work by (batch, head, q chunk)."""
    walk = importlib.import_module("meshdit.cost.estimate")
    ops = importlib.import_module("meshdit.cost.ops")
    ctx = walk.Context(ir, system, calibration.FITTED)
    for op in ir.ops:
        if COLLECTIVE_OPS.get(op.fn) == "ring_joint_sdpa":
            q, jq = ctx.spec(op.args[0]), ctx.spec(op.args[3])
            lengths = [q.padded_shape[-2], jq.padded_shape[-2] if jq is not None else 0]
            busy = ops.sdpa_cores(op, ctx, lengths, q)
            chunks = ctx.chunks(op)
            return (f"ring SDPA: {q.shape[1]} heads x {sum(lengths)} query rows per chip, q chunk {chunks.q}, "
                    f"k chunk {chunks.k}: {busy:.0f} of {ctx.sdpa_grid_cores(op)} cores busy on average")
    return "no ring SDPA"


def misses(rows) -> list:
    """One line per held-out point outside +-25%, with what the model says about the gap (figures computed)."""
    lines = []
    for r in rows:
        if r["fit"] or abs(r["ratio"] - 1) <= 0.25:
            continue
        est = r["est"]
        same_model = [f for f in rows if f["fit"] and f["name"] == r["name"]]
        line = (f"- {r['name']} {r['mesh']}: modelled/published {r['ratio']:.3f}. Attention is "
                f"{est.totals['attention'] / est.seconds:.0%} of its modelled time; "
                f"{ring_sdpa_use(r['ir'], r['system'])}.")
        if same_model:
            fit = same_model[0]
            line += (f" The fitted point of the same model ({fit['mesh']}): "
                     f"{ring_sdpa_use(fit['ir'], fit['system'])}. Per chip this program computes "
                     f"{est.flops / fit['est'].flops:.2f}x the FLOPs of the fitted one; the model gives it "
                     f"{r['modelled'] / fit['modelled']:.2f}x the time (collectives "
                     f"{est.totals['collectives'] / est.seconds:.0%} of it, against "
                     f"{fit['est'].totals['collectives'] / fit['est'].seconds:.0%}); TT-DiT's published times are "
                     f"{r['published'] / fit['published']:.2f}x apart: per FLOP, TT-DiT's {r['mesh']} run is "
                     f"{(est.flops / fit['est'].flops) / (r['published'] / fit['published']) - 1:.0%} faster than "
                     f"its {fit['mesh']} run. Nothing in the model makes a FLOP on the larger system dearer (the "
                     "per-op overhead, the softmax's elementwise tiles per k chunk, the ring's merge per step, K/V "
                     "transfer under compute and idle cores are all in it), so one SDPA efficiency cannot hold "
                     "both points. Nor is the fitted run's TT_MM_THROTTLE_PERF=5 the cause: it slows matmul-family "
                     "ops only (ttnn's compute_throttle_utils sets the throttle define for matmul, minimal_matmul "
                     "and conv program factories; the SDPA, joint and ring joint SDPA factories never set it, so "
                     "their kernels build unthrottled), and the model throttles matmuls only.")
            if r["name"] in tt_dit_runs.HOST_PHASES:
                line += (" TT-DiT's run has one cost that does weigh more on the faster system: its host phase "
                         "per forward (above), the same seconds on both, taken as zero here.")
        line += (f" Dispatch overhead is {est.totals['dispatch'] / est.seconds:.0%} ({est.device_ops} device ops). "
                 "The model predicts meshdit's program; whether the rest of the gap is the model or the program "
                 "cannot be told apart without hardware.")
        lines.append(line)
    return lines


HOST_GRID = [i * 0.05 for i in range(41)]  # host phases tried, 0 to 2 s per forward


def host_phases(rows, model) -> list:
    """Per model whose TT-DiT run has a host phase per forward (tt_dit_runs.HOST_PHASES): the phase measured on
    this machine, and the band of phases for which the refitted model keeps that model's held-out points within
    25% with efficiencies no higher than the sourced ones. TT-DiT's published times do not give the phase on TT's
    hosts, so the fit itself takes it as zero, its lower bound."""
    out = []
    for name, measure in tt_dit_runs.HOST_PHASES.items():
        mine = [r for r in rows if r["name"] == name]
        if not mine:
            continue
        measured = measure(max(model_zoo.seed_mesh(name, r["mesh"]).sp.factor for r in mine))

        def refit(host_s):
            """Efficiencies refitted with host_s added to this model's points, and its held-out ratios."""
            cases = [(model(r, host_s if r["name"] == name else 0.0), r) for r in rows]
            eff = calibration.fit([(m, r["published"]) for m, r in cases if r["fit"]])
            return eff, [m(eff) / r["published"] for m, r in cases if r["name"] == name and not r["fit"]]

        band = []
        for host_s in HOST_GRID:
            eff, held = refit(host_s)
            plausible = eff.matmul <= calibration.SOURCED.matmul and eff.sdpa <= calibration.SOURCED.sdpa
            if plausible and all(abs(x - 1) <= 0.25 for x in held):
                band.append(host_s)
        at_measured = refit(measured)
        print(f"{name} host phase measured here {measured:.2f} s per forward (refit there: {at_measured}); "
              f"held-out within 25% for {band[0] if band else None}..{band[-1] if band else None} s", flush=True)
        out.append(dict(name=name, measured=measured, band=(band[0], band[-1]) if band else None,
                        at_measured=at_measured))
    return out


def block_counts(ir) -> dict:
    """Block kind -> (instances, device ops, matmuls, collectives by kind) of one instance."""
    out = {}
    first = {}
    for call in ir.calls:
        first.setdefault(call.kind, call)
    for kind, call in first.items():
        ops = ir.ops[call.start:call.end]
        ccl = collections.Counter(COLLECTIVE_OPS[op.fn] for op in ops if op.fn in COLLECTIVE_OPS)
        matmuls = sum(op.fn in MATMULS for op in ops)
        views = sum(op.fn == "ttnn.reshape" for op in ops)
        out[kind] = (len(ir.blocks[kind].instances), len(ops), matmuls, views, dict(ccl))
    return out


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="directory for lowered program IRs (pickles), reused when present")
    args = parser.parse_args(argv)
    rows = []
    for name, mesh_key, per_step, forwards, residual, links, throttle, source in POINTS:
        ir = lower(name, mesh_key, residual, args.cache)
        system = tt_dit_system(ir, links, throttle)
        outside = tt_dit_runs.outside(name, ir, system, model_zoo.seed_mesh(name, mesh_key).sp.axis)
        rows.append(dict(name=name, mesh=mesh_key, published=per_step / forwards, per_step=per_step,
                         forwards=forwards, ir=ir, system=system, fit=(name, mesh_key) in FIT_SET,
                         source=source, residual=residual, outside=outside))
        print(f"lowered {name} {mesh_key}: {len(ir.ops)} ops", flush=True)

    def model(row, host_s: float = 0.0):
        """TT-DiT's run as modelled: meshdit's program, plus what TT-DiT does beyond it (tt_dit_runs.py)."""
        return lambda eff: (cost.estimate(row["ir"], row["system"], eff).seconds + row["outside"].seconds(eff)
                            + host_s)

    fitted = calibration.fit([(model(r), r["published"]) for r in rows if r["fit"]])
    alternative = calibration.fit([(model(r), r["published"]) for r in rows if (r["name"], r["mesh"]) in ONE_PER_MODEL])
    alt_errors = {(r["name"], r["mesh"]): model(r)(alternative) / r["published"]
                  for r in rows if (r["name"], r["mesh"]) not in ONE_PER_MODEL}
    print(f"one point per model: {alternative}; held-out ratios {alt_errors}")
    print(f"fitted: {fitted}\ncalibration.py FITTED: {calibration.FITTED}")
    if any(abs(a / b - 1) > 0.01 for a, b in zip(vars(fitted).values(), vars(calibration.FITTED).values())):
        print("WARNING: calibration.py's FITTED differs from this fit by more than 1%: copy the fit there")
    for r in rows:
        r["est"] = cost.estimate(r["ir"], r["system"], fitted)  # meshdit's program alone
        r["modelled"] = model(r)(fitted)
        r["sourced"] = model(r)(calibration.SOURCED)
        r["as_emitted"] = cost.estimate(r["ir"], None, fitted).seconds  # meshdit's own run settings
        r["ratio"] = r["modelled"] / r["published"]
        r["narrow"] = narrow_seconds(r["ir"], r["system"], fitted)
        print(f"{r['name']:10s} {r['mesh']} {'fit ' if r['fit'] else 'held'} modelled {r['modelled']:8.3f} s "
              f"published {r['published']:8.3f} s per forward  ratio {r['ratio']:.2f}", flush=True)
    held = [abs(r["ratio"] - 1) for r in rows if not r["fit"]]
    print(f"held-out error: max {max(held):.1%}, mean {sum(held) / len(held):.1%}")
    host = host_phases(rows, model)
    body = report(rows, fitted, alternative, alt_errors, host)
    print(body)
    replace_block("cost-model", body, "## Cost model against TT-DiT's published denoising times (modelled)\n\n"
                  "`python bench/cost_model.py`. Every figure here is modelled by meshdit's cost model "
                  "(`meshdit/cost`), not measured on hardware.")


def outside_text(rows, host, fitted) -> list:
    """What the modelled TT-DiT runs add beyond meshdit's programs, and the host phases left out (figures)."""
    lines = []
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name and r["outside"].gathers]
        if mine:
            lines.append(
                f"- {name}: TT-DiT shards every block linear's weight over the sp mesh axis too (FSDP) and "
                f"all-gathers it before each use; meshdit's program keeps its weights resident (they fit), so "
                f"TT-DiT's {mine[0]['outside'].gathers} gathers per forward are added to its modelled time: "
                + ", ".join(f"{r['outside'].seconds(fitted):.3f} s on "
                            f"{r['est'].system.name}" for r in mine)
                + " (the cost model's all-gather fit and per-op overhead).")
    for h in host:
        held = [r for r in rows if r["name"] == h["name"] and not r["fit"]]
        band = (f"from {h['band'][0]:.2f} to {h['band'][1]:.2f} s" if h["band"] else "for no host phase")
        lines.append(
            f"- {h['name']}: TT-DiT's pipeline is not traced, and every forward starts with a host phase the device "
            "waits for (RoPE rebuilt in fp32 torch, its cos/sin tables interleaved, padded and converted to bf16 "
            "tiles, 2 x 273 MB uploaded; the time embedding in torch; tt_dit_runs.py). The same torch code path "
            f"takes {h['measured']:.2f} s per forward on this machine ({os.cpu_count()} CPU threads; ttnn's tile "
            "conversion stood in for, the upload not counted). TT-DiT publishes no figure for it on its own hosts, "
            "so the fit above takes it as zero, its lower bound. Refitted with a host phase added to both "
            f"{h['name']} points, the held-out " + ", ".join(f"{r['mesh']}" for r in held)
            + f" point stays within 25%, with efficiencies no higher than the sourced ones, {band} per forward "
            f"(searched 0-2 s in 0.05 s steps). At the phase measured here the refit gives {h['at_measured'][0]} "
            "and held-out ratio(s) " + ", ".join(f"{x:.2f}" for x in h['at_measured'][1])
            + (f": an SDPA efficiency above the sourced {calibration.SOURCED.sdpa}, so TT's hosts, with more cores "
               "than this machine, must run the phase faster than it does here."
               if h['at_measured'][0].sdpa > calibration.SOURCED.sdpa else "."))
    return lines


def report(rows, fitted, alternative, alt_errors, host) -> str:
    held = [abs(r["ratio"] - 1) for r in rows if not r["fit"]]
    lines = [f"Fitted on {sum(r['fit'] for r in rows)} of TT-DiT's 6 published Wormhole points ({WHY_FIT_SET}): "
             f"{fitted}. Held-out error: max {max(held):.1%}, mean {sum(held) / len(held):.1%} (goal: within 25%). "
             "Each point is meshdit's program for TT-DiT's plan (bf16 weights, TT-DiT's residual layout) with "
             "TT-DiT's run settings (ethernet dispatch 8x8 grid, 1 link per CCL on 2x4 and 4 on Galaxy, matmul "
             "throttle 33% where TT_MM_THROTTLE_PERF=5 was set), plus what TT-DiT's run does beyond that program "
             "(\"beyond\": Mochi-1's FSDP weight gathers, below). Per forward: Mochi-1's published step is two "
             "serial forwards (cfg passes), SD3.5's cfg halves run side by side. \"sourced\": the research note's "
             "datasheet efficiencies (matmul 0.6, SDPA 0.45, no per-op overhead). \"as emitted\": meshdit's own run "
             "settings (worker dispatch and 8x7 grid with 2 links per CCL on T3K, ethernet dispatch and 8x8 grid with "
             "4 links on Galaxy; cost/systems.py says why), fitted efficiencies. \"narrow-tensor ops\": modelled share of ops whose largest tensor has a last dim of at most 8 (a quarter of a tile or less: the "
             "diffusers RoPE on [..., d/2, 2] pairs, which TT-DiT does in 1-3 ops per q/k), and the ratio with them "
             "taken out (not a fitted figure: it says how much of a miss that structural gap explains).",
             "",
             "TT-DiT's runs beyond meshdit's programs (bench/tt_dit_runs.py, from TT-DiT's pipeline code):", "",
             *outside_text(rows, host, fitted), "",
             *(["Where held-out points miss:", ""] + misses(rows) + [""] if misses(rows) else []),
             "For comparison, fitting one point per model (" + ", ".join(f"{n} {m}" for n, m in ONE_PER_MODEL)
             + f") gives {alternative}; its held-out ratios: "
             + ", ".join(f"{n} {m} {v:.2f}" for (n, m), v in alt_errors.items())
             + ". Its lower matmul efficiency is Flux's extra data movement absorbed by the fit.",
             "",
             "| model | system, plan | set | published (s per forward) | modelled, fitted | of it beyond the program "
             "| ratio | sourced (ratio) | as emitted | matmul | attention | collectives | data movement | dispatch "
             "| narrow-tensor ops | ratio without them |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        est = r["est"]
        mesh = str(model_zoo.seed_mesh(r["name"], r["mesh"]))
        shares = " | ".join(f"{est.totals[c] / est.seconds:.0%}" for c in cost.CATEGORIES)
        lines.append(f"| {r['name']} | {est.system.name} {mesh} | {'fit' if r['fit'] else 'held out'} "
                     f"| {r['published']:.3f} ({r['source']}) | {r['modelled']:.3f} "
                     f"| {r['modelled'] - est.seconds:.3f} | {r['ratio']:.2f} "
                     f"| {r['sourced']:.3f} ({r['sourced'] / r['published']:.2f}) | {r['as_emitted']:.3f} "
                     f"| {shares} | {r['narrow'] / est.seconds:.0%} "
                     f"| {(r['modelled'] - r['narrow']) / r['published']:.2f} |")
    lines += ["", "Op-level check: ttnn's ring joint SDPA alone, measured on a Wormhole Galaxy (TT-DiT's MiniMax-H3 "
              "bring-up, bench/measured_ops.py says where), against the cost model's SDPA term:", "",
              *measured_ops.report(fitted.sdpa)]
    lines += ["", "Per block (modelled ms per forward, all instances, fitted efficiencies, TT-DiT's run settings); "
              "meshdit's op counts per instance against TT-DiT's block as the research notes describe it:", ""]
    for r in rows:
        est, counts = r["est"], block_counts(r["ir"])
        lines.append(f"**{r['name']} {r['mesh']}** ({est.device_ops} device ops, "
                     f"{est.flops / 1e12:.2f} TFLOP per chip, tile padding {est.waste_flops / est.flops:.1%} of "
                     f"FLOPs and {est.waste_bytes / 2**20:,.0f} MiB of DRAM traffic; {ring_sdpa_use(r['ir'], r['system'])}). "
                     "TT-DiT: "
                     f"{TT_DIT_BLOCKS[r['name']]}.")
        lines += ["", "| block | x | ops each (matmuls, reshapes) | collectives each | ms | "
                  + " | ".join(cost.CATEGORIES) + " |", "|---|---|---|---|---|" + "---|" * len(cost.CATEGORIES)]
        for b in est.blocks:
            n, ops, mm, views, ccl = counts.get(b.name, (b.instances, b.ops, "", "", {}))
            ccl_text = ", ".join(f"{k} {v}" for k, v in sorted(ccl.items())) or "-"
            cells = " | ".join(f"{b.seconds[c] * 1e3:,.1f}" for c in cost.CATEGORIES)
            lines.append(f"| {b.name} | {b.instances} | {ops} ({mm}, {views}) | {ccl_text} | {b.total * 1e3:,.1f} "
                         f"| {cells} |")
        lines.append("")
    return "\n".join(lines).rstrip()


if __name__ == "__main__":
    main(sys.argv[1:])
