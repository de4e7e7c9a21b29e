"""Sharded programs on simulated meshes equal the torch module (fp32 PCC >= 0.9999) on every seed config.

The simulated mesh moves real data for every collective and every ring step, so a wrong placement or a wrong
collective shows up as a wrong number (see test_a_broken_collective_is_caught)."""

import functools
import os
import warnings

import pytest
import torch
import hypothesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import meshdit
import meshdit.runtime.sim as sim
from conftest import tiny_model
from meshdit import MeshConfig, model_zoo
from meshdit.errors import ConfigError
from meshdit.ir import ops as mdops
from meshdit.model_zoo import _position_ids
from meshdit.sharding import AttentionStrategy
from meshdit.sharding.placement import MeshAxes, seq_local

SEED_CONFIGS = [(name, mesh, tuples) for name in ("sd3-tiny", "flux-tiny", "mochi-tiny")
                for mesh, tuples in model_zoo.entry(name).parallel.items()]
TINY_NAMES = ["sd3-tiny", "flux-tiny", "mochi-tiny"]
SWEEP_EXAMPLES = int(os.environ.get("MESHDIT_SWEEP_EXAMPLES", 16))  # about 60-70 s; set it higher locally
SMALL_MESHES = ["1x2 tp2@1", "1x4 tp4@1", "2x2 sp2@0 tp2@1", "1x2 sp2@1", "1x4 sp4@1"]


@functools.lru_cache(maxsize=None)
def sharded(name: str, mesh: str):
    config = MeshConfig.parse(mesh)
    inputs = model_zoo.example_inputs(name, batch=config.cfg.factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return meshdit.lower(tiny_model(name), config, inputs, static_inputs=model_zoo.entry(name).static_inputs)


def _check(name, mesh, pcc_log):
    program = sharded(name, mesh)
    results = program.pcc_report()
    for result in results:
        pcc_log(name, f"{mesh} fp32", result)
    assert all(r.pcc >= 0.9999 for r in results), [str(r) for r in results]
    return program


@pytest.mark.parametrize("name, mesh_shape, tuples", SEED_CONFIGS,
                         ids=[f"{n}-{m}" for n, m, _ in SEED_CONFIGS])
def test_seed_configs(name, mesh_shape, tuples, pcc_log):
    mesh = str(MeshConfig.from_tuples(tuple(int(v) for v in mesh_shape.split("x")), tuples))
    program = _check(name, mesh, pcc_log)
    config = MeshConfig.parse(mesh)
    ops = program.coverage()["device"]
    if config.sp.factor > 1:  # sequence parallel attention is ring attention
        assert ops.get("ttnn.transformer.ring_joint_scaled_dot_product_attention", 0) >= 2
    if config.tp.factor > 1:  # row-parallel linears end in all-reduces on the tp axis
        assert any(op.fn == "ttnn.experimental.all_reduce_async" and op.kwargs["cluster_axis"] == config.tp.axis
                   for op in program.ir.ops)
    assert program.ir.submesh_shape[config.cfg.axis] * config.cfg.factor == config.shape[config.cfg.axis]


@pytest.mark.parametrize("mesh", SMALL_MESHES)
@pytest.mark.parametrize("name", ["sd3-tiny", "flux-tiny", "mochi-tiny"])
def test_small_meshes(name, mesh, pcc_log):
    _check(name, mesh, pcc_log)


def test_weights_are_sharded_not_replicated():
    one = sharded("sd3-tiny", "1x2 sp2@1").ir.weight_bytes()
    tp4 = sharded("sd3-tiny", "1x4 tp4@1").ir.weight_bytes()
    assert tp4 < 0.45 * one  # most weight bytes are in tp-sharded linears
    q = [w for n, w in sharded("sd3-tiny", "1x4 tp4@1").ir.weights.items()
         if n.startswith("transformer_blocks.0.attn.to_q.weight")][0]
    assert q.placements == (None, 1) and q.spec.shape == (64, 16)  # [in, out/4]


def test_plan_reports_collectives_and_memory():
    plan = sharded("sd3-tiny", "2x4 cfg2@1 sp2@0 tp2@1").plan()
    assert "submesh 2x2 per cfg branch (x2)" in plan
    assert "transformer_blocks.0: 7 collectives" in plan
    assert "ring_joint_sdpa  axis 0" in plan and "all_reduce       axis 1" in plan
    assert "memory per device" in plan and "peak activations" in plan


@pytest.mark.parametrize("mesh, inputs, message", [
    ("1x8 tp8@1", {}, "4 heads, fewer than tp 8"),
    ("1x2 cfg2@1", {}, "example inputs have batch 1"),
    ("1x4 sp2@1 tp2@1", {}, "sp and tp are both on axis 1"),
    ("2x2 sp2@1 tp2@1", {}, "factors on axis 0 \\(none\\) multiply to 1, but the axis has 2"),
])
def test_invalid_configs_raise_named_errors(mesh, inputs, message):
    example = model_zoo.example_inputs("sd3-tiny")
    for key, shape in inputs.items():
        example[key] = torch.randn(shape)
    with pytest.raises(ConfigError, match=message):
        meshdit.lower(tiny_model("sd3-tiny"), mesh, example)


def test_a_broken_collective_is_caught(monkeypatch):
    """Fault visibility: an all-reduce that forgets to sum must break the numbers, not hide."""
    program = sharded("sd3-tiny", "1x2 tp2@1")
    assert program.pcc_report()[0].pcc > 0.9999
    monkeypatch.setattr(sim, "all_reduce", lambda input_tensor, **_: input_tensor)
    program.close()
    program._module = None  # rebind the emitted program to the patched simulator
    assert program.pcc_report()[0].pcc < 0.99


def test_ring_attention_moves_every_chunk():
    """The simulated ring op equals full attention over the gathered sequence plus the joint tokens."""
    mesh = sim.open_mesh_device(sim.MeshShape(1, 4))
    q, k, v = (torch.randn(1, 2, 32, 8).bfloat16().float() for _ in range(3))  # bf16 values: the kernel's dtype
    jq, jk, jv = (torch.randn(1, 2, 5, 8).bfloat16().float() for _ in range(3))
    shard = sim.create_mesh_mapper(mesh, sim.MeshMapperConfig([sim.PlacementReplicate(), sim.PlacementShard(2)]))
    up = lambda t, mapper=None: sim.Tensor(t.numpy(), data_type=sim.bfloat16, device=mesh, mesh_mapper=mapper)  # noqa
    buf = up(torch.zeros(1, 2, 32, 8))
    out, joint_out, _ = sim.transformer.ring_joint_scaled_dot_product_attention(
        up(q, shard), up(k, shard), up(v, shard), up(jq), up(jk), up(jv), persistent_output_buffer_k=buf,
        persistent_output_buffer_v=up(torch.zeros(1, 2, 32, 8)), joint_strategy="rear", logical_n=32,
        program_config=None, dim=2, multi_device_global_semaphore=[], num_links=1, cluster_axis=1,
        mesh_device=mesh, topology=sim.Topology.Linear, ccl_core_grid_offset=sim.CoreCoord(0, 6))
    full = torch.nn.functional.scaled_dot_product_attention(torch.cat([q, jq], 2), torch.cat([k, jk], 2),
                                                            torch.cat([v, jv], 2))
    assert torch.allclose(torch.cat(out.shards, dim=2), full[:, :, :32], atol=1e-2)  # outputs rounded to bf16
    assert all(torch.allclose(j, full[:, :, 32:], atol=1e-2) for j in joint_out.shards)
    assert all(torch.equal(b, k) for b in buf.shards)  # the gathered K lands in the persistent buffer


@pytest.mark.parametrize("mesh, heads, padded", [("1x2 tp2@1", 3, 4), ("1x4 tp4@1", 6, 8),
                                                  ("2x4 cfg2@1 sp2@0 tp2@1", 3, 4)])
def test_heads_are_padded_when_tp_does_not_divide_them(mesh, heads, padded, pcc_log):
    """SD3.5 Large has 38 heads; at tp 4 they are padded to 40 with zero heads."""
    from diffusers import SD3Transformer2DModel

    config = dict(model_zoo.entry("sd3-tiny").config, num_attention_heads=heads, caption_projection_dim=16 * heads)
    model = model_zoo.randomize_(SD3Transformer2DModel(**config).eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model, mesh, model_zoo.example_inputs("sd3-tiny", batch=2))
    assert any(f"{heads} heads padded to {padded}" in note for note in program.graph.notes)
    result = program.pcc_report()[0]
    pcc_log("sd3 3 heads", f"{mesh} fp32", result)
    assert result.pcc >= 0.9999


def test_heads_are_padded_through_rotary_as_matmul(pcc_log):
    """Mochi's RoPE becomes cat(even, odd) @ M (passes/pairs.py): padding 6 heads to 8 at tp 4 must find the q/k
    projections through that matmul, or the queries keep 6 heads while the keys get 8."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model_zoo.build("mochi-tiny-tt"), "1x4 tp4@1", model_zoo.example_inputs("mochi-tiny-tt"))
    assert any("6 heads padded to 8" in note for note in program.graph.notes)
    result = program.pcc_report()[0]
    pcc_log("mochi 6 heads, rotary as matmul", "1x4 tp4@1 fp32", result)
    assert result.pcc >= 0.9999


@pytest.mark.parametrize("name, mesh", [("sd3-tiny", "1x2 sp2@1 ulysses2"), ("sd3-tiny", "1x4 sp4@1 ulysses4"),
                                        ("flux-tiny", "2x4 sp2@0 tp4@1 ulysses2"),
                                        ("mochi-tiny", "2x2 sp2@0 tp2@1 ulysses2")])
def test_ulysses(name, mesh, pcc_log):
    """Ulysses: attention by heads after an all-to-all from sequence shards, and back; no ring."""
    program = _check(name, mesh, pcc_log)
    ops = program.coverage()["device"]
    assert ops.get("ttnn.experimental.all_to_all_async_generic", 0) >= 8  # q, k, v in and the output out, per attention
    assert "ttnn.transformer.ring_joint_scaled_dot_product_attention" not in ops


@pytest.mark.parametrize("mesh, message", [
    ("1x4 sp4@1 ulysses2", "ulysses2 x ring2 on one mesh axis .* ulysses on the other mesh axis, e.g. "
                           "'2x2 sp2@1 ulysses2@0'"),
    ("2x4 sp2@0 tp4@1 ulysses2", "1 heads per device, which do not divide by 2"),
    ("4x4 sp4@1 tp2@0 ulysses2@0", "tp and ulysses are both on axis 0"),
    ("2x8 sp2@0 ulysses8@1", "ulysses8: attention at .* has 4 heads per device, which do not divide by 8"),
])
def test_ulysses_limits_are_named(mesh, message):
    with pytest.raises(ConfigError, match=message):
        meshdit.lower(tiny_model("sd3-tiny"), mesh, model_zoo.example_inputs("sd3-tiny"))


HYBRID = [("sd3-tiny", "2x2 sp2@1 ulysses2@0"), ("sd3-tiny", "2x4 cfg2@1 sp2@1 ulysses2@0"),
          ("flux-tiny", "2x4 sp4@1 ulysses2@0"), ("flux-tiny", "4x8 cfg2@0 sp8@1 ulysses2@0"),
          ("mochi-tiny", "2x4 sp4@1 ulysses2@0"), ("mochi-tiny", "2x2 sp2@0 ulysses2@1")]


@pytest.mark.parametrize("name, mesh", HYBRID)
def test_hybrid_ulysses_x_ring(name, mesh, pcc_log):
    """USP on two mesh axes: q/k/v all-to-all on the ulysses axis (sequence -> heads), ring attention on the sp axis
    over the remaining heads, and back. The tokens are sharded ring x ulysses ways."""
    program = _check(name, mesh, pcc_log)
    config, ir = MeshConfig.parse(mesh), program.ir
    plan = program.graph.sharding
    counts = plan.attention_counts()
    attentions = counts[AttentionStrategy.HYBRID]
    assert attentions >= 2 and set(counts) == {AttentionStrategy.HYBRID}
    assert plan.seq_axes == (config.sp.axis, config.ulysses_axis)
    a2a = [op for op in ir.ops if op.fn == "ttnn.experimental.all_to_all_async_generic"]
    rings = [op for op in ir.ops if op.fn == RING]
    assert len(a2a) == 4 * attentions and all(op.kwargs["cluster_axis"] == config.ulysses_axis for op in a2a)
    assert len(rings) == attentions and all(op.kwargs["cluster_axis"] == config.sp.axis for op in rings)
    assert not [op for op in ir.ops if op.fn.endswith("joint_scaled_dot_product_attention") and op.fn != RING]
    for op in rings:  # the ring sees 1/ulysses of the heads and the whole padded sequence in its K/V buffer
        q, buffer = ir.tensors[op.args[0].name].shape, ir.buffers[op.kwargs["persistent_output_buffer_k"].text].shape
        assert buffer[1] == q[1] and buffer[2] == q[2] * config.sp.factor
        assert q[2] == seq_local(op.kwargs["logical_n"], config.sequence_group) * config.ulysses


def test_hybrid_nesting_is_checked(monkeypatch):
    """Fault visibility: sequence shards nest ring-outer (device (r, u) holds chunk r * ulysses + u), which ring
    attention's logical_n masking relies on. Nesting them the other way round must break the numbers, and lower()
    says so (NumericsError, naming the first attention that diverges)."""
    import meshdit.sharding.plan as plan

    def reversed_nesting(shape, seq_axes=()):
        return MeshAxes(shape, tuple(seq_axes)[::-1])

    monkeypatch.setattr(plan, "MeshAxes", reversed_nesting)
    config = MeshConfig.parse("2x4 sp4@1 ulysses2@0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(meshdit.errors.NumericsError, match="BELOW THRESHOLD.*first diverging block"):
            meshdit.lower(tiny_model("flux-tiny"), config, model_zoo.example_inputs("flux-tiny"),
                          static_inputs=model_zoo.entry("flux-tiny").static_inputs)


@pytest.mark.parametrize("name, mesh", [("sd3-tiny", "2x4 cfg2@1 sp2@0 tp2@1"), ("flux-tiny", "2x4 sp2@0 tp4@1"),
                                        ("mochi-tiny", "2x4 sp2@0 tp4@1")])
def test_sharded_residual_with_distributed_norms(name, mesh, pcc_log):
    """TT-DiT's tp layout: reduce-scatter into a hidden-sharded residual, distributed norms, gather before col."""
    config = MeshConfig.parse(mesh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(tiny_model(name), mesh, model_zoo.example_inputs(name, batch=config.cfg.factor),
                                static_inputs=model_zoo.entry(name).static_inputs, residual="sharded")
    result = program.pcc_report()[0]
    pcc_log(name, f"{mesh} residual sharded", result)
    assert result.pcc >= 0.9999
    ops = program.coverage()["device"]
    assert ops.get("ttnn.experimental.reduce_scatter_minimal_async", 0) >= 4
    assert any(op.endswith("norm_post_all_gather") for op in ops)
    for op in program.ir.ops:  # each distributed norm gathers only its statistics over the tp axis
        if op.fn.endswith("norm_pre_all_gather"):
            assert program.ir.tensors[op.outputs[0]].shape[-1] in (32, 64)
            assert len(program.ir.tensors[op.args[0].name].shape) == 4  # ttnn's halves take rank 4 only


def test_distributed_norm_halves_take_rank_4_only():
    """As real ttnn (ShapeBase index out of range in shape_base.cpp; Wan's and LTX's rank-3 q/k norms met it), the
    simulated distributed-norm halves refuse a rank-3 tensor; lowering gives them a rank-4 view."""
    mesh = sim.open_mesh_device(sim.MeshShape(1, 1))
    x = sim.Tensor(torch.randn(1, 64, 64).numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT)
    with pytest.raises(RuntimeError, match="rank-4"):
        sim.rms_norm_pre_all_gather(x, dtype=sim.float32)
    x4 = sim.Tensor(torch.randn(1, 1, 64, 64).numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT)
    assert tuple(sim.layer_norm_pre_all_gather(x4, dtype=sim.float32).shape) == (1, 1, 64, 64)


def test_sequence_is_not_partitioned_along_the_tile_width():
    """Real ttnn slices TILE tensors along the last dim only at 32-column boundaries; the sp partition avoids it."""
    program = sharded("sd3-tiny", "1x4 sp4@1")
    for name, dim in program.graph.sharding.sp_origins:
        node = next(n for n in program.graph.gm.graph.nodes if n.name == name)
        assert dim != len(node.meta["val"].shape) - 1, (name, dim)


# --- sequence padding: token counts that do not split into whole tiles per device ------------------------------------
RING = "ttnn.transformer.ring_joint_scaled_dot_product_attention"


def _randn(*shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


# Example inputs whose image/video token count does not divide by sp: SD3 12x12 latents (36 tokens) or 20x20 (100),
# Flux 36 or 100 image tokens (square position-id grids), Mochi 3 frames of 6x6 (27 tokens) or 2 of 10x10 (50).
ODD_TOKENS = {
    ("sd3-tiny", 36): lambda i: {**i, "hidden_states": _randn(i["hidden_states"].shape[0], 4, 12, 12)},
    ("sd3-tiny", 100): lambda i: {**i, "hidden_states": _randn(i["hidden_states"].shape[0], 4, 20, 20)},
    ("flux-tiny", 36): lambda i: {**i, "hidden_states": _randn(i["hidden_states"].shape[0], 36, 16),
                                  "img_ids": _position_ids(36, False)},
    ("flux-tiny", 100): lambda i: {**i, "hidden_states": _randn(i["hidden_states"].shape[0], 100, 16),
                                   "img_ids": _position_ids(100, False)},
    ("mochi-tiny", 27): lambda i: {**i, "hidden_states": _randn(i["hidden_states"].shape[0], 4, 3, 6, 6)},
    ("mochi-tiny", 50): lambda i: {**i, "hidden_states": _randn(i["hidden_states"].shape[0], 4, 2, 10, 10)},
}
ODD_CASES = [(name, tokens, mesh) for (name, tokens) in ODD_TOKENS
             for mesh in (["1x2 sp2@1", "1x4 sp4@1"] if tokens < 50 else ["1x2 sp2@1 ulysses2", "1x4 sp4@1 ulysses4"])]
ODD_CASES += [("sd3-tiny", 36, "2x4 cfg2@1 sp2@0 tp2@1"), ("flux-tiny", 36, "2x4 sp2@0 tp4@1"),
              ("mochi-tiny", 27, "2x4 sp2@0 tp4@1"), ("sd3-tiny", 100, "2x2 sp2@0 tp2@1 ulysses2"),
              ("sd3-tiny", 100, "2x2 sp2@1 ulysses2@0"), ("flux-tiny", 100, "2x4 sp4@1 ulysses2@0"),
              ("mochi-tiny", 50, "2x2 sp2@0 ulysses2@1"), ("sd3-tiny", 36, "2x4 cfg2@1 sp2@1 ulysses2@0")]


@functools.lru_cache(maxsize=None)
def padded(name: str, tokens: int, mesh: str):
    config = MeshConfig.parse(mesh)
    inputs = ODD_TOKENS[(name, tokens)](model_zoo.example_inputs(name, batch=config.cfg.factor))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return meshdit.lower(tiny_model(name), config, inputs, static_inputs=model_zoo.entry(name).static_inputs)


# --- randomized sweep: valid configs drawn over models, token counts, meshes and parallel factors ---------------------
HEADS = {"sd3-tiny": 4, "flux-tiny": 8, "mochi-tiny": 4}  # attention heads of the tiny models
TOKENS = {"sd3-tiny": (64, 36, 100), "flux-tiny": (64, 36, 100), "mochi-tiny": (32, 27, 50)}  # first: zoo default
MESH_SHAPES = [(1, 2), (2, 1), (1, 4), (4, 1), (2, 2), (1, 8), (2, 4), (4, 2)]


@st.composite
def sweep_cases(draw):
    """(model, image/video tokens, mesh config, residual): a valid config on a mesh of up to 8 devices.

    MeshConfig's rules: the factors on each mesh axis multiply to its size; cfg splits one axis; sp takes what is
    left of one axis, and the other axis's remainder goes to tp or, as the hybrid, to ulysses (whose tp is 1);
    plain ulysses equals sp on the sp axis. The model's limits: tp at most its heads (heads that tp does not divide
    are padded), and ulysses divides the heads each device holds."""
    name = draw(st.sampled_from(TINY_NAMES))
    tokens = draw(st.sampled_from(TOKENS[name]))
    rows, cols = draw(st.sampled_from(MESH_SHAPES))
    sizes = [rows, cols]
    sp_axis = draw(st.sampled_from([0, 1]))
    other = 1 - sp_axis
    cfg = draw(st.sampled_from([1, 2]))
    cfg_axis = draw(st.sampled_from([a for a in (0, 1) if sizes[a] % 2 == 0])) if cfg > 1 else None
    if cfg_axis is not None:
        sizes[cfg_axis] //= cfg
    sp, rest = sizes[sp_axis], sizes[other]
    role = draw(st.sampled_from(["tp", "hybrid"])) if rest > 1 and sp > 1 else "tp"
    tp = rest if role == "tp" else 1
    ulysses = rest if role == "hybrid" else (sp if sp > 1 and draw(st.booleans()) else 1)
    residual = draw(st.sampled_from(["replicated", "sharded"])) if tp > 1 else "replicated"
    hypothesis.assume(tp <= HEADS[name] and -(-HEADS[name] // tp) % ulysses == 0)  # the model's head limits
    parts = [f"{rows}x{cols}"]
    if cfg > 1:
        parts.append(f"cfg{cfg}@{cfg_axis}")
    if sp > 1:
        parts.append(f"sp{sp}@{sp_axis}")
    if tp > 1:
        parts.append(f"tp{tp}@{other}")
    if role == "hybrid":
        parts.append(f"ulysses{rest}@{other}")
    elif ulysses > 1:
        parts.append(f"ulysses{ulysses}")
    return name, tokens, " ".join(parts), residual


@functools.lru_cache(maxsize=None)
def swept(name: str, tokens: int, mesh: str, residual: str):
    config = MeshConfig.parse(mesh)
    inputs = model_zoo.example_inputs(name, batch=config.cfg.factor)
    if (name, tokens) in ODD_TOKENS:
        inputs = ODD_TOKENS[(name, tokens)](inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return meshdit.lower(tiny_model(name), config, inputs, static_inputs=model_zoo.entry(name).static_inputs,
                             residual=residual)


# Not derandomized: every run explores new configs (locally, a failing one is stored in .hypothesis/ and replayed first
# next time; CI starts from a clean clone and prints the failing config). No shrinking: each example lowers and runs a program, so shrinking would multiply a failing run's time; the
# failing config is reported as drawn. 16 examples (about 4 s each) keep the test under about 90 s on 2 cores.
@pytest.mark.slow
@settings(max_examples=SWEEP_EXAMPLES, deadline=None, derandomize=False,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=sweep_cases())
def test_randomized_valid_configs(case):
    name, tokens, mesh, residual = case
    results = swept(name, tokens, mesh, residual).pcc_report()
    assert results and all(r.pcc >= 0.9999 for r in results), (case, [str(r) for r in results])


def test_sequence_shard_length():
    """ceil(N / sp) rounded up to whole 32-row tiles, also when sp divides N (64 over 4 would be 16 rows)."""
    assert [seq_local(n, f) for n, f in [(64, 2), (64, 4), (36, 2), (36, 8), (100, 4), (4096, 4), (4100, 2)]] == \
        [32, 32, 32, 32, 32, 1024, 2080]


@pytest.mark.parametrize("name, tokens, mesh", ODD_CASES, ids=[f"{n}-{t}-{m}" for n, t, m in ODD_CASES])
def test_token_count_not_dividing_sp_is_padded_and_masked(name, tokens, mesh, pcc_log):
    program = padded(name, tokens, mesh)
    config = MeshConfig.parse(mesh)
    results = program.pcc_report()
    for result in results:
        pcc_log(name, f"{mesh} N={tokens} fp32", result)
    assert all(r.pcc >= 0.9999 for r in results), [str(r) for r in results]
    padded_len = seq_local(tokens, config.sequence_group) * config.sequence_group
    assert any(f"{tokens} image/video tokens padded to {padded_len}" in note for note in program.graph.notes)
    ir, axis = program.ir, config.sp.axis  # the hybrid's outer sequence axis: its gathers give the whole sequence
    rings = [op for op in ir.ops if op.fn == RING]
    if config.ulysses > 1 and not config.hybrid:  # attention sees the logical tokens: q/k/v sliced after all-to-all
        ulysses = {op.node for op in ir.ops if op.fn == "ttnn.experimental.all_to_all_async_generic"}
        sdpa = [op for op in ir.ops if op.node in ulysses and "scaled_dot_product_attention" in op.fn]
        assert sdpa and not rings
        assert all(ir.tensors[a.name].shape[2] == tokens for op in sdpa for a in op.args[:3])
    else:  # ring attention masks keys beyond the logical length; its K/V buffers hold the padded sequence
        assert rings and all(op.kwargs["logical_n"] == tokens for op in rings)
        assert all(ir.buffers[op.kwargs["persistent_output_buffer_k"].text].shape[2] == padded_len for op in rings)
    gathers = [i for i, op in enumerate(ir.ops) if op.fn == "ttnn.experimental.all_gather_async"
               and op.kwargs["cluster_axis"] == axis and ir.tensors[op.outputs[0]].shape[op.kwargs["dim"]] == padded_len]
    assert gathers and all(ir.ops[i + 1].fn == "ttnn.slice" and
                           ir.tensors[ir.ops[i + 1].outputs[0]].shape[ir.ops[i].kwargs["dim"]] == tokens
                           for i in gathers)


@pytest.mark.parametrize("name, mesh_shape, tuples", SEED_CONFIGS, ids=[f"{n}-{m}" for n, m, _ in SEED_CONFIGS])
def test_per_device_token_shards_are_whole_tiles(name, mesh_shape, tuples):
    """On device a sequence shard is whole 32-row tiles (ttnn's mesh_partition needs tile-aligned row offsets),
    for every seed config: SD3 4x8 cfg2 sp4 tp4 has 64 tokens, 16 per device before padding."""
    config = MeshConfig.from_tuples(tuple(int(v) for v in mesh_shape.split("x")), tuples)
    if config.sp.factor == 1:
        pytest.skip("no sequence parallelism")
    ir, axis = sharded(name, str(config)).ir, config.sp.axis
    tokens = []
    for op in ir.ops:
        if op.fn == "ttnn.mesh_partition" and op.kwargs["cluster_axis"] == axis:
            tokens.append(ir.tensors[op.outputs[0]].shape[op.args[1]])
        if op.fn == RING:
            tokens += [ir.tensors[a.name].shape[2] for a in op.args[:3]]
    tokens += [i.spec.shape[i.placements[axis]] for i in ir.inputs if i.placements[axis] is not None]
    tokens += [w.spec.shape[w.placements[axis]] for w in ir.weights.values() if w.placements[axis] is not None]
    assert tokens and all(t % 32 == 0 for t in tokens), tokens


@pytest.mark.parametrize("mesh", ["1x2 sp2@1", "1x4 sp4@1"])
def test_unmasked_padding_breaks_attention(mesh, monkeypatch, pcc_log):
    """The mask matters: a ring attention that ignores logical_n lets the padded keys into every softmax."""
    program = padded("sd3-tiny", 36, mesh)
    assert program.pcc_report()[0].pcc >= 0.9999
    ring = sim.transformer.ring_joint_scaled_dot_product_attention

    def unmasked(*args, logical_n, persistent_output_buffer_k, **kwargs):
        return ring(*args, logical_n=persistent_output_buffer_k.shape[2],
                    persistent_output_buffer_k=persistent_output_buffer_k, **kwargs)

    monkeypatch.setattr(sim.transformer, "ring_joint_scaled_dot_product_attention", unmasked)
    result = program.pcc_report()[0]
    pcc_log("sd3-tiny", f"{mesh} N=36 mask off", result)
    assert result.pcc < 0.99


def test_ring_attention_masks_keys_beyond_logical_n():
    """The simulated ring op with padded K/V equals full attention over the logical keys only; a device whose shard
    is all padding (36 tokens over 4 devices of 32) still gets its queries right."""
    mesh = sim.open_mesh_device(sim.MeshShape(1, 4))
    n, padded_len = 36, 128
    q, k, v = (torch.randn(1, 2, padded_len, 8).bfloat16().float() for _ in range(3))
    k[:, :, n:], v[:, :, n:] = 5.0, 7.0  # garbage that would dominate if it were attended to
    jq, jk, jv = (torch.randn(1, 2, 5, 8).bfloat16().float() for _ in range(3))
    shard = sim.create_mesh_mapper(mesh, sim.MeshMapperConfig([sim.PlacementReplicate(), sim.PlacementShard(2)]))
    up = lambda t, mapper=None: sim.Tensor(t.numpy(), data_type=sim.bfloat16, device=mesh, mesh_mapper=mapper)  # noqa
    out, joint_out, _ = sim.transformer.ring_joint_scaled_dot_product_attention(
        up(q, shard), up(k, shard), up(v, shard), up(jq), up(jk), up(jv),
        persistent_output_buffer_k=up(torch.zeros(1, 2, padded_len, 8)),
        persistent_output_buffer_v=up(torch.zeros(1, 2, padded_len, 8)), joint_strategy="rear", logical_n=n,
        program_config=None, dim=2, multi_device_global_semaphore=[], num_links=1, cluster_axis=1,
        mesh_device=mesh, topology=sim.Topology.Linear, ccl_core_grid_offset=sim.CoreCoord(0, 6))
    full = torch.nn.functional.scaled_dot_product_attention(
        torch.cat([q, jq], 2), torch.cat([k[:, :, :n], jk], 2), torch.cat([v[:, :, :n], jv], 2))
    assert torch.allclose(torch.cat(out.shards, dim=2), full[:, :, :padded_len], atol=1e-2)
    assert all(torch.allclose(j, full[:, :, padded_len:], atol=1e-2) for j in joint_out.shards)


def test_ring_attention_refuses_more_queries_than_keys_per_device():
    """As real ttnn (N_local_q <= N_local_kv * kv_stripe_split), the simulated ring op refuses 64 queries per device
    against 32 keys: a cross-attention to a short prompt must not take the ring (sharding/rules/attention.py)."""
    mesh = sim.open_mesh_device(sim.MeshShape(1, 2))
    shard = sim.create_mesh_mapper(mesh, sim.MeshMapperConfig([sim.PlacementReplicate(), sim.PlacementShard(2)]))
    up = lambda t, mapper=None: sim.Tensor(t.numpy(), data_type=sim.bfloat16, device=mesh, mesh_mapper=mapper)  # noqa
    q, kv = torch.randn(1, 2, 128, 32), torch.randn(1, 2, 64, 32)
    with pytest.raises(RuntimeError, match="N_local_q <= N_local_kv"):
        sim.transformer.ring_joint_scaled_dot_product_attention(
            up(q, shard), up(kv, shard), up(kv, shard), persistent_output_buffer_k=up(torch.zeros(1, 2, 64, 32)),
            persistent_output_buffer_v=up(torch.zeros(1, 2, 64, 32)), joint_strategy="rear", logical_n=64,
            program_config=None, dim=2, multi_device_global_semaphore=[], num_links=1, cluster_axis=1,
            mesh_device=mesh, topology=sim.Topology.Linear, ccl_core_grid_offset=sim.CoreCoord(0, 6))


def test_attention_kernels_take_bfloat16_and_fp32_programs_cast_for_them(pcc_log):
    """ttnn's SDPA kernels refuse float32 operands (every fp32 program was refused at its first attention), and so
    does the simulated mesh; an fp32 program casts q/k/v to bfloat16 for the kernel and the output back."""
    mesh = sim.open_mesh_device(sim.MeshShape(1, 1))
    q = sim.Tensor(torch.randn(1, 2, 32, 32).numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT)
    with pytest.raises(RuntimeError, match="BFLOAT16"):
        sim.transformer.scaled_dot_product_attention(q, q, q, is_causal=False)
    program = sharded("sd3-tiny", "2x2 sp2@0 tp2@1")  # fp32
    result = program.pcc_report()[0]
    pcc_log("sd3-tiny", "2x2 sp2@0 tp2@1 fp32, attention in bf16", result)
    assert result.pcc >= 0.9999
    attention = [op for op in program.ir.ops if "scaled_dot_product_attention" in op.fn]
    assert attention and all(program.ir.tensors[op.args[0].name].dtype == "bfloat16" for op in attention)


def test_tile_padding_in_front_is_refused():
    """As real ttnn (pad.cpp front_padding_is_zero; Motif's prompt mask padded in front met it), the simulated pad
    refuses padding before a TILE tensor's data and takes it on a ROW_MAJOR one (what lowering emits)."""
    mesh = sim.open_mesh_device(sim.MeshShape(1, 1))
    x = sim.Tensor(torch.randn(1, 16).numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT)
    with pytest.raises(RuntimeError, match="front_padding_is_zero"):
        sim.pad(x, [[0, 0], [4, 0]], 1.0)
    rows = sim.pad(sim.to_layout(x, sim.ROW_MAJOR_LAYOUT), [[0, 0], [4, 0]], 1.0)
    assert tuple(rows.shape) == (1, 20)


def test_sequence_partition_needs_whole_tiles():
    """As real ttnn ("height begin index aligned to tiles"), the simulated mesh refuses 16-row shards."""
    mesh = sim.open_mesh_device(sim.MeshShape(1, 4))
    x = sim.Tensor(torch.randn(1, 64, 32).numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT)
    with pytest.raises(RuntimeError, match="aligned to tiles"):
        sim.mesh_partition(x, 1, cluster_axis=1)
    assert sim.mesh_partition(sim.pad(x, [[0, 0], [0, 64], [0, 0]], 0.0), 1, cluster_axis=1).shape == (1, 32, 32)


def test_column_partition_needs_whole_tiles_or_row_major():
    """Real ttnn partitions a tiled tensor's columns only into whole 32-wide tiles ("width begin index aligned to
    tiles", Flux.2 at tp2 was refused so); a row-major tensor cuts at any width, which is what lowering emits then."""
    mesh = sim.open_mesh_device(sim.MeshShape(1, 2))
    x = sim.Tensor(torch.randn(1, 32, 48).numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT)
    with pytest.raises(RuntimeError, match="width begin index aligned to tiles"):
        sim.mesh_partition(x, 2, cluster_axis=1)
    rows = sim.to_layout(x, sim.ROW_MAJOR_LAYOUT)
    assert sim.to_layout(sim.mesh_partition(rows, 2, cluster_axis=1), sim.TILE_LAYOUT).shape == (1, 32, 24)


def test_row_partition_into_part_tiles_goes_row_major(pcc_log):
    """A replicated per-head operand cut along its heads (the tiled rows of [B, N, H, D], 2 heads over tp 2) is not
    whole tiles per device: lowering cuts it row-major, as it does columns (HeliosTransformer3DModel's partial RoPE
    once its q/k projections became column-parallel)."""
    from meshdit.model_zoo import catalog
    from meshdit.lowering.program_ir import refs_in

    model = catalog.build("HeliosTransformer3DModel")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model, "2x2 sp2@0 tp2@1", catalog.example_inputs("HeliosTransformer3DModel",
                                                                                   model=model))
    made = {name: op for op in program.ir.ops for name in op.outputs}
    row_cuts = [op for op in program.ir.ops if op.fn == "ttnn.mesh_partition"
                and made[refs_in(op.args)[0]].fn == "ttnn.to_layout"
                and op.args[1] == len(program.ir.tensors[refs_in(op.args)[0]].shape) - 2]
    assert row_cuts
    result = program.pcc_report()[0]
    pcc_log("Helios partial RoPE heads cut row-major", "2x2 sp2@0 tp2@1 fp32", result)
    assert result.pcc >= 0.9999


def test_all_to_all_grows_in_dim_and_splits_out_dim():
    """ttnn's all_to_all_async_generic output is the input with in_dim x ring and out_dim / ring: ulysses gathers
    the tokens (in_dim 2) and splits the heads (out_dim 1)."""
    mesh = sim.open_mesh_device(sim.MeshShape(1, 4))
    x = torch.randn(1, 8, 128, 32)  # [batch, heads, tokens, head dim], tokens sharded 4 ways
    shard = sim.create_mesh_mapper(mesh, sim.MeshMapperConfig([sim.PlacementReplicate(), sim.PlacementShard(2)]))
    seq = sim.Tensor(x.numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT, mesh_mapper=shard)
    heads = sim.experimental.all_to_all_async_generic(seq, 2, 1, cluster_axis=1)
    assert heads.shape == (1, 2, 128, 32)
    assert all(torch.equal(h, x[:, 2 * j:2 * j + 2]) for j, h in enumerate(heads.shards))
    back = sim.experimental.all_to_all_async_generic(heads, 1, 2, cluster_axis=1)
    assert all(torch.equal(s, x[:, :, 32 * j:32 * j + 32]) for j, s in enumerate(back.shards))


def test_gather_buffers_are_shared_only_between_dead_results():
    """all_gather_async writes into persistent buffers (made once in make_configs), assigned by liveness: a gather
    reuses a buffer only once every earlier result in it, and every reshape view of that result, has been read
    for the last time."""
    from meshdit.lowering.buffers import GATHER, assign_gather_buffers
    from meshdit.lowering.program_ir import Op, ProgramIR, Ref, TensorSpec

    def program(ops, outputs):
        tensors = {name: TensorSpec(name, (1, 64), "bfloat16") for op in ops for name in op.outputs}
        return ProgramIR("m", (1, 2), "bfloat16", "bfloat16", [], {}, ops, [Ref(o) for o in outputs], tensors)

    def gather(src, out):
        return Op(GATHER, (Ref(src),), {"dim": 1}, [out], out, "")

    def use(*names, out):
        return Op("ttnn.add", tuple(Ref(n) for n in names), {}, [out], out, "")

    def view(src, out):
        return Op("ttnn.reshape", (Ref(src), [1, 64]), {}, [out], out, "")

    # a dies before b is gathered: one buffer
    ir = program([gather("x", "a"), use("a", "a", out="a2"), gather("x", "b"), use("b", "a2", out="y")], ["y"])
    assert assign_gather_buffers(ir) == 1
    # a is still read after b is gathered: two buffers
    ir = program([gather("x", "a"), gather("x", "b"), use("a", "b", out="y")], ["y"])
    assert assign_gather_buffers(ir) == 2
    # a's own last read is early, but a reshape view of it (same device buffer) is read later: two buffers
    ir = program([gather("x", "a"), view("a", "v"), gather("x", "b"), use("v", "b", out="y")], ["y"])
    assert assign_gather_buffers(ir) == 2
    assert ir.ops[0].kwargs["persistent_output_tensor"].text != ir.ops[2].kwargs["persistent_output_tensor"].text
    # a program output lives to the end
    ir = program([gather("x", "a"), gather("x", "b"), use("b", "b", out="y")], ["a", "y"])
    assert assign_gather_buffers(ir) == 2


def test_seed_config_gathers_write_persistent_buffers(pcc_log):
    program = _check("sd3-tiny", "2x4 cfg2@1 sp2@0 tp2@1", pcc_log)
    gathers = [op for op in program.ir.ops if op.fn == "ttnn.experimental.all_gather_async"]
    assert gathers and all(op.kwargs["persistent_output_tensor"].text in program.ir.buffers for op in gathers)
    assert len({op.kwargs["persistent_output_tensor"].text for op in gathers}) < len(gathers)  # shared by liveness


# --- which stream is sequence-sharded, widths tp does not divide, ops without a sharding rule -------------------------
def test_image_stream_is_sharded_even_when_the_prompt_is_longer(pcc_log):
    """A 256 x 256 Flux image has fewer image tokens (256) than T5 prompt tokens (512): the image stream is still the
    one sequence parallelism shards, because its tokens come from the latent input, not because it is longer."""
    inputs = model_zoo.example_inputs("flux-tiny")
    inputs["hidden_states"] = _randn(1, 16, 16)  # 16 image tokens (a 4 x 4 latent grid) against 32 prompt tokens
    inputs["img_ids"] = _position_ids(16, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(tiny_model("flux-tiny"), "1x2 sp2@1", inputs,
                                static_inputs=model_zoo.entry("flux-tiny").static_inputs)
    result = program.pcc_report()[0]
    pcc_log("flux-tiny", "1x2 sp2@1 16 image < 32 prompt tokens", result)
    assert result.pcc >= 0.9999
    placements = {i.name: i.placements for i in program.ir.inputs}
    assert placements["hidden_states"] == (None, 1)  # image tokens uploaded sharded on the sp axis
    assert placements["encoder_hidden_states"] == (None, None)  # prompt tokens replicated
    joint = [n for n in program.graph.op_nodes() if n.target is mdops.joint_sdpa]
    assert joint and all(n.args[0].meta["val"].shape[2] == 16 and n.args[3].meta["val"].shape[2] == 32 for n in joint)


@pytest.mark.parametrize("mesh", ["1x4 tp4@1", "2x4 sp2@0 tp4@1"])
def test_linear_widths_tp_does_not_divide_are_padded(mesh, pcc_log):
    """Mochi's SwiGLU width int(8 * d / 3): d = 64 gives 170 (prompt stream: 106), which tp 4 does not divide.
    The hidden units are zero-padded (zero rows in the up and gate projections, zero columns in the down
    projection): exact."""
    from diffusers import MochiTransformer3DModel

    config = dict(model_zoo.entry("mochi-tiny").config, num_attention_heads=4, attention_head_dim=16,
                  pooled_projection_dim=40)
    model = model_zoo.randomize_(MochiTransformer3DModel(**config).eval())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model, mesh, model_zoo.example_inputs("mochi-tiny"))
    assert any("hidden width 170 padded to" in note for note in program.graph.notes)
    assert any("hidden width 106 padded to" in note for note in program.graph.notes)
    result = program.pcc_report()[0]
    pcc_log("mochi d=64", f"{mesh} SwiGLU 170/106 padded", result)
    assert result.pcc >= 0.9999


class _AttentionThenCumsum(torch.nn.Module):
    """Self-attention over sequence-sharded tokens, then an op with no sharding rule (cumsum over the tokens)."""

    def __init__(self):
        super().__init__()
        self.qkv, self.out = torch.nn.Linear(32, 96), torch.nn.Linear(32, 32)

    def forward(self, x):
        q, k, v = self.qkv(x).reshape(1, 64, 3, 1, 32).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v).reshape(1, 64, 32)
        return self.out(torch.cumsum(y, dim=1))


def test_an_op_without_a_sharding_rule_is_gathered_and_named():
    """Never replicated silently: it runs on gathered inputs, and the plan names it; strict=True refuses it."""
    model, x = _AttentionThenCumsum().eval(), torch.randn(1, 64, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model, "1x2 sp2@1", {"x": x})
    assert "aten.cumsum.default" in program.graph.sharding.unruled
    assert "no sharding rule (inputs gathered, run whole): aten.cumsum.default x1" in program.plan()
    gathered = [op for op in program.ir.ops if op.fn == "ttnn.experimental.all_gather_async"]
    assert gathered and program.coverage()["host"] == {"aten.cumsum.default": 1}
    assert program.pcc_report()[0].pcc >= 0.9999
    with pytest.raises(meshdit.errors.UnsupportedOpError, match=r"no sharding rule for aten.cumsum.default .*strict"):
        meshdit.lower(model, "1x2 sp2@1", {"x": x}, strict=True)


def test_a_static_input_split_by_cfg_is_baked_once_for_both_branches(pcc_log):
    """Mochi's prompt mask feeds nonzero, so it is baked into the program. With cfg on the mesh both branches run
    that one program: equal masks lower and run; masks that differ between the branches are refused at lowering,
    naming the input and the way out (cfg outside the mesh)."""
    program = sharded("mochi-tiny", "1x2 cfg2@1")
    result = program.pcc_report()[0]
    pcc_log("mochi-tiny", "1x2 cfg2@1 (one mask, both branches)", result)
    assert result.pcc >= 0.9999
    inputs = model_zoo.example_inputs("mochi-tiny", batch=2)
    inputs["encoder_attention_mask"][1, :] = True  # the second branch's prompt is longer
    with pytest.raises(ConfigError, match="'encoder_attention_mask' is static .* differs between the cfg branches"):
        meshdit.lower(tiny_model("mochi-tiny"), "1x2 cfg2@1", inputs)


class _MaskedAttention(torch.nn.Module):
    """Self-attention (2 heads) over `tokens` tokens with a mask computed from an input (as Qwen-Image builds its
    prompt mask); per_head: the mask has a row per head; per_query: a row per query (a banded mask)."""

    def __init__(self, per_head=False, per_query=False, tokens=64):
        super().__init__()
        self.per_head, self.per_query, self.tokens = per_head, per_query, tokens
        self.q, self.k, self.v, self.out = (torch.nn.Linear(64, 64) for _ in range(4))

    def forward(self, x, keep):
        n = self.tokens
        q, k, v = (proj(x).reshape(1, n, 2, 32).permute(0, 2, 1, 3) for proj in (self.q, self.k, self.v))
        mask = (keep > 0)[:, None, None, :]
        if self.per_head:
            mask = mask.expand(1, 2, n, n)
        if self.per_query:
            rows = torch.arange(n, device=x.device)
            mask = mask & ((rows[:, None] - rows[None, :]).abs() < 8)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.permute(0, 2, 1, 3).reshape(1, n, 64))


@pytest.mark.parametrize("mesh,per_query,tokens", [("1x1", False, 64), ("1x2 sp2@1", False, 64),
                                                     ("1x2 tp2@1", False, 64), ("2x2 sp2@0 tp2@1", True, 40)])
def test_a_mask_computed_on_device_goes_to_the_sdpa_kernel(mesh, per_query, tokens, pcc_log):
    """A boolean mask from an input becomes ttnn's additive [B, 1, Sq, Sk] mask on device (where, repeat, padding
    to whole tiles); the ring and all-to-all kernels take no mask, so over sequence-sharded tokens each device
    attends its own queries (a mask row per query split with them; 40 tokens: 20 per device, padded to a tile) to
    the gathered keys and values."""
    model = _MaskedAttention(per_query=per_query, tokens=tokens).eval()
    inputs = {"x": torch.randn(1, tokens, 64), "keep": torch.ones(1, tokens, dtype=torch.long)}
    inputs["keep"][0, tokens - 14:] = 0
    program = meshdit.lower(model, mesh, inputs)
    assert AttentionStrategy.RING not in (program.graph.sharding.attention_counts() if program.graph.sharding
                                          else {})
    result = program.pcc_report()[0]
    pcc_log("masked attention" + (", a row per query" if per_query else ""), mesh, result)
    assert result.pcc >= 0.9999
    assert program.coverage()["host"] == {}
    assert "attn_mask=" in program.source and "ttnn.where" in program.source


@pytest.mark.parametrize("static", [False, True])
def test_a_mask_with_a_row_per_head_is_split_with_the_heads(static, pcc_log):
    """A mask with a row per head (Allegro's) is sharded over tp with the heads: each device takes its heads' rows.
    static: the mask is a constant of the program (HunyuanVideo-Framepack's), uploaded split by heads."""
    model = _MaskedAttention(per_head=True).eval()
    inputs = {"x": torch.randn(1, 64, 64), "keep": torch.ones(1, 64, dtype=torch.long)}
    inputs["keep"][0, 50:] = 0
    program = meshdit.lower(model, "1x2 tp2@1", inputs, static_inputs=("keep",) if static else ())
    result = program.pcc_report()[0]
    pcc_log("masked attention, a mask row per head" + (", constant" if static else ""), "1x2 tp2@1", result)
    assert result.pcc >= 0.9999 and program.coverage()["host"] == {}


class _CrossAttention(torch.nn.Module):
    """Image tokens (2 heads) attending to a shorter prompt, as Wan's and PixArt's cross-attention do."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.out = (torch.nn.Linear(64, 64) for _ in range(4))

    def forward(self, x, prompt):
        q = self.q(x).reshape(1, 64, 2, 32).permute(0, 2, 1, 3)
        k, v = (proj(prompt).reshape(1, 16, 2, 32).permute(0, 2, 1, 3) for proj in (self.k, self.v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(y.permute(0, 2, 1, 3).reshape(1, 64, 64))


def test_cross_attention_keeps_its_queries_sequence_sharded(pcc_log):
    """Queries sharded over sp attending to 16 prompt tokens: ttnn's ring kernel refuses more queries than keys per
    device (N_local_q <= N_local_kv), so no ring: each device attends its queries to the whole prompt, and the
    output stays sequence-sharded (no gather of the image tokens)."""
    inputs = {"x": torch.randn(1, 64, 64), "prompt": torch.randn(1, 16, 64)}
    program = meshdit.lower(_CrossAttention().eval(), "2x2 sp2@0 tp2@1", inputs)
    result = program.pcc_report()[0]
    pcc_log("cross-attention, queries sequence-sharded", "2x2 sp2@0 tp2@1", result)
    assert result.pcc >= 0.9999
    assert "ring_joint_scaled_dot_product_attention" not in program.source
    sdpa = [op for op in program.ir.ops if op.fn == "ttnn.transformer.scaled_dot_product_attention"]
    assert [program.ir.tensors[op.args[0].name].shape[2] for op in sdpa] == [32]  # each device: its 32 queries


def test_a_host_fallback_never_reads_one_devices_piece(monkeypatch):
    """A host fallback reads whole tensors: with its inputs split by tp it is refused, naming the node (here an
    attention whose lowering is made to decline)."""
    from meshdit.lowering import attention

    monkeypatch.setitem(attention.STRATEGIES, AttentionStrategy.PLAIN, lambda *args: None)
    model = _MaskedAttention().eval()
    inputs = {"x": torch.randn(1, 64, 64), "keep": torch.ones(1, 64, dtype=torch.long)}
    with pytest.raises(meshdit.errors.UnsupportedOpError, match="would run on host, but its inputs .* are sharded"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meshdit.lower(model, "1x2 tp2@1", inputs)


class _GroupedQueryAttention(torch.nn.Module):
    """Four query heads over two key/value heads (enable_gqa), as Ace-Step's attention."""

    def __init__(self):
        super().__init__()
        self.q, self.out = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)
        self.kv = torch.nn.Linear(64, 64)

    def forward(self, x):
        q = self.q(x).reshape(1, 64, 4, 16).permute(0, 2, 1, 3)
        k, v = self.kv(x).reshape(1, 64, 2, 2, 16).permute(3, 0, 2, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.out(y.permute(0, 2, 1, 3).reshape(1, 64, 64))


@pytest.mark.parametrize("mesh", ["1x1", "1x2 tp2@1", "1x2 sp2@1"])
def test_grouped_query_attention_on_device(mesh, pcc_log):
    """ttnn's SDPA maps each group of query heads to its key/value head; tp splits both head counts alike; over
    sequence-sharded tokens the attention gathers them (the ring kernels take equal head counts)."""
    program = meshdit.lower(_GroupedQueryAttention().eval(), mesh, {"x": torch.randn(1, 64, 64)})
    result = program.pcc_report()[0]
    pcc_log("grouped-query attention", mesh, result)
    assert result.pcc >= 0.9999 and program.coverage()["host"] == {}
