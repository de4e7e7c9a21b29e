"""The program IR and its source: real ttnn op names and argument names, tile padding, host fallback."""

import pytest
import torch

import meshdit
from conftest import TINY, lowered
from meshdit.errors import UnsupportedOpError
from meshdit.ir.tiles import tile_padded
from meshdit.lowering.program_ir import TensorSpec
from ttnn_signatures import SIGNATURES


@pytest.mark.parametrize("mesh", ["1x1", "2x4 sp2@0 tp4@1", "1x2 sp2@1 ulysses2"])
@pytest.mark.parametrize("name", TINY)
def test_every_call_matches_the_ttnn_signature(name, mesh):
    program = lowered(name, "bf16", "bfp8", mesh)
    _check_signatures(program)


def test_distributed_norm_calls_match_the_ttnn_signature():
    import meshdit
    from conftest import tiny_inputs, tiny_model

    program = meshdit.lower(tiny_model("mochi-tiny"), "1x2 tp2@1", tiny_inputs("mochi-tiny"), residual="sharded")
    assert any(op.fn == "ttnn.rms_norm_post_all_gather" for op in program.ir.ops)
    _check_signatures(program)


def _check_signatures(program):
    for op in program.ir.ops:
        assert op.fn in SIGNATURES, f"{op.fn} emitted but not in the checked ttnn signature table"
        positional, keywords = SIGNATURES[op.fn]
        assert len(op.args) <= len(positional), f"{op.fn}: {len(op.args)} positional args, takes {positional}"
        unknown = set(op.kwargs) - set(keywords) - set(positional)
        assert not unknown, f"{op.fn} has no keyword(s) {unknown}"


def test_tile_padding():
    assert tile_padded((1, 333, 4096)) == (1, 352, 4096)
    assert tile_padded((2, 38, 4608, 64)) == (2, 38, 4608, 64)
    assert tile_padded((7,)) == (32, 32)
    spec = TensorSpec("t", (1, 6, 16), "bfloat16")
    assert spec.padded_shape == (1, 32, 32) and spec.nbytes == 32 * 32 * 2


def test_weights_are_prepared_for_ttnn_linear():
    program = lowered("sd3-tiny")
    spec = program.ir.weights["context_embedder.weight:transpose"]
    assert spec.spec.shape == (32, 64)  # [in, out] as ttnn.linear takes it
    assert program.weights["context_embedder.weight:transpose"].shape == (32, 64)
    assert program.ir.weights["context_embedder.bias:row"].spec.shape == (1, 64)


def test_bf16_keeps_timestep_embedding_in_float32():
    program = lowered("flux-tiny", "bf16")
    trig = [op for op in program.ir.ops if op.fn in ("ttnn.sin", "ttnn.cos")]
    assert trig and all(program.ir.tensors[op.outputs[0]].dtype == "float32" for op in trig)
    assert program.ir.tensors[next(op for op in program.ir.ops if op.fn == "ttnn.linear").outputs[0]].dtype == "bfloat16"


class CumsumModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.proj(torch.cumsum(self.proj(x), dim=-1))


def test_host_fallback_is_reported_and_correct():
    model, x = CumsumModel().eval(), torch.randn(1, 4, 8)
    with pytest.warns(UserWarning, match="cumsum.*runs on host"):
        program = meshdit.lower(model, "1x1", {"x": x})
    assert program.coverage()["host"] == {"aten.cumsum.default": 1}
    assert "host fallback: aten.cumsum.default x1" in program.plan()
    assert program.pcc_report()[0].pcc > 0.9999


def test_host_fallback_off_names_node_and_line():
    with pytest.raises(UnsupportedOpError, match=r"cumsum.*test_lowering.py:\d+"):
        meshdit.lower(CumsumModel().eval(), "1x1", {"x": torch.randn(1, 4, 8)}, allow_host_fallback=False)


def test_source_is_standalone_python():
    source = lowered("mochi-tiny").source
    compile(source, "program.py", "exec")
    assert "import torch" not in source.split("def host_call")[0]  # torch only inside the host fallback helper
    assert "ttnn.transformer.joint_scaled_dot_product_attention(" in source


class LabelLookup(torch.nn.Module):
    """Class labels (int64) picking rows of a table by index_select, which has no device lowering for indices that
    are inputs (an embedding lookup becomes a one-hot matmul on device)."""

    def __init__(self):
        super().__init__()
        self.table, self.proj = torch.nn.Parameter(torch.randn(10, 16)), torch.nn.Linear(16, 16)

    def forward(self, x, class_labels):
        return self.proj(x + self.table.index_select(0, class_labels)[:, None, :])


def test_integer_inputs_stay_integers_through_host_fallback():
    """An op with no device lowering runs on host (numpy): its indices must arrive as integers (they were
    downloaded as float32 and the lookup refused them)."""
    model = LabelLookup().eval()
    inputs = {"x": torch.randn(2, 4, 16), "class_labels": torch.tensor([3, 7])}
    with pytest.warns(UserWarning, match="index_select.*runs on host in numpy"):
        program = meshdit.lower(model, "1x1", inputs)
    assert program.ir.inputs[1].spec.dtype == "int32"
    result = program.pcc_report()[0]
    print(f"label lookup on host, integer indices: {result}")
    assert result.pcc >= 0.9999
