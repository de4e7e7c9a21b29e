"""Plan search: lower(model, "2x4", inputs) lowers every parallel config the mesh admits and keeps the fastest
(modelled) that fits a chip's DRAM."""

import pytest

import meshdit
from meshdit import model_zoo, search
from meshdit.errors import ConfigError
from meshdit.sharding import MeshConfig


def _names(found):
    return {f"{mesh} {layout}" for mesh, layout in found}


@pytest.mark.parametrize("shape", [(2, 4), (4, 8)])
def test_candidates_include_the_seed_plans(shape):
    found = search.candidates(shape, batch=2)
    names = _names(found)
    for family in ("sd3", "flux", "mochi"):
        seed = model_zoo.seed_mesh(f"{family}-tiny", f"{shape[0]}x{shape[1]}")
        assert f"{seed} replicated" in names and f"{seed} sharded" in names
    for mesh, layout in found:
        assert MeshConfig.parse(str(mesh)) == mesh  # every candidate is a valid config, written as parse reads it
        assert not (mesh.sp.factor > 1 and mesh.tp.factor > 1 and mesh.sp.axis == mesh.tp.axis)
        assert layout == "replicated" or mesh.tp.factor > 1
    assert len(names) == len(found)
    assert any(m.ulysses > 1 and m.hybrid for m, _ in found) and any(m.ulysses > 1 and not m.hybrid for m, _ in found)
    # cfg splits the batch: none with batch 1, and a residual given fixes the layout
    assert all(m.cfg.factor == 1 for m, _ in search.candidates(shape, batch=1))
    assert {layout for _, layout in search.candidates(shape, batch=2, residual="sharded")} == {"sharded"}


def test_search_picks_a_plan_no_slower_than_the_seed_and_it_is_exact():
    model, inputs = model_zoo.build("sd3-tiny"), model_zoo.example_inputs("sd3-tiny", batch=2)
    program = meshdit.lower(model, "2x4", inputs)
    seed = meshdit.lower(model, model_zoo.seed_mesh("sd3-tiny", "2x4"), inputs, check="golden")
    chosen, hand = program.estimate().seconds, seed.estimate().seconds
    print(f"search chose {program.mesh} residual {program.residual}: {chosen * 1e3:.2f} ms modelled; "
          f"seed plan {seed.mesh}: {hand * 1e3:.2f} ms")
    assert chosen <= hand
    plan = program.plan()
    assert "plan search (modelled, not measured)" in plan and f"chosen: {program.mesh}" in plan
    assert f"{seed.mesh} residual replicated:" in plan or "more, the slowest" in plan
    results = program.pcc_report()  # lower() checked it too (check=True raises below threshold)
    print(*results, sep="\n")
    assert all(r.ok for r in results)


def test_choose_takes_the_fastest_that_fits_and_says_why_nothing_does():
    mesh = MeshConfig.parse("2x4 sp2@0 tp4@1")
    fast_big = search.Candidate(mesh, "replicated", 0.1, weight_bytes=10 * 2**30, peak_bytes=2 * 2**30,
                                dram_bytes=12e9)
    slow_small = search.Candidate(mesh, "sharded", 0.2, weight_bytes=2**30, peak_bytes=2**30, dram_bytes=12e9)
    refused = search.Candidate(MeshConfig.parse("2x4 sp4@1 tp2@0"), "replicated", refused="ulysses2: heads")
    assert search.choose([fast_big, slow_small, refused]) is slow_small
    with pytest.raises(ConfigError, match="no parallel config fits a chip's DRAM; the smallest is 2x4 sp2@0 tp4@1"):
        search.choose([fast_big, refused])
    with pytest.raises(ConfigError, match="every parallel config was refused"):
        search.choose([refused])
