"""In-place writes (passes/mutations.py): a copy_ into a slice, strided writes into an empty_like table, masked
updates, in-place arithmetic on a view. Each used to be dropped as dead code (no node reads an in-place write), giving
a silently wrong number (CogView4's RoPE on the image part of the query came out at PCC 0.998), or ran on host
reading uninitialised memory (Wan's RoPE)."""

import warnings

import pytest
import torch

import meshdit
from meshdit import capture
from meshdit.passes import run_passes


class InPlace(torch.nn.Module):
    def __init__(self, dim=64, text=16):
        super().__init__()
        self.text = text
        self.proj = torch.nn.Linear(dim, dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, hidden_states, mask):
        q = self.proj(hidden_states)
        # RoPE-like update of the image part only, written into a slice (CogView4, HunyuanVideo)
        q[:, self.text:] = q[:, self.text:] * 0.5 + torch.sin(q[:, self.text:])
        # interleaved table filled by strided writes into an empty_like (Wan's RoPE)
        table = torch.empty_like(q)
        table[..., 0::2] = torch.cos(q[..., 0::2])
        table[..., 1::2] = torch.sin(q[..., 1::2])
        # every third channel from 1, the last group cut short (Cosmos3's interleaved multi-axis RoPE)
        table[..., 1:62:3] = table[..., 1:62:3] * 2.0
        # in-place arithmetic on a view, masked_fill_, a masked write of one value
        q[:, :, :8].mul_(3.0)
        q.masked_fill_(mask[:, :, None], 0.25)
        heads = (q + table).unflatten(-1, (2, -1)).transpose(1, 2)
        attended = torch.nn.functional.scaled_dot_product_attention(heads, heads, heads)
        out = self.out(attended.transpose(1, 2).flatten(2))
        out[mask] = 0.0
        return out


def _inputs(tokens=48, dim=64):
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, tokens, dtype=torch.bool)
    mask[:, 5:9] = True
    return {"hidden_states": torch.randn(1, tokens, dim, generator=g), "mask": mask}


def test_every_write_keeps_the_graphs_value():
    model, inputs = InPlace().eval(), _inputs()
    graph = run_passes(capture(model, inputs), verify_inputs=inputs)  # asserts after each pass
    names = {str(n.target) for n in graph.op_nodes()}
    assert not [n for n in names if n.rstrip(".default").rstrip(".Scalar").endswith("_")], names
    assert "aten.empty_like.default" not in names


@pytest.mark.parametrize("mesh", ["1x1", "2x2 sp2@0 tp2@1"])
def test_in_place_writes_lower_on_device(mesh, pcc_log):
    model, inputs = InPlace().eval(), _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(model, mesh, inputs)  # check=True: raises NumericsError on a wrong number
    for result in program.pcc_report():
        pcc_log("in-place writes", mesh, result)
        assert result.pcc >= 0.9999
    assert program.coverage()["host"] == {}, program.coverage()["host"]
