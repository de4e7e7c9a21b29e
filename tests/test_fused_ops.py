"""Fused emission: an activation inside its linear (`ttnn.linear(..., activation=)`), and heads-first attention
(one fused QKV linear, `ttnn.transformer.split_query_key_value_and_split_heads`, `concatenate_heads`)."""

import pytest
import torch

import meshdit
from meshdit.runtime import sim


class Mlp(torch.nn.Module):
    def __init__(self, approximate="tanh", act=None):
        super().__init__()
        self.up, self.down = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)
        self.act = act or torch.nn.GELU(approximate=approximate)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


@pytest.mark.parametrize("act, expected", [(torch.nn.GELU(approximate="tanh"), "gelu_tanh"),
                                           (torch.nn.GELU(), "gelu"), (torch.nn.SiLU(), "silu"),
                                           (torch.nn.ReLU(), "relu")])
def test_activation_is_fused_into_its_linear(act, expected):
    torch.manual_seed(0)
    program = meshdit.lower(Mlp(act=act).eval(), "1x1", {"x": torch.randn(1, 8, 32) * 3})
    linears = [op for op in program.ir.ops if op.fn == "ttnn.linear"]
    assert [op.kwargs.get("activation") for op in linears] == [expected, None]
    assert len(program.ir.ops) == 2  # no separate activation op
    assert program.pcc_report()[0].pcc > 0.9999


def test_activation_read_elsewhere_is_not_fused():
    class Branch(Mlp):
        def forward(self, x):
            h = self.up(x)
            return self.down(self.act(h)) + h[..., :32]

    program = meshdit.lower(Branch().eval(), "1x1", {"x": torch.randn(1, 8, 32)})
    assert all("activation" not in op.kwargs for op in program.ir.ops if op.fn == "ttnn.linear")
    assert any(op.fn == "ttnn.gelu" for op in program.ir.ops)


@pytest.mark.parametrize("activation, reference", [
    ("gelu", lambda y: torch.nn.functional.gelu(y)),
    ("gelu_tanh", lambda y: torch.nn.functional.gelu(y, approximate="tanh")),
    ("silu", torch.nn.functional.silu), ("relu", torch.relu)])
def test_simulated_linear_applies_what_ttnn_computes(activation, reference):
    """erf GELU and tanh GELU differ by up to ~1e-3 around |x| = 2: the simulation must pick the right one."""
    a, w = torch.linspace(-4, 4, 32 * 32).reshape(32, 32), torch.eye(32)
    out = sim.linear(_on_device(a), _on_device(w), activation=activation)
    assert torch.allclose(torch.from_numpy(sim.from_device(out).to_numpy()), reference(a), atol=1e-6)


def test_simulated_linear_refuses_an_unknown_activation():
    x = _on_device(torch.ones(32, 32))
    with pytest.raises(RuntimeError, match="unknown activation 'gelu_erf'"):
        sim.linear(x, x, activation="gelu_erf")


def _on_device(t):
    mesh = sim.open_mesh_device(sim.MeshShape(1, 1))
    return sim.Tensor(t.numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT)


class SelfAttention(torch.nn.Module):
    """q, k, v projections viewed as heads, a per-head norm on q and k after the permute (SD3's order), SDPA."""

    def __init__(self, dim=128, heads=4, bias_on=("q", "k", "v")):
        super().__init__()
        self.heads = heads
        self.proj = torch.nn.ModuleDict({r: torch.nn.Linear(dim, dim, bias=r in bias_on) for r in "qkv"})
        self.norm_q, self.norm_k = torch.nn.RMSNorm(dim // heads, eps=1e-6), torch.nn.RMSNorm(dim // heads, eps=1e-6)
        self.out = torch.nn.Linear(dim, dim)
        for norm in (self.norm_q, self.norm_k):
            torch.nn.init.normal_(norm.weight, 1.0, 0.2)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (self.proj[r](x).view(b, n, self.heads, -1).transpose(1, 2) for r in "qkv")
        o = torch.nn.functional.scaled_dot_product_attention(self.norm_q(q), self.norm_k(k), v)
        return self.out(o.transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize("mesh", ["1x1", "1x2 tp2@1", "2x2 sp2@0 tp2@1"])
def test_qkv_is_one_linear_and_heads_split_by_ttnn(mesh):
    """With tp, each device's columns of the fused weight must hold its own heads of q, then k, then v: a fused
    weight laid out [q | k | v] globally would give device 0 all of q's heads and none of v's (PCC far off)."""
    torch.manual_seed(0)
    program = meshdit.lower(SelfAttention().eval(), mesh, {"x": torch.randn(1, 64, 128)})
    fns = [op.fn for op in program.ir.ops]
    assert fns.count("ttnn.linear") == 2 and "ttnn.transformer.split_query_key_value_and_split_heads" in fns
    assert "ttnn.transformer.concatenate_heads" in fns and "ttnn.permute" not in fns
    assert program.ir.fusions["fused QKV + split heads"] == 1
    assert "fused QKV + split heads x1" in program.plan()
    (name,) = [w for w in program.ir.weights if ":qkv" in w]
    assert name.startswith("proj.{q,k,v}.weight:qkv")
    assert program.pcc_report()[0].pcc > 0.9999


class HeadsLastAttention(torch.nn.Module):
    """Flux's order: projections viewed as heads [B, N, H, D], per-head norm and RoPE (pair rotation) there, and the
    permute to [B, H, N, D] last (passes/heads_first.py moves it up to the head reshape)."""

    def __init__(self, dim=128, heads=4):
        super().__init__()
        self.heads = heads
        self.proj = torch.nn.ModuleDict({r: torch.nn.Linear(dim, dim) for r in "qkv"})
        self.norm_q, self.norm_k = torch.nn.RMSNorm(dim // heads, eps=1e-6), torch.nn.RMSNorm(dim // heads, eps=1e-6)
        self.out = torch.nn.Linear(dim, dim)
        for norm in (self.norm_q, self.norm_k):
            torch.nn.init.normal_(norm.weight, 1.0, 0.2)

    def forward(self, x, cos, sin):
        from diffusers.models.embeddings import apply_rotary_emb

        b, n, _ = x.shape
        q, k, v = (self.proj[r](x).unflatten(-1, (self.heads, -1)) for r in "qkv")
        q, k = self.norm_q(q), self.norm_k(k)
        q, k = (apply_rotary_emb(t, (cos, sin), sequence_dim=1) for t in (q, k))
        o = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out(o.transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize("mesh", ["1x1", "2x2 sp2@0 tp2@1"])
def test_norm_and_rope_before_the_permute_run_heads_first(mesh):
    """Per-head work on [B, N, H, D] pads H (4, or 2 per device) to a 32-row tile; moved after the permute it runs
    on [B, H, N, D], whose tiled rows are the tokens, and q, k, v come from one fused linear and ttnn's head split."""
    torch.manual_seed(0)
    inputs = {"x": torch.randn(1, 64, 128), "cos": torch.randn(64, 32), "sin": torch.randn(64, 32)}
    program = meshdit.lower(HeadsLastAttention().eval(), mesh, inputs)
    assert program.ir.fusions["fused QKV + split heads"] == 1
    heads = 4 // (2 if "tp2" in mesh else 1)
    heads_last = [op.fn for op in program.ir.ops for name in op.outputs
                  if name in program.ir.tensors and len(program.ir.tensors[name].shape) == 4
                  and program.ir.tensors[name].shape[-2] == heads]
    assert not heads_last  # no tensor tiles its heads as rows
    assert program.pcc_report()[0].pcc > 0.9999


def test_qkv_with_bias_on_some_projections_stays_three_linears():
    program = meshdit.lower(SelfAttention(bias_on=("q",)).eval(), "1x1", {"x": torch.randn(1, 64, 128)})
    assert [op.fn for op in program.ir.ops].count("ttnn.linear") == 4
    assert program.ir.fusions == {"QKV kept as 3 linears (only some of its q, k, v projections have a bias)": 1,
                                  "concatenate heads": 1}
    assert program.pcc_report()[0].pcc > 0.9999


def test_heads_narrower_than_a_tile_stay_three_linears():
    program = meshdit.lower(SelfAttention(dim=64).eval(), "1x1", {"x": torch.randn(1, 64, 64)})
    assert "ttnn.transformer.split_query_key_value_and_split_heads" not in [op.fn for op in program.ir.ops]
    assert any("head dim 16 is not whole 32-wide tiles" in k for k in program.ir.fusions)
    assert program.pcc_report()[0].pcc > 0.9999


def test_simulated_head_split_and_concat_follow_ttnn():
    x = torch.randn(1, 64, 3 * 2 * 32)
    q, k, v = sim.transformer.split_query_key_value_and_split_heads(_on_device(x), num_heads=2, transpose_key=False)
    heads = x.reshape(1, 64, 6, 32).permute(0, 2, 1, 3)
    for got, want in zip((q, k, v), (heads[:, :2], heads[:, 2:4], heads[:, 4:])):
        assert torch.equal(torch.from_numpy(sim.from_device(got).to_numpy()), want)
    _, k_t, _ = sim.transformer.split_query_key_value_and_split_heads(_on_device(x), num_heads=2)  # ttnn's default
    assert tuple(k_t.shape) == (1, 2, 32, 64)
    with pytest.raises(RuntimeError, match="head size 16 is not a multiple of the tile width 32"):
        sim.transformer.split_query_key_value_and_split_heads(_on_device(x), num_heads=4, transpose_key=False)
    with pytest.raises(RuntimeError, match="rank"):
        sim.transformer.split_query_key_value_and_split_heads(_on_device(x[None]), num_heads=2)
    merged = sim.transformer.concatenate_heads(q)
    assert torch.equal(torch.from_numpy(sim.from_device(merged).to_numpy()), x[..., :64])
    with pytest.raises(RuntimeError, match="head size 16"):
        sim.transformer.concatenate_heads(_on_device(torch.randn(1, 2, 64, 16)))
