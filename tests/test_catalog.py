"""The catalog of every transformer class diffusers exports (meshdit/model_zoo/catalog.py, swept by
bench/coverage.py): every entry builds and runs in torch on its example inputs, and a few classes that lower today
keep lowering at 1x1 with PCC >= 0.9999 (SD3, Flux and Mochi are tested elsewhere)."""

import warnings

import pytest
import torch
import torch.utils._pytree as pytree

import meshdit
from meshdit.model_zoo import catalog

# classes outside the zoo's three families that bench/coverage.py measured at PCC 1.0 on 1x1 and 2x2
LOWERS_TODAY = ["BriaTransformer2DModel", "CogView4Transformer2DModel", "DiTTransformer2DModel"]


def test_catalog_covers_every_exported_transformer_class():
    assert catalog.names() == catalog.exported_transformer_classes()


def test_entries_say_what_they_are():
    for name in catalog.names():
        e = catalog.entry(name)
        assert e.kind in {"dit", "audio", "protein", "prior", "block"}, name
        assert e.pipeline or e.notes, f"{name}: name the pipeline the inputs follow, or say why there is none"


@pytest.mark.parametrize("name", catalog.names())
def test_entry_runs_in_torch(name):
    """The golden the sweep compares against: the tiny model called in torch on its example inputs gives finite
    outputs. An entry that cannot run records why (torch_failure) and is expected to raise."""
    e = catalog.entry(name)
    model = catalog.build(name)
    assert sum(p.numel() for p in model.parameters()) <= 10_000_000, "tiny configs stay under 10M parameters"
    inputs = catalog.example_inputs(name, model=model)
    assert "return_dict" not in inputs
    if e.torch_failure:
        with pytest.raises(Exception):
            with torch.no_grad():
                model(**inputs, return_dict=False)
        return
    with torch.no_grad():
        outputs = model(**inputs, return_dict=False)
    tensors = [t for t in pytree.tree_leaves(outputs) if isinstance(t, torch.Tensor)]
    assert tensors, f"{name} returned no tensor"
    assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def test_example_inputs_are_seeded():
    name = "WanTransformer3DModel"
    a, b = catalog.example_inputs(name), catalog.example_inputs(name)
    c = catalog.example_inputs(name, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    assert not torch.equal(a["hidden_states"], c["hidden_states"])


# 2x2 sp2 tp2 cases, one per fix they exercise: Chroma concatenates its streams before RoPE (the cat must sink
# through the pair-rotation matmuls to reach attention apart); Wan's rank-3 distributed q/k norms and its
# cross-attention to a shorter prompt
SHARDED = ["ChromaTransformer2DModel", "WanTransformer3DModel"]


@pytest.mark.parametrize("name, mesh", [(n, "1x1") for n in LOWERS_TODAY] + [(n, "2x2 sp2@0 tp2@1") for n in SHARDED])
def test_lowers(name, mesh, pcc_log):
    model = catalog.build(name)
    inputs = catalog.example_inputs(name, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model, mesh, inputs, dtype="fp32", check=True)
    results = program.pcc_report()
    for result in results:
        pcc_log(name, f"{mesh} fp32 (catalog)", result)
    assert results and all(r.pcc >= 0.9999 for r in results), [str(r) for r in results]
    assert program.coverage()["host"] == {}
