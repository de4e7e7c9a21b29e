"""Block-structured programs: each distinct repeated block is one function every layer calls with its own weights."""

import functools
import re
import warnings

import pytest
import torch
from diffusers import SD3Transformer2DModel

import meshdit
from meshdit import model_zoo
from meshdit.lowering import emit_source
from meshdit.runtime import Program


@functools.lru_cache(maxsize=None)
def sd3_four_layers(mesh: str):
    """SD3-shaped, 4 joint blocks: the last is context_pre_only (its prompt stream ends), so 2 block kinds."""
    model = model_zoo.randomize_(SD3Transformer2DModel(**dict(model_zoo.entry("sd3-tiny").config, num_layers=4)).eval())
    inputs = model_zoo.example_inputs("sd3-tiny", batch=meshdit.MeshConfig.parse(mesh).cfg.factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return meshdit.lower(model, mesh, inputs)


@pytest.mark.parametrize("mesh", ["1x1", "2x4 cfg2@1 sp2@0 tp2@1"])
def test_each_block_kind_is_one_function(mesh, pcc_log):
    program = sd3_four_layers(mesh)
    kinds = {name: kind.instances for name, kind in program.ir.blocks.items()}
    assert kinds == {"joint_transformer_block": [f"transformer_blocks.{i}" for i in range(3)],
                     "joint_transformer_block_2": ["transformer_blocks.3"]}
    source = program.source
    for name in kinds:
        assert len(re.findall(rf"^def {name}\(", source, re.M)) == 1
    calls = re.findall(r"= (joint_transformer_block(?:_2)?)\(device, rt\.block_weights\(w, '(transformer_blocks\.\d)\.'\)",
                       source)
    assert calls == [("joint_transformer_block", "transformer_blocks.0"), ("joint_transformer_block", "transformer_blocks.1"),
                     ("joint_transformer_block", "transformer_blocks.2"), ("joint_transformer_block_2", "transformer_blocks.3")]
    # the body reads its instance's weights by their names inside the block
    body = source.split("def joint_transformer_block(", 1)[1].split("\ndef ", 1)[0]
    assert "w['attn.to_q.weight:transpose" in body and "transformer_blocks." not in body.split('"""')[2]
    result = program.pcc_report()[0]
    pcc_log("sd3 4 layers", f"{mesh} block functions", result)
    assert result.pcc >= 0.9999


@pytest.mark.parametrize("mesh", ["1x1", "2x4 cfg2@1 sp2@0 tp2@1"])
def test_block_functions_compute_what_the_flat_program_does(mesh):
    """The same program IR printed flat and with block functions gives the same numbers, bit for bit."""
    program = sd3_four_layers(mesh)
    flat = Program(program.ir, emit_source(program.ir, blocks=False), program.graph)
    inputs, _ = program.golden
    structured = program.run_flat(inputs)
    assert "def joint_transformer_block(" not in flat.source
    for a, b in zip(structured, flat.run_flat(inputs)):
        assert torch.equal(a, b)


def test_a_value_shared_by_every_block_is_hoisted_out_of_the_first():
    """Common-subexpression elimination computes silu(temb) once, in the first block, for all of them; it is moved
    in front of the first block, so the first block is the same kind as the others."""
    program = sd3_four_layers("1x1")
    first = program.ir.calls[0]
    before = program.ir.ops[first.start - 1]
    assert before.fn == "ttnn.silu" and before.module == "transformer_blocks"
    assert program.ir.calls[0].kind == program.ir.calls[1].kind


def test_gathers_inside_a_block_share_buffers_of_their_own():
    """A block's gathers write buffers named for the block (every instance reuses them); the program around the
    blocks pools its own."""
    program = sd3_four_layers("2x4 cfg2@1 sp2@0 tp2@1")
    kind = program.ir.blocks["joint_transformer_block"]
    buffers = {op.kwargs["persistent_output_tensor"].text for op in kind.ops
               if op.fn == "ttnn.experimental.all_gather_async" and "persistent_output_tensor" in op.kwargs}
    assert buffers and all(b.startswith("JOINT_TRANSFORMER_BLOCK_AG_OUTPUT_") for b in buffers)
    assert buffers <= set(program.ir.buffers)
