"""Modelled, not measured: seconds per image for the seed models, TT-DiT's hand plan against meshdit's plan search.

    python bench/seed_plans.py                 # every row below; rewrites BENCHMARKS.md's "seed plans" section
    python bench/seed_plans.py sd35-large      # rows of one model (the section then holds only those)

Per row, at full size on meta, bf16 activations and weights: meshdit's program for TT-DiT's parallel plan (the seed
config, TT-DiT's residual layout) and the program the plan search chooses for the bare mesh shape, each modelled by
the cost model (meshdit/cost, default run settings: meshdit's programs as emitted). Seconds per image = steps x
forwards per step x the modelled forward + the non-denoising part of TT-DiT's published total (text encoders and
VAE, published total minus published denoising; labelled "published"). The last columns are TT-DiT's published
seconds per image and the seed target (research notes: anchors.md "Headline numbers", hardware_and_costmodel.md).
Below the table, each chosen plan per block kind, and for a row that misses its target, the forward time the target
leaves against what the chosen plan spends on matmuls and attention (what bounds it).
"""

from __future__ import annotations

import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tables import replace_block  # noqa: E402

# (model, mesh, steps, forwards per step, batch per forward, TT-DiT residual, published s/image, published
#  non-denoising s, seed target s/image or None). SD3.5 runs both cfg halves in one batch-2 forward; Flux is
# guidance-distilled (one batch-1 forward); Mochi-1's pipeline runs its two cfg passes one after the other, and its
# prompt masks differ between them (a static input), so batch 1 twice per step.
ROWS = [
    ("sd35-large", "2x4", 20, 1, 2, "sharded", 14.0, 14.0 - 12.5, 14.4),
    ("sd35-large", "4x8", 20, 1, 2, "sharded", 5.9, 5.9 - 4.2, 3.6),
    ("flux1-dev", "2x4", 28, 1, 1, "sharded", 23.0, 23.0 - 28 * 0.75, 6.5),
    ("flux1-dev", "4x8", 28, 1, 1, "sharded", 9.0, 9.0 - 28 * 0.30, 6.5),
    ("flux1-schnell", "2x4", 4, 1, 1, "sharded", 4.70, 23.0 - 28 * 0.75, 2.0),
    ("flux1-schnell", "4x8", 4, 1, 1, "sharded", 2.40, 9.0 - 28 * 0.30, 1.0),
    # Motif: 20 steps (its README); encoders+VAE from TT-DiT's perf-test budgets (28 steps: 2x4 0.52 s/step of 16.5 s,
    # 4x8 0.2 s/step of 6.5 s, tt_dit_design.md); the seed runs cfg on the mesh (batch 2, one forward per step)
    ("motif-image-6b", "2x4", 20, 1, 2, "sharded", 10.5, 16.5 - 28 * 0.52, None),
    ("motif-image-6b", "4x8", 20, 1, 2, "sharded", 10.5, 6.5 - 28 * 0.2, 6.5),
    ("mochi1", "2x4", 50, 2, 1, "replicated", 1385.0, 1385.0 - 1320.0, None),
    ("mochi1", "4x8", 50, 2, 1, "replicated", 430.0, 430.0 - 400.0, None),
]


def lower(name: str, mesh, batch: int, residual):
    import meshdit
    from meshdit import model_zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return meshdit.lower(model_zoo.build(name, device="meta"), mesh,
                             model_zoo.example_inputs(name, device="meta", batch=batch), dtype="bf16",
                             weight_dtype="bf16", static_inputs=model_zoo.static_inputs(name), residual=residual)


def measure(name, mesh_key, steps, forwards, batch, residual, published, other, target):
    from meshdit import model_zoo

    hand = lower(name, model_zoo.seed_mesh(name, mesh_key), batch, residual)
    started = time.perf_counter()
    chosen = lower(name, mesh_key, batch, None)
    searched = time.perf_counter() - started
    hand_s, estimate = hand.estimate().seconds, chosen.estimate()
    chosen_s = estimate.seconds
    shares = sorted(estimate.totals.items(), key=lambda kv: -kv[1])
    bound = ", ".join(f"{k} {v / chosen_s:.0%}" for k, v in shares[:3])
    line = next(line for line in chosen.plan().splitlines() if "plan search" in line)
    return dict(name=name, mesh=mesh_key, steps=steps, forwards=forwards, hand_mesh=f"{hand.mesh} {residual}",
                estimate=estimate,
                chosen_mesh=f"{chosen.mesh} {chosen.residual}", hand_s=hand_s, chosen_s=chosen_s,
                hand_image=steps * forwards * hand_s + other, chosen_image=steps * forwards * chosen_s + other,
                other=other, published=published, target=target, searched=searched, bound=bound,
                waste=(estimate.waste_bytes / estimate.dram_bytes, estimate.waste_flops / estimate.flops),
                candidates=line.split(":")[1].split(";")[0].strip())


def table(rows) -> str:
    out = ["| model | mesh | steps x forwards | TT-DiT plan | modelled ms/forward | chosen plan | modelled "
           "ms/forward | s/image TT-DiT plan (modelled) | s/image chosen (modelled) | encoders+VAE (published) | "
           "TT-DiT s/image (published) | target | chosen plan's time goes to | "
           "tile padding (chosen: DRAM bytes, FLOPs) | search |",
           "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        target = f"{r['target']:.1f}" if r["target"] else "-"
        out.append(f"| {r['name']} | {r['mesh']} | {r['steps']} x {r['forwards']} | {r['hand_mesh']} | "
                   f"{r['hand_s'] * 1e3:,.0f} | {r['chosen_mesh']} | {r['chosen_s'] * 1e3:,.0f} | "
                   f"{r['hand_image']:,.1f} | {r['chosen_image']:,.1f} | {r['other']:.1f} | "
                   f"{r['published']:,.1f} | {target} | {r['bound']} | {r['waste'][0]:.1%}, {r['waste'][1]:.1%} | "
                   f"{r['candidates']}, {r['searched']:.0f} s |")
    return "\n".join(out)


def per_block(r) -> str:
    """The chosen plan's modelled forward per block kind (all instances), and for a missed target what bounds it."""
    est = r["estimate"]
    head = (f"**{r['name']} {r['mesh']}**, chosen `{r['chosen_mesh']}`: {est.device_ops} device ops, "
            f"{est.seconds * 1e3:,.1f} ms per forward; tile padding {est.waste_bytes / 2**20:,.0f} of "
            f"{est.dram_bytes / 2**20:,.0f} MiB of DRAM traffic ({r['waste'][0]:.1%})." + bound(r))
    return "\n".join([head, ""] + est.block_table())


def bound(r) -> str:
    """For a row whose chosen plan misses its target: the forward time the target leaves, against what bounds it."""
    if not r["target"] or r["chosen_image"] <= r["target"]:
        return ""
    budget = r["target"] - r["other"]
    if budget <= 0:
        return (f" Target {r['target']:.1f} s per image: out of reach for any denoiser, since the published "
                f"encoders and VAE alone take {r['other']:.1f} s.")
    per_forward = budget / (r["steps"] * r["forwards"])
    totals = r["estimate"].totals
    compute = totals["matmul"] + totals["attention"]
    rest = r["chosen_s"] - compute
    text = (f" Target {r['target']:.1f} s per image leaves {per_forward * 1e3:,.0f} ms per forward after the "
            f"published {r['other']:.1f} s of encoders and VAE; ")
    if compute >= per_forward:
        return text + (f"matmuls and attention alone take {compute * 1e3:,.0f} ms at the fitted efficiencies, so "
                       "the target needs faster kernels than TT-DiT's published runs show, whatever the plan, the "
                       "CCLs or the op count.")
    return text + (f"matmuls and attention take {compute * 1e3:,.0f} ms, so collectives, data movement and "
                   f"dispatch ({rest * 1e3:,.0f} ms) would have to shrink to {(per_forward - compute) * 1e3:,.0f} ms "
                   "(overlapped with compute, or fewer ops: each costs the fitted per-op overhead).")


def main(argv=None):
    names = set(argv if argv is not None else sys.argv[1:])
    rows = []
    for row in ROWS:
        if names and row[0] not in names:
            continue
        rows.append(measure(*row))
        print({k: v for k, v in rows[-1].items() if k != "estimate"}, flush=True)
    body = table(rows)
    print(body)
    blocks = "\n\n".join(per_block(r) for r in rows)
    replace_block("seed-plans", body + "\n\n" + NOTE + "\n\nPer block, the chosen plan (modelled ms per forward, "
                  "all instances of each block kind):\n\n" + blocks, "## Seed models: TT-DiT's plan against the plan search "
                  "(modelled, not measured)\n\n`python bench/seed_plans.py`. Seconds per image = steps x forwards "
                  "per step x the modelled forward + the published non-denoising part.")


NOTE = ("Both plans are meshdit's own programs, modelled with the same cost model and run settings, so the "
        "comparison is between parallel plans, not between meshdit and TT-DiT's hand-written blocks (bench/cost_model.py "
        "compares the model with TT-DiT's published times). The search's candidates are every cfg/sp/tp/ulysses "
        "factor and axis the mesh admits and both residual layouts; those whose weights and peak activations exceed "
        "12 GB per chip are dropped.")

if __name__ == "__main__":
    main()
