"""Full-size models capture and lower on the meta device without allocating weights (slow: tens of seconds)."""

import functools
import resource
import time
import warnings

import pytest

import meshdit
from meshdit import model_zoo


@functools.lru_cache(maxsize=None)
def meta_model(name: str):
    return model_zoo.build(name, device="meta")


def cfg_plan(name: str, mesh):
    """The full-size model planned on meta in a cfg config (batch 2: both halves), bf16; the plan printed."""
    model = meta_model(name)  # one module for every config: they share one export
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model, mesh, model_zoo.example_inputs(name, device="meta", batch=2), dtype="bf16")
    print(f"\n{program.plan()}")
    return program


@pytest.mark.slow
@pytest.mark.parametrize("name, blocks", [("sd35-large", 38), ("flux1-dev", 19), ("flux1-schnell", 19),
                                          ("mochi1", 48)])
def test_full_size_plan_on_meta(name, blocks):
    model = model_zoo.build(name, device="meta")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model, "1x1", model_zoo.example_inputs(name, device="meta"), dtype="bf16",
                                static_inputs=model_zoo.static_inputs(name))
    seconds = time.perf_counter() - start
    plan = program.plan()
    print(f"\n{name}: meshdit.lower on meta {seconds:.1f}s\n{plan}")
    assert f"transformer_blocks x{blocks}" in plan
    assert program.coverage()["host"] == {}
    assert program.weights is None  # nothing allocated: weights come with load_weights
    params = sum(p.numel() for p in model.parameters())
    assert program.ir.weight_bytes() >= params * 2  # bf16: every parameter is planned on device
    # planning must not materialise the weights (SD3.5 Large alone is 16 GB in bf16)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < 4 * 2**20


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", ["2x4", "4x8"])
def test_sd35_large_sharded_plans(mesh_shape):
    """The seeds' SD3.5 Large configs (2x4 cfg2 sp2 tp2, 4x8 cfg2 sp4 tp4) plan on meta and print their CCLs."""
    from meshdit import MeshConfig

    mesh = MeshConfig.from_tuples(tuple(int(v) for v in mesh_shape.split("x")),
                                  model_zoo.entry("sd35-large").parallel[mesh_shape])
    program = cfg_plan("sd35-large", mesh)
    plan = program.plan()
    assert "transformer_blocks.0: 7 collectives" in plan
    # one function per distinct block: the 37 joint blocks, and the last one (its prompt stream ends there)
    assert sorted(len(kind.instances) for kind in program.ir.blocks.values()) == [1, 37]
    assert program.coverage()["device"]["ttnn.transformer.ring_joint_scaled_dot_product_attention"] == 38
    gib = program.ir.weight_bytes() / 2**30
    assert gib < 12  # bf16 weights per device fit one Wormhole chip's 12 GB DRAM with room for activations
    if mesh.tp.factor == 4:
        assert any("38 heads padded to 40" in note for note in program.graph.notes)


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", ["2x4", "4x8"])
def test_motif_image_6b_seed_configs_plan_and_fit(mesh_shape):
    """Motif-Image-6B (model_zoo/motif.py: 30 joint blocks, 5.9e9 parameters, 1024x1024) in the Motif seed's configs
    (2x4 cfg2 sp2 tp2, 4x8 cfg2 sp4 tp4), bf16 on meta: the 4096 image tokens are sharded from the patch embedding
    (the 4 register tokens ride with the 334 prompt tokens), and weights plus peak activations fit one chip."""
    from meshdit.report import peak_activation_bytes

    mesh = model_zoo.seed_mesh("motif-image-6b", mesh_shape)
    program = cfg_plan("motif-image-6b", mesh)
    plan = program.plan()
    assert "mmdit_blocks x30" in plan and program.coverage()["host"] == {}
    assert program.coverage()["device"]["ttnn.transformer.ring_joint_scaled_dot_product_attention"] == 30
    nodes = {node.name: node for node in program.graph.gm.graph.nodes}
    assert [nodes[name].meta["val"].shape[dim] for name, dim in program.graph.sharding.sp_origins] == [4096]
    weights, peak = program.ir.weight_bytes(), peak_activation_bytes(program.ir)
    print(f"motif-image-6b {mesh}: weights {weights / 2**30:.2f} GiB + peak activations {peak / 2**30:.2f} GiB "
          "per chip")
    assert weights + peak < 11.99 * 2**30  # one Wormhole chip's DRAM as ttnn's allocator reports it (12 banks)
    if mesh.tp.factor == 4:
        assert any("30 heads padded to 32" in note for note in program.graph.notes)
