"""The Program: called like the module, owns its weights, saves a standalone script, loads real checkpoints."""

import os
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import save_file

import meshdit
from conftest import lowered, tiny_inputs
from meshdit import model_zoo
from meshdit.errors import ConfigError, InputMismatchError, SpecializationError
from meshdit.runtime.pcc import pcc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lower(model, name, example_inputs=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return meshdit.lower(model, "1x1", tiny_inputs(name) if example_inputs is None else example_inputs,
                             static_inputs=model_zoo.entry(name).static_inputs, **kwargs)


def test_called_like_the_module_and_returns_the_same_structure():
    model = model_zoo.build("sd3-tiny")
    program = _lower(model, "sd3-tiny")
    out = program(**tiny_inputs("sd3-tiny"))
    expected = model(**tiny_inputs("sd3-tiny"), return_dict=False)
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == expected[0].shape
    assert pcc(expected[0], out[0]) > 0.9999


def test_program_owns_its_weights():
    model = model_zoo.build("sd3-tiny", seed=3)
    program = _lower(model, "sd3-tiny")
    before = program(**tiny_inputs("sd3-tiny"))[0]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.0)  # the module changes after lowering ...
    del model
    after = program(**tiny_inputs("sd3-tiny"))[0]
    assert torch.equal(before, after)  # ... the program does not


def test_saved_program_runs_standalone(tmp_path):
    program = lowered("flux-tiny", "bf16")
    path = program.save(tmp_path / "flux")
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, check=True)
    figure = float(result.stdout.split("PCC vs golden")[1].split()[0])
    print(f"standalone flux-tiny bf16 program: PCC {figure:.6f}")
    assert figure >= 0.999


def test_wrong_input_shape_is_refused_with_its_name():
    program = lowered("sd3-tiny")
    inputs = dict(tiny_inputs("sd3-tiny"), hidden_states=torch.randn(1, 4, 32, 32))
    with pytest.raises(InputMismatchError, match="hidden_states.*lower again"):
        program(**inputs)
    with pytest.raises(InputMismatchError, match="missing \\['timestep'\\]"):
        program(**{k: v for k, v in tiny_inputs("sd3-tiny").items() if k != "timestep"})


def test_static_input_change_is_refused():
    program = lowered("mochi-tiny")
    inputs = tiny_inputs("mochi-tiny")
    inputs["encoder_attention_mask"] = torch.ones_like(inputs["encoder_attention_mask"])
    with pytest.raises(SpecializationError, match="encoder_attention_mask"):
        program(**inputs)


def test_meta_plan_then_real_weights_from_safetensors(tmp_path, pcc_log):
    real = model_zoo.build("mochi-tiny", seed=7)
    checkpoint = tmp_path / "mochi.safetensors"
    save_file({k: v.contiguous() for k, v in real.state_dict().items()}, str(checkpoint))
    meta_model = model_zoo.build("mochi-tiny", device="meta")
    meta_inputs = model_zoo.example_inputs("mochi-tiny", device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(meta_model, "1x1", meta_inputs,
                                static_inputs={"encoder_attention_mask": tiny_inputs("mochi-tiny")[
                                    "encoder_attention_mask"]})
    with pytest.raises(RuntimeError, match="load_weights"):
        program(**tiny_inputs("mochi-tiny"))
    program.load_weights(str(checkpoint))
    expected = real(**tiny_inputs("mochi-tiny"), return_dict=False)[0]
    figure = pcc(expected, program(**tiny_inputs("mochi-tiny"))[0])
    print(f"mochi-tiny planned on meta, weights from safetensors: PCC {figure:.6f}")
    assert figure >= 0.9999


def test_zoo_loads_checkpoints_from_file_and_diffusers_folder(tmp_path):
    real = model_zoo.build("sd3-tiny", seed=5)
    save_file({k: v.contiguous() for k, v in real.state_dict().items()}, str(tmp_path / "w.safetensors"))
    real.save_pretrained(tmp_path / "folder")
    inputs = tiny_inputs("sd3-tiny")
    expected = real(**inputs, return_dict=False)[0]
    for source in (tmp_path / "w.safetensors", tmp_path / "folder"):
        loaded = model_zoo.from_checkpoint("sd3-tiny", str(source))
        assert torch.allclose(loaded(**inputs, return_dict=False)[0], expected, atol=1e-5)  # same weights
    with pytest.raises(KeyError, match="does not fit"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
        model_zoo.from_checkpoint("sd3-tiny", str(tmp_path / "bad.safetensors"))


def test_program_owns_its_weights_from_lowering_on():
    """Weights belong to the program from lower() on, not from its first call: a module changed between lowering and
    the first call (its parameters modified in place) must not reach the program."""
    model = model_zoo.build("sd3-tiny")
    program = _lower(model, "sd3-tiny")
    untouched = _lower(model_zoo.build("sd3-tiny"), "sd3-tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.0).add_(1.0)  # before the program's first call
    results = program.pcc_report()
    assert results and all(r.pcc >= 0.9999 for r in results), [str(r) for r in results]
    assert torch.equal(program(**tiny_inputs("sd3-tiny"))[0], untouched(**tiny_inputs("sd3-tiny"))[0])


def test_meta_planned_program_owns_its_weights_from_load_weights_on():
    """A meta-planned program takes its copy of the weights in load_weights: changing the state dict it was given
    afterwards does not reach it."""
    real = model_zoo.build("sd3-tiny")
    reference = real(**tiny_inputs("sd3-tiny"), return_dict=False)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model_zoo.build("sd3-tiny", device="meta"), "1x1",
                                model_zoo.example_inputs("sd3-tiny", device="meta"))
    state_dict = real.state_dict()  # the module's own tensors
    program.load_weights(state_dict)
    with torch.no_grad():
        for value in state_dict.values():
            value.mul_(0.0).add_(1.0)  # before the program's first call
    assert pcc(reference, program(**tiny_inputs("sd3-tiny"))[0]) >= 0.9999


def test_return_dict_in_example_inputs():
    """Users pass return_dict=False to diffusers modules, and may pass it to lower() and to the program. Capture always
    exports with return_dict=False: a return_dict=True at lower() changes nothing the program computes, and makes
    the program return the module's output class (by default and on return_dict=True calls)."""
    from meshdit.capture import capture

    model, inputs = model_zoo.build("sd3-tiny"), tiny_inputs("sd3-tiny")
    expected = model(**inputs, return_dict=False)
    program = _lower(model, "sd3-tiny", example_inputs={**inputs, "return_dict": False})
    assert all(r.pcc >= 0.9999 for r in program.pcc_report())
    out = program(**inputs, return_dict=False)
    assert isinstance(out, tuple) and len(out) == 1 and pcc(expected[0], out[0]) >= 0.9999
    assert capture(model, {**inputs, "return_dict": True}).example_inputs["return_dict"] is False
    asked_for_dict = _lower(model, "sd3-tiny", example_inputs={**inputs, "return_dict": True})
    assert asked_for_dict.graph.out_spec == program.graph.out_spec
    as_dict = asked_for_dict(**inputs)
    assert type(as_dict).__name__ == "Transformer2DModelOutput" and torch.equal(as_dict.sample, program(**inputs)[0])
    assert isinstance(asked_for_dict(**inputs, return_dict=False), tuple)
    with pytest.raises(ConfigError, match="lower it with return_dict=True"):
        program(**inputs, return_dict=True)  # lowered without: the output class was never looked up
    assert all(r.pcc >= 0.9999 for r in asked_for_dict.pcc_report())


class _Repeated(torch.nn.Module):
    """A forward whose bool and int arguments change the computation (as enable_temporal_attentions, num_frames)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(32, 32)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)) / 8)
            self.linear.bias.copy_(torch.randn(32, generator=torch.Generator().manual_seed(1)))

    def forward(self, x, scale_twice: bool = False, repeats: int = 1):
        for _ in range(repeats):
            x = self.linear(x)
        return x * 4.0 if scale_twice else x * 2.0


def test_non_tensor_arguments_are_specialised():
    """Bools and ints given at lower() are baked in: the same values (or the argument omitted) are accepted at call
    time, a different value is refused by name."""
    model, x = _Repeated().eval(), torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(2))
    program = meshdit.lower(model, "1x1", {"x": x, "scale_twice": True, "repeats": 2})
    assert all(r.pcc >= 0.9999 for r in program.pcc_report())
    expected = model(x, scale_twice=True, repeats=2)
    assert pcc(expected, program(x=x, scale_twice=True, repeats=2)) >= 0.9999
    assert pcc(expected, program(x=x)) >= 0.9999  # omitted: the values it was lowered with
    with pytest.raises(SpecializationError, match="'repeats'.* lowered with 2.* given 3.*lower again"):
        program(x=x, scale_twice=True, repeats=3)
    with pytest.raises(SpecializationError, match="'scale_twice'.* lowered with True.* given False.*lower again"):
        program(x=x, scale_twice=False)


class StructuredInputs(torch.nn.Module):
    """Inputs as diffusers models take them: a dict of conditioning (PixArt's added_cond_kwargs, with a None in it),
    a tuple of rotary tables, a list of tensors, and a list of shape tuples (Qwen-Image's img_shapes)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, x, added_cond_kwargs=None, rotary=None, extra=None, img_shapes=None):
        cos, sin = rotary
        y = self.proj(x) * cos + x * sin + added_cond_kwargs["resolution"][:, None, :]
        for t in extra:
            y = y + t
        return (y * img_shapes[0][1],)


def _structured_inputs(scale=2):
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(1, 8, 16, generator=g),
            "added_cond_kwargs": {"resolution": torch.randn(1, 16, generator=g), "aspect_ratio": None},
            "rotary": (torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)),
            "extra": [torch.randn(1, 8, 16, generator=g), torch.randn(1, 8, 16, generator=g)],
            "img_shapes": [(1, scale, 4)]}


def test_structured_inputs_map_back_to_their_example_values(pcc_log):
    """Dicts, tuples and lists of tensors are flattened by torch.export into one input per leaf; each is found again
    in the example (and in every call) by its key path. Their structure and non-tensor values are specialised."""
    model = StructuredInputs().eval()
    program = meshdit.lower(model, "1x1", _structured_inputs())
    assert {i.name for i in program.ir.inputs} == {"x", "added_cond_kwargs_resolution", "rotary_0", "rotary_1",
                                                     "extra_0", "extra_1"}
    result = program.pcc_report()[0]
    pcc_log("structured", "1x1 dict/tuple/list inputs", result)
    assert result.pcc >= 0.9999
    other = _structured_inputs()
    other["extra"][1] = torch.ones(1, 8, 16)  # new values, same structure: accepted
    expected = model(**other)[0]
    assert torch.allclose(program(**other)[0], expected, atol=1e-5)
    with pytest.raises(SpecializationError, match="img_shapes"):
        program(**_structured_inputs(scale=3))  # a different shape list: the program was specialised on 2
    with pytest.raises(SpecializationError, match="extra"):
        program(**{**_structured_inputs(), "extra": [torch.zeros(1, 8, 16)]})  # one tensor fewer
