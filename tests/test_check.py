"""A wrong number is loud: lower() compares the program with its torch module on the example inputs (the golden)
and raises NumericsError naming the PCC and where the program first diverges (block instance, then device op and
its graph node); check="warn" warns instead (meshdit/check.py)."""

import warnings

import numpy as np
import pytest

import meshdit
from conftest import tiny_inputs, tiny_model
from meshdit.check import _assemble
from meshdit.errors import NumericsError
from meshdit.runtime import sim
from meshdit.sharding.placement import P, R, Shard


def _broken_layer_norm(input_tensor, **_):
    return sim.silu(input_tensor)  # a simulated op that computes the wrong function


@pytest.mark.parametrize("mesh", ["1x1", "2x2 sp2@0 tp2@1"])
def test_a_wrong_program_is_refused_naming_the_first_diverging_block_and_op(mesh, monkeypatch):
    model, inputs = tiny_model("flux-tiny"), tiny_inputs("flux-tiny")
    monkeypatch.setattr(sim, "layer_norm", _broken_layer_norm)  # (gelu is fused into its linear)
    with pytest.raises(NumericsError) as raised:
        meshdit.lower(model, mesh, inputs)
    message = str(raised.value)
    print(message)
    assert "BELOW THRESHOLD" in message
    assert "first diverging block: transformer_blocks.0 (FluxTransformerBlock)" in message
    assert "first diverging op: ttnn.layer_norm lowering" in message and "transformer_blocks.0.norm1" in message

    if mesh == "1x1":
        with pytest.warns(UserWarning, match="first diverging block: transformer_blocks.0"):
            program = meshdit.lower(model, mesh, inputs, check="warn")
        assert not program.pcc_report()[0].ok and "transformer_blocks.0" in program.divergence


def test_pieces_assemble_by_placements():
    """Shard axes concatenate (innermost mesh axis first), Partial axes sum, sequence padding is cut."""
    rng = np.random.default_rng(0)
    whole = rng.standard_normal((2, 40, 6)).astype(np.float32)

    class Plan:
        seq_axes = (0,)

    class Graph:
        sharding = Plan()

    padded = np.concatenate([whole, np.zeros((2, 24, 6), np.float32)], axis=1)  # 40 tokens over 2: 32 per device
    seq = np.split(padded, 2, axis=1)
    cols = np.split(seq[0], 2, axis=2), np.split(seq[1], 2, axis=2)
    pieces = [cols[0][0], cols[0][1], cols[1][0], cols[1][1]]  # row-major over a 2x2 mesh
    assert np.array_equal(_assemble(pieces, (Shard(1), Shard(2)), (2, 2), whole.shape, Graph()), whole)
    halves = [whole * 0.25, whole * 0.75]
    pieces = [halves[0], halves[1], halves[0], halves[1]]
    assert np.allclose(_assemble(pieces, (R, P), (2, 2), whole.shape, Graph()), whole)
    # a width padded per tp shard is not comparable piecewise
    assert _assemble([np.zeros((2, 40, 4))] * 4, (R, Shard(2)), (2, 2), whole.shape, Graph()) is None
