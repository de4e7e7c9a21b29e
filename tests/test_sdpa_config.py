"""SDPA program configs and CCL links, as emitted: q/k chunk sizes chosen per op from its shapes (lowering asks the
cost model's SDPA term, ir/sdpa.py says what ttnn refuses), the simulated mesh refusing what ttnn 0.81.1 refuses,
and every CCL using the links the system has."""

import types
import warnings

import pytest
import torch

import meshdit
from meshdit import model_zoo
from meshdit.cost import calibration, systems
from meshdit.cost.ops import attention_pass
from meshdit.ir import sdpa
from meshdit.lowering.attention.common import choose_chunks
from meshdit.lowering.program_ir import COLLECTIVE_OPS
from meshdit.runtime import sim


def builder(system):
    return types.SimpleNamespace(system=system, configs={})


def ring_cores(system):
    return system.grid[0] * (system.grid[1] - 1)  # the ring leaves the last core row to its K/V transfer


def old_chunk(length):
    """The rule before: the largest of 256/128/64/32 dividing the local keys, for q and k alike."""
    return next(size for size in (256, 128, 64, 32) if length % size == 0)


def ring_choice(system, heads, local, prompt, ring, head_dim):
    return choose_chunks(builder(system), "ring", heads, [local, prompt], sdpa.ring_passes(local, prompt, ring),
                         head_dim, ring_cores(system), l1_k_lengths=[local, prompt, local * ring])


def modelled(system, chunks, heads, local, prompt, ring, head_dim):
    return sum(p.times * attention_pass(system, calibration.FITTED, "HiFi2", heads, [local, prompt],
                                        list(p.k_lengths), head_dim, chunks, ring_cores(system),
                                        merged=p.merged).seconds(0.0, system)
               for p in sdpa.ring_passes(local, prompt, ring))


def test_few_heads_per_chip_get_smaller_q_chunks_that_keep_the_grid_busy():
    """Flux.1-dev on Galaxy (sp4 tp8): 3 heads x (1024 image + 512 prompt) queries per chip. A q chunk of 256 gives
    18 items for the ring's 56 cores (7 of Galaxy's 8 rows); the choice keeps more of them busy and is modelled
    faster."""
    system, heads, local, prompt = systems.GALAXY, 3, 1024, 512
    before = sdpa.Chunks(old_chunk(local), old_chunk(local))
    after = ring_choice(system, heads, local, prompt, 4, 128)
    cores = ring_cores(system)
    assert sdpa.busy_cores(heads, [local, prompt], before.q, cores) == 18
    assert after.q < before.q
    assert sdpa.busy_cores(heads, [local, prompt], after.q, cores) > 30
    assert after.k == 512  # 1024 local keys: two k chunks
    assert modelled(system, after, heads, local, prompt, 4, 128) < 0.75 * modelled(system, before, heads, local,
                                                                                     prompt, 4, 128)


def test_many_heads_keep_large_q_chunks_and_k_chunks_grow_to_512():
    """Mochi-1 on T3K (sp2 tp4): 6 heads x 22528 queries per chip is work for every core at any q chunk; the
    choice does not go below TT-DiT's 128 and takes k chunks of 512 (22528 = 44 x 512)."""
    chunks = ring_choice(systems.T3K, 6, 22528, 256, 2, 128)
    assert chunks.q >= 128 and chunks.k == 512
    assert ring_choice(systems.T3K, 6, 2560, 512, 2, 128).k == 512  # 2560 = 5 x 512


def test_keys_no_large_chunk_divides_get_a_large_chunk_with_a_masked_tail():
    """2400 local keys (75 tiles): only 32 divides them. The rule before took k chunks of 32, rescaling the running
    output after each of 75 chunks; a chunk of 128 computes 32 masked keys (1.3% more) and rescales 18 times, and
    the cost model says so (cost/ops.py attention_pass)."""
    heads, local, prompt = 19, 2048 + 32 * 11, 352
    chunks = ring_choice(systems.T3K, heads, local, prompt, 2, 64)
    assert chunks.k >= 128 and local % chunks.k
    divides = sdpa.Chunks(chunks.q, 32)
    assert modelled(systems.T3K, chunks, heads, local, prompt, 2, 64) < \
        0.9 * modelled(systems.T3K, divides, heads, local, prompt, 2, 64)


def test_the_online_softmax_rescale_makes_small_k_chunks_dearer():
    """The same FLOPs over k chunks of 64 and of 256: the smaller chunks rescale the running output four times as
    often, at the matrix engine's elementwise rate (Sq x Dt tile multiplies per k chunk)."""
    args = (systems.GALAXY, calibration.FITTED, "HiFi2", 6, [5824], [5824 * 8])
    small, large = (attention_pass(*args, 128, sdpa.Chunks(128, k), 56) for k in (64, 256))
    assert small.flops == large.flops
    assert small.compute_s > 1.1 * large.compute_s


def test_the_choice_never_takes_what_ttnn_refuses():
    """Head dim 256 and many heads: q 256 x k 512 would need more L1 than a core has, so the choice is smaller."""
    heads, local, prompt = 48, 4096, 512
    assert sdpa.refusal("ring", sdpa.Chunks(256, 512), 256, heads, [local, prompt], [local, prompt, local * 2],
                        48) is not None
    chunks = ring_choice(systems.T3K, heads, local, prompt, 2, 256)
    assert sdpa.refusal("ring", chunks, 256, heads, [local, prompt], [local, prompt, local * 2], 48) is None
    # a masked op needs chunks that divide the mask's padded lengths
    masked = choose_chunks(builder(systems.T3K), "sdpa", 8, [96], [sdpa.Pass((160,))], 64, 56, masked=True)
    assert 96 % masked.q == 0 and 160 % masked.k == 0


# "Statically allocated circular buffers ... grow to N B" as ttnn 0.81.1 reported it on the mocked T3K (bf16,
# HiFi2): (kind, q chunk, k chunk, [B, H, N, D], prompt tokens) -> N; and configs it accepted
TTNN_REFUSED = [
    (("sdpa", 512, 1024, [1, 3, 2048, 64], 0), 2061664),
    (("sdpa", 512, 512, [1, 48, 2048, 128], 0), 1881440),
    (("joint", 512, 512, [1, 3, 2048, 128], 512), 1846624),
    (("joint", 256, 1024, [1, 48, 2048, 64], 512), 1551712),
    (("ring", 512, 512, [1, 3, 2048, 128], 512), 2112960),
    (("ring", 256, 1024, [1, 48, 2048, 64], 512), 1508800),
]
TTNN_ACCEPTED = [("sdpa", 256, 1024, [1, 48, 2048, 64], 0), ("joint", 512, 512, [1, 48, 2048, 64], 512),
                 ("ring", 256, 512, [1, 3, 1024, 128], 512), ("ring", 256, 1024, [1, 3, 2048, 64], 512)]


def lengths(kind, n, prompt, ring=2):
    q = [n] + ([prompt] if kind != "sdpa" else [])
    k = [n] if kind == "sdpa" else [n, prompt] + ([n * ring] if kind == "ring" else [])
    return q, k


@pytest.mark.parametrize("case, grows_to", TTNN_REFUSED)
def test_circular_buffer_model_matches_ttnn(case, grows_to):
    kind, q, k, (b, h, n, d), prompt = case
    q_lengths, k_lengths = lengths(kind, n, prompt)
    cores = 48 if kind == "ring" else 56
    assert sdpa.circular_buffer_bytes(kind, sdpa.Chunks(q, k), d, b * h, q_lengths, k_lengths, cores) == grows_to
    assert "beyond max L1 size" in sdpa.refusal(kind, sdpa.Chunks(q, k), d, b * h, q_lengths, k_lengths, cores)


@pytest.mark.parametrize("case", TTNN_ACCEPTED)
def test_what_ttnn_accepted_is_not_refused(case):
    kind, q, k, (b, h, n, d), prompt = case
    q_lengths, k_lengths = lengths(kind, n, prompt)
    assert sdpa.refusal(kind, sdpa.Chunks(q, k), d, b * h, q_lengths, k_lengths, 48 if kind == "ring" else 56) is None


def sim_sdpa(q_chunk, k_chunk, n=256, d=64, heads=2):
    mesh = sim.open_mesh_device(sim.MeshShape(1, 1))
    t = sim.Tensor(torch.randn(1, heads, n, d).numpy(), data_type=sim.bfloat16, device=mesh, layout=sim.TILE_LAYOUT)
    config = sim.SDPAProgramConfig(compute_with_storage_grid_size=mesh.compute_with_storage_grid_size(),
                                   q_chunk_size=q_chunk, k_chunk_size=k_chunk, exp_approx_mode=False)
    return sim.transformer.scaled_dot_product_attention(t, t, t, is_causal=False, program_config=config)


def test_the_simulated_sdpa_refuses_what_ttnn_refuses():
    sim_sdpa(96, 192)  # ttnn takes any whole-tile chunk, power of two or not, dividing the sequence or not
    sim_sdpa(128, 512, n=320)
    with pytest.raises(RuntimeError, match="q_chunk_size must be a positive multiple of TILE_SIZE"):
        sim_sdpa(48, 64)
    with pytest.raises(RuntimeError, match="k_chunk_size must be a positive multiple"):
        sim_sdpa(64, 80)
    with pytest.raises(RuntimeError, match="beyond max L1 size"):
        sim_sdpa(512, 1024, n=2048, d=128)


def lowered(mesh, inputs_batch=1):
    name = "flux-tiny-tt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return meshdit.lower(model_zoo.build(name), mesh, model_zoo.example_inputs(name, batch=inputs_batch),
                             dtype="bf16", check=False)


@pytest.mark.parametrize("mesh, links", [("4x8 sp4@0 tp8@1", 4), ("2x4 sp2@0 tp4@1", 2)])
def test_every_ccl_uses_the_links_the_system_has(mesh, links):
    program = lowered(mesh)
    ccls = [op for op in program.ir.ops if op.fn in COLLECTIVE_OPS]
    assert ccls and all(op.kwargs.get("num_links") == links for op in ccls)
    assert systems.system_for(program.ir.mesh_shape).ccl_links == links
    # the cost model reads the emitted value: asking for one link is slower
    one = systems.replace(systems.system_for(program.ir.mesh_shape), links=1)
    assert program.estimate().totals["collectives"] < program.estimate(one).totals["collectives"]
