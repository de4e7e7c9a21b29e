"""Stage 2, passes: from the exported ATen graph to a specialised, canonical, pattern-annotated ModelGraph.

    model_graph = run_passes(captured, static_inputs=())

Order: specialise (concrete shapes, folded constants, data-dependent values) -> in-place writes into out-of-place
values (before anything drops a node nobody reads) -> drop no-ops -> canonicalise ->
complex values into real pairs -> complex products on channel pairs into rotations (even/odd RoPE) -> linear maps
of the last dim through narrow views (RoPE's pair rotation) into matmuls ->
merge common subexpressions (shared position tables) -> fuse RMSNorm -> numbers added to a linear's output columns
into its bias (adaLN's 1 + scale) -> keep concatenated token streams apart
(push cats down to attention) -> joint attention -> split its outputs back into streams -> orient each joint
attention (its main stream is the one from the latent input) -> per-head work (norms, RoPE) moved after the
permute to heads-first [B, H, N, D] -> annotate structure (linear, MLP, adaLN, attention).
`verify` (tests use it) runs the graph in torch after every pass and checks it still matches the first one.
"""

from __future__ import annotations

import time

import torch

from ..capture import CapturedModel
from .canonicalize import canonicalize
from .complex import decompose_complex
from .bias_numbers import fold_numbers_into_bias
from .cleanup import drop_noops
from .cse import eliminate_common_subexpressions
from .heads_first import heads_first
from .mutations import functionalize_mutations
from .pair_products import pair_products_as_rotations
from .pairs import pair_maps_as_matmuls
from ..ir.graph import ModelGraph
from .patterns import annotate, fuse_joint_attention, fuse_rms_norm, orient_joint_attention
from .specialize import specialize
from .streams import sink_concats

PIPELINE = (
    ("functionalize_mutations", functionalize_mutations),
    ("drop_noops", drop_noops),
    ("canonicalize", canonicalize),
    ("decompose_complex", decompose_complex),
    ("pair_products_as_rotations", pair_products_as_rotations),
    ("pair_maps_as_matmuls", pair_maps_as_matmuls),
    ("cse", eliminate_common_subexpressions),
    ("fuse_rms_norm", fuse_rms_norm),
    ("fold_numbers_into_bias", fold_numbers_into_bias),
    ("sink_concats", sink_concats),
    ("fuse_joint_attention", fuse_joint_attention),
    ("split_joint_outputs", sink_concats),
    ("orient_joint_attention", orient_joint_attention),
    ("heads_first", heads_first),
    ("cse_streams", eliminate_common_subexpressions),
    ("annotate", annotate),
)


def run_passes(captured: CapturedModel, static_inputs=(), verify_inputs: dict | None = None) -> ModelGraph:
    """Run every pass; with `verify_inputs`, assert after each pass that the graph computes what it did before."""
    start = time.perf_counter()
    mg = specialize(captured, static_inputs)
    stats = {"specialize": {"seconds": time.perf_counter() - start, "nodes": len(mg.op_nodes())}}
    reference = None
    if verify_inputs is not None:
        reference = mg.run(**verify_inputs)
    for name, fn in PIPELINE:
        t0 = time.perf_counter()
        result = fn(mg)
        stats[name] = {"seconds": time.perf_counter() - t0, "nodes": len(mg.op_nodes()),
                       "changed": len(result) if isinstance(result, list) else result}
        if reference is not None:
            got = mg.run(**verify_inputs)
            for ref, out in zip(torch.utils._pytree.tree_leaves(reference), torch.utils._pytree.tree_leaves(got)):
                if not torch.allclose(ref, out, rtol=1e-4, atol=1e-5):
                    raise AssertionError(f"pass {name} changed the graph's value: max diff "
                                         f"{(ref - out).abs().max().item():.3g}")
    mg.gm.meta["pass_stats"] = stats
    return mg


__all__ = ["run_passes", "ModelGraph"]
