"""meshdit.compile_transformer as a drop-in transformer of diffusers pipelines (SD3, Flux, Mochi, and Motif's written
in the same style): tiny random-weight pipelines built from configs (model_zoo.pipelines), run twice with the same
seed, once in torch and once with the lowered transformer; the final latents and the decoded image must agree."""

import numpy as np
import pytest
import torch

import meshdit
from meshdit.errors import ConfigError
from meshdit.model_zoo import pipelines
from meshdit.runtime.pcc import pcc


def _run(pipe, family, steps=2):
    """The pipeline's decoded output and its final latents (read in the step-end callback)."""
    final = {}

    def keep_latents(_pipe, _step, _t, tensors):
        final["latents"] = tensors["latents"].clone()
        return tensors

    out = pipe(**pipelines.call_arguments(family, steps), callback_on_step_end=keep_latents,
               callback_on_step_end_tensor_inputs=["latents"])
    return torch.as_tensor(np.asarray(out.images if hasattr(out, "images") else out.frames)), final["latents"]


@pytest.mark.parametrize("family,mesh,options", [
    ("sd3", "1x1", {}),
    ("sd3", "2x4 cfg2@1 sp2@0 tp2@1", {}),  # the pipeline's [uncond, cond] batch split over the cfg submeshes
    ("sd3", "2x4 cfg2@1 sp2@0 tp2@1", {"dtype": "bf16"}),
    ("flux", "2x4 sp2@0 tp4@1", {"static_inputs": ("img_ids", "txt_ids")}),
    ("mochi", "2x4 sp2@0 tp4@1", {}),
    # Motif's pipeline (model_zoo/motif_pipeline.py) swaps the negative prompt for zeros mid-run: same program
    ("motif", "2x4 cfg2@1 sp2@0 tp2@1", {}),
])
def test_pipeline_with_lowered_transformer_matches_torch(tmp_path, family, mesh, options):
    pipe = pipelines.tiny_pipeline(family, str(tmp_path))
    image, latents = _run(pipe, family, steps=3)
    pipe.transformer = meshdit.compile_transformer(pipe.transformer, mesh, **options)
    image_mesh, latents_mesh = _run(pipe, family, steps=3)
    compiled = pipe.transformer
    # one program for the whole run: lowered on the first step, reused (and traced) on the other two
    assert compiled.calls == 3 and sum(len(p) for p in compiled.programs.values()) == 1
    program = next(iter(compiled.programs.values()))[0]
    parsed = meshdit.MeshConfig.parse(mesh)
    assert program._runner.trace and program.ir.cfg_factor == parsed.cfg.factor
    assert tuple(program.ir.mesh_shape) == tuple(parsed.shape)
    figures = f"{family} on {mesh} {options}: latents PCC {pcc(latents, latents_mesh):.6f}, image PCC " \
              f"{pcc(image, image_mesh):.6f}"
    print(figures)
    assert latents_mesh.shape == latents.shape and image_mesh.shape == image.shape
    assert pcc(latents, latents_mesh) >= 0.99 and pcc(image, image_mesh) >= 0.99, figures


def test_compiled_transformer_is_a_drop_in_module():
    from meshdit import model_zoo

    model, inputs = model_zoo.build("sd3-tiny"), model_zoo.example_inputs("sd3-tiny")
    compiled = meshdit.compile_transformer(model, "1x1")
    # what pipelines read of their transformer comes from the module
    assert compiled.config is model.config and compiled.dtype == model.dtype and compiled.device == model.device
    assert compiled.config.in_channels == 4
    with torch.no_grad():
        expected = model(**inputs, return_dict=False)[0]
    out = compiled(**inputs)  # diffusers' default: return_dict=True, the module's output class
    assert type(out).__name__ == "Transformer2DModelOutput" and pcc(expected, out.sample) >= 0.9999
    plain = compiled(**inputs, return_dict=False)
    assert isinstance(plain, tuple) and torch.equal(plain[0], out.sample)
    positional = compiled(inputs["hidden_states"], inputs["encoder_hidden_states"], inputs["pooled_projections"],
                          inputs["timestep"], return_dict=False)
    assert torch.equal(positional[0], plain[0])
    assert sum(len(p) for p in compiled.programs.values()) == 1  # same signature: one program
    # a new batch (another signature) lowers a second program; the first is kept for calls of its own signature
    doubled = {k: torch.cat([v, v]) for k, v in inputs.items()}
    assert pcc(torch.cat([expected, expected]), compiled(**doubled, return_dict=False)[0]) >= 0.9999
    assert sum(len(p) for p in compiled.programs.values()) == 2
    compiled.close()


def test_static_input_value_lowers_its_own_program():
    from meshdit import model_zoo

    model, inputs = model_zoo.build("flux-tiny"), model_zoo.example_inputs("flux-tiny")
    compiled = meshdit.compile_transformer(model, "1x1", static_inputs=("img_ids", "txt_ids"), trace=False)
    compiled(**inputs, return_dict=False)
    shifted = dict(inputs, img_ids=inputs["img_ids"] + 1.0)  # same shapes, other positions
    with torch.no_grad():
        expected = model(**shifted, return_dict=False)[0]
    assert pcc(expected, compiled(**shifted, return_dict=False)[0]) >= 0.9999
    (programs,) = compiled.programs.values()
    assert len(programs) == 2


def test_cfg_on_mesh_with_a_static_prompt_mask_says_why(tmp_path):
    """Mochi's prompt mask is read by data-dependent ops, so it is baked into the program; the pipeline's negative
    and positive prompts have different masks, which one program on two cfg submeshes cannot hold."""
    pipe = pipelines.tiny_pipeline("mochi", str(tmp_path))
    pipe.transformer = meshdit.compile_transformer(pipe.transformer, "2x4 cfg2@1 sp2@0 tp2@1")
    with pytest.raises(ConfigError, match="encoder_attention_mask.*differs between the cfg branches"):
        pipe(**pipelines.call_arguments("mochi", steps=2))


def test_png_example_writes_both_images(tmp_path):
    import importlib.util
    from pathlib import Path

    from PIL import Image

    out = tmp_path / "sd3.png"
    script = Path(__file__).resolve().parents[1] / "examples" / "pipeline_png.py"
    spec = importlib.util.spec_from_file_location("pipeline_png", script)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    figure = example.main(["--out", str(out), "--steps", "2", "--scale", "2"])
    assert figure >= 0.99 and Image.open(out).size == (2 * 64 + 8, 64)
