"""Fused emission: an activation inside its linear (`ttnn.linear(..., activation=)`), heads-first attention
(one fused QKV linear, `ttnn.transformer.split_query_key_value_and_split_heads`, `concatenate_heads`), RoPE as
`ttnn.experimental.rotary_embedding_llama`, adaLN modulation chunks computed where the sharded residual reads
them, and patchify-style chains of reshapes and permutes run row-major."""

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


ROTARY = "ttnn.experimental.rotary_embedding_llama"


def _rope_inputs(n=64, head_dim=32):
    return {"x": torch.randn(1, n, 128 if head_dim == 32 else 4 * head_dim), "cos": torch.randn(n, head_dim),
            "sin": torch.randn(n, head_dim)}


@pytest.mark.parametrize("mesh", ["1x1", "2x2 sp2@0 tp2@1"])
def test_rope_is_ttnns_rotary_op_in_bfloat16(mesh):
    """x * cos + (x @ M) * sin with M one 32 x 32 pair rotation repeated along the diagonal: one rotary op per q and
    per k, the 32 x 32 block as its transformation matrix, tables sharded with the tokens under sp."""
    torch.manual_seed(0)
    program = meshdit.lower(HeadsLastAttention().eval(), mesh, _rope_inputs(), dtype="bf16")
    fns = [op.fn for op in program.ir.ops]
    assert program.ir.fusions["RoPE as ttnn rotary_embedding_llama"] == 2
    assert fns.count(ROTARY) == 2 and "ttnn.matmul" not in fns
    (matrix,) = [w for w in program.ir.weights.values() if w.transform.name == "rotary_tile"]
    assert matrix.spec.shape == (1, 1, 32, 32) and matrix.spec.dtype == "bfloat16"
    rope = next(op for op in program.ir.ops if op.fn == ROTARY)
    tokens = 64 // (2 if "sp2" in mesh else 1)
    assert [program.ir.tensors[a.name].shape for a in rope.args[1:3]] == [(1, 1, tokens, 32)] * 2
    assert "RoPE as ttnn rotary_embedding_llama x2" in program.plan()
    result = program.pcc_report()[0]
    print(f"rotary op {mesh} bf16: PCC {result.pcc:.6f}")
    assert result.pcc > 0.999


class EvenOddAttention(HeadsLastAttention):
    """Mochi-1's RoPE as diffusers writes it (MochiAttnProcessor2_0): even and odd channels rotated apart by tables
    [N, H, D/2], then interleaved back with stack(-1) + flatten(-2), on [B, N, H, D] before the permute."""

    def forward(self, x, cos, sin):
        def rope(t):
            even, odd = t[..., 0::2].float(), t[..., 1::2].float()
            return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).to(t.dtype)

        b, n, _ = x.shape
        q, k, v = (self.proj[r](x).unflatten(-1, (self.heads, -1)) for r in "qkv")
        q, k = rope(self.norm_q(q)), rope(self.norm_k(k))
        o = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out(o.transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize("mesh", ["1x1", "2x2 sp2@0 tp2@1"])
def test_even_odd_rope_is_ttnns_rotary_op(mesh):
    """The complex product on even/odd channel pairs (passes/pair_products.py) becomes x * cos' + (x @ T) * sin',
    T the interleaved pair rotation, which is block-diagonal in 32 x 32 tiles: one rotary op per q and per k where
    there were nine ops, with the tables expanded to full head width once."""
    torch.manual_seed(0)
    n, heads, head_dim = 64, 4, 64
    inputs = {"x": torch.randn(1, n, heads * head_dim), "cos": torch.randn(n, heads, head_dim // 2),
              "sin": torch.randn(n, heads, head_dim // 2)}
    program = meshdit.lower(EvenOddAttention(heads * head_dim, heads).eval(), mesh, inputs, dtype="bf16")
    fns = [op.fn for op in program.ir.ops]
    assert program.ir.fusions["RoPE as ttnn rotary_embedding_llama"] == 2 and fns.count(ROTARY) == 2
    assert "ttnn.subtract" not in fns
    result = program.pcc_report()[0]
    print(f"even/odd RoPE as rotary op {mesh} bf16: PCC {result.pcc:.6f}")
    assert result.pcc > 0.999


class RotateHalfAttention(HeadsLastAttention):
    """RoPE in its rotate-half form (channel i pairs with i + D/2), written as diffusers writes it or, with
    `matrix`, as x @ M with M given."""

    def __init__(self, dim=128, heads=4, matrix=False):
        super().__init__(dim, heads)
        d = dim // heads
        rotate = torch.zeros(d, d)
        rotate[torch.arange(d // 2) + d // 2, torch.arange(d // 2)] = -1.0  # (x1, x2) -> (-x2, x1)
        rotate[torch.arange(d // 2), torch.arange(d // 2) + d // 2] = 1.0
        self.register_buffer("rotate", rotate if matrix else None)

    def forward(self, x, cos, sin):
        from diffusers.models.embeddings import apply_rotary_emb

        b, n, _ = x.shape
        q, k, v = (self.proj[r](x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for r in "qkv")
        if self.rotate is None:
            q, k = (apply_rotary_emb(t, (cos, sin), use_real_unbind_dim=-2) for t in (q, k))
        else:
            q, k = (t * cos + (t @ self.rotate) * sin for t in (q, k))
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, n, -1))


def test_rope_stays_four_ops_where_ttnn_refuses_it():
    """float32 (ttnn's rotary op takes bfloat16 only), and a rotation that pairs channels across a 32-wide tile
    (rotate-half over 64-wide heads, as x @ M): kept as matmul + elementwise, with the reason in the plan. Rotate-half
    over 32-wide heads stays inside one tile: ttnn's op computes it with M as its transformation matrix."""
    torch.manual_seed(0)
    fp32 = meshdit.lower(HeadsLastAttention().eval(), "1x1", _rope_inputs())
    assert fp32.ir.fusions["RoPE kept as matmul + elementwise (float32 (ttnn's rotary op takes bfloat16 only))"] == 2
    assert ROTARY not in [op.fn for op in fp32.ir.ops] and fp32.pcc_report()[0].pcc > 0.9999
    across = meshdit.lower(RotateHalfAttention(256, matrix=True).eval(), "1x1", _rope_inputs(head_dim=64),
                           dtype="bf16")
    reason = "RoPE kept as matmul + elementwise (its rotation pairs channels across a 32-wide tile (rotate-half RoPE))"
    assert across.ir.fusions[reason] == 2
    assert ROTARY not in [op.fn for op in across.ir.ops] and across.pcc_report()[0].pcc > 0.999
    within = meshdit.lower(RotateHalfAttention().eval(), "1x1", _rope_inputs(), dtype="bf16")
    assert [op.fn for op in within.ir.ops].count(ROTARY) == 2 and within.pcc_report()[0].pcc > 0.999


def _bf16_on_device(t):
    mesh = sim.open_mesh_device(sim.MeshShape(1, 1))
    return sim.Tensor(t.numpy(), data_type=sim.bfloat16, device=mesh, layout=sim.TILE_LAYOUT)


def test_simulated_rotary_op_follows_ttnn():
    """Every 32-wide tile of x times T, then x * cos + that * sin (intermediates in bfloat16, as the kernel's
    circular buffers hold them); the refusals real ttnn 0.81.1 gives on the mock."""
    torch.manual_seed(0)
    x, cos, sin = torch.randn(1, 2, 64, 64), torch.randn(1, 1, 64, 64), torch.randn(1, 1, 64, 64)
    pairs = torch.zeros(32, 32)
    pairs[torch.arange(1, 32, 2), torch.arange(0, 32, 2)] = -1.0  # (x0, x1) -> (-x1, x0)
    pairs[torch.arange(0, 32, 2), torch.arange(1, 32, 2)] = 1.0
    rotated = (x.reshape(1, 2, 64, 2, 32) @ pairs).reshape(x.shape)
    assert torch.equal(rotated[..., 0], -x[..., 1]) and torch.equal(rotated[..., 1], x[..., 0])
    args = [_bf16_on_device(t) for t in (x, cos, sin, pairs.reshape(1, 1, 32, 32))]
    got = torch.from_numpy(sim.from_device(sim.experimental.rotary_embedding_llama(*args)).to_numpy())
    want = x * cos + rotated * sin
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.9999
    x3 = _bf16_on_device(x[0])
    with pytest.raises(RuntimeError, match="rank-4"):
        sim.experimental.rotary_embedding_llama(x3, *args[1:])
    with pytest.raises(RuntimeError, match="dtype = bfloat16"):
        sim.experimental.rotary_embedding_llama(_on_device(x), *args[1:])
    with pytest.raises(RuntimeError, match="Transformation matrix"):
        sim.experimental.rotary_embedding_llama(*args[:3], _bf16_on_device(torch.eye(64).reshape(1, 1, 64, 64)))
    wide = [_bf16_on_device(t) for t in (torch.randn(1, 1, 32, 256), torch.randn(1, 1, 32, 256))]
    accumulate = sim.WormholeComputeKernelConfig(fp32_dest_acc_en=True)
    with pytest.raises(RuntimeError, match="fp32_dest_acc_en must be False"):
        sim.experimental.rotary_embedding_llama(_bf16_on_device(torch.randn(1, 1, 32, 256)), wide[0], wide[1],
                                                args[3], compute_kernel_config=accumulate)


class Modulated(torch.nn.Module):
    """An adaLN-modulated MLP block: shift, scale and gate from one linear of the conditioning, chunked."""

    def __init__(self, dim=64):
        super().__init__()
        self.norm = torch.nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = torch.nn.Linear(dim, 3 * dim)
        self.up, self.down = torch.nn.Linear(dim, 4 * dim), torch.nn.Linear(4 * dim, dim)

    def forward(self, x, c):
        shift, scale, gate = self.ada(torch.nn.functional.silu(c)).chunk(3, dim=-1)
        h = self.norm(x) * (1 + scale[:, None]) + shift[:, None]
        return x + gate[:, None] * self.down(torch.nn.functional.gelu(self.up(h), approximate="tanh"))


def test_adaln_chunks_are_computed_where_the_sharded_residual_reads_them():
    """With the residual sharded over tp, each modulation chunk is its own column-parallel linear: every device
    computes its piece of shift, scale and gate, which is the piece its shard of the residual reads. Kept whole,
    the linear's output would be sharded across the chunks: gathered, sliced, and cut again per chunk."""
    torch.manual_seed(0)
    inputs = {"x": torch.randn(1, 64, 64), "c": torch.randn(1, 64)}
    sharded = meshdit.lower(Modulated().eval(), "1x2 tp2@1", inputs, residual="sharded")
    replicated = meshdit.lower(Modulated().eval(), "1x2 tp2@1", inputs, residual="replicated")
    modulation = [op for op in sharded.ir.ops if op.fn == "ttnn.linear" and
                  sharded.ir.tensors[op.outputs[0]].shape == (1, 32)]
    assert len(modulation) == 3  # shift, scale, gate: 32 of 64 features each per device
    cut = [sharded.ir.tensors[op.outputs[0]].shape for op in sharded.ir.ops
           if op.fn in ("ttnn.mesh_partition", "ttnn.slice", "ttnn.experimental.all_gather_async")]
    assert all(shape[-2] == 64 for shape in cut)  # only the tokens' residual and hidden states, no chunk
    # the whole-linear form, kept for the replicated residual, whose consumers want every chunk whole
    assert [op.fn for op in replicated.ir.ops].count("ttnn.slice") == 3
    for program in (sharded, replicated):
        assert program.pcc_report()[0].pcc > 0.9999


class TwoModulated(torch.nn.Module):
    """Two modulated blocks: under a sharded residual the second one's norm reads the sharded residual (the
    first's reads the replicated model input, which is partitioned after it)."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Modulated(), Modulated()])

    def forward(self, x, c):
        for block in self.blocks:
            x = block(x, c)
        return x


@pytest.mark.parametrize("mesh, residual", [("1x1", "replicated"), ("1x2 tp2@1", "sharded")])
def test_modulation_folds_into_the_norm_bias_and_addcmul(mesh, residual):
    """norm(x) * (1 + scale) + shift is one norm with weight 1 + scale and bias shift (the distributed norm under a
    sharded residual); the 1 goes into the scale linear's bias (passes/bias_numbers.py); x + gate * y is one
    ttnn.addcmul, or, where y is a linear's whole output (one chip), one dit_minimal_matmul_addcmul_fused with it.
    Batch 1: one modulation row per device."""
    torch.manual_seed(0)
    inputs = {"x": torch.randn(1, 64, 64), "c": torch.randn(1, 64)}
    program = meshdit.lower(TwoModulated().eval(), mesh, inputs, dtype="bf16", residual=residual)
    fusions, fns = program.ir.fusions, [op.fn for op in program.ir.ops]
    assert program.graph.gm.meta["pass_stats"]["fold_numbers_into_bias"]["changed"] == 2  # 1 + scale, per block
    if mesh == "1x1":
        assert fns.count(MATMUL_ADDCMUL) == 2 and "ttnn.addcmul" not in fns
    else:
        assert fusions["gated residual as addcmul"] == 2 and fns.count("ttnn.addcmul") == 2
    if residual == "sharded":
        assert fusions["adaLN modulation in its norm"] == 1  # the second block's distributed norm
        norm = next(op for op in program.ir.ops if op.fn == "ttnn.layer_norm_post_all_gather")
        assert {"weight", "bias"} <= set(norm.kwargs)
    else:
        assert fusions["adaLN modulation in its norm"] == 2 and "ttnn.multiply" not in fns
    result = program.pcc_report()[0]
    print(f"modulation folded {mesh} {residual} bf16: PCC {result.pcc:.6f}")
    assert result.pcc > 0.999


def test_modulation_with_a_row_per_batch_entry_stays_apart():
    """Batch 2 on one device: a norm's weight is one row for every token, so 1 + scale (a row per batch entry)
    cannot be it; the gate broadcasts in ttnn.addcmul as in torch."""
    torch.manual_seed(0)
    inputs = {"x": torch.randn(2, 64, 64), "c": torch.randn(2, 64)}
    program = meshdit.lower(Modulated().eval(), "1x1", inputs, dtype="bf16")
    assert "adaLN modulation in its norm" not in program.ir.fusions
    assert program.ir.fusions["gated residual as addcmul"] == 1
    assert program.pcc_report()[0].pcc > 0.999


def test_simulated_addcmul_and_norm_rows_follow_ttnn():
    torch.manual_seed(0)
    a, g, h = torch.randn(2, 64, 32), torch.randn(2, 1, 32), torch.randn(2, 64, 32)
    got = sim.addcmul(_on_device(a), _on_device(g), _on_device(h), value=0.5)
    assert torch.allclose(torch.from_numpy(sim.from_device(got).to_numpy()), a + 0.5 * g * h, atol=1e-6)
    with pytest.raises(RuntimeError, match="wider than input_a"):
        sim.addcmul(_on_device(g), _on_device(a), _on_device(h))
    x = _on_device(torch.randn(2, 64, 32))
    one_row = sim.layer_norm(x, epsilon=1e-6, weight=_on_device(torch.ones(1, 1, 32)))
    assert tuple(one_row.shape) == (2, 64, 32)
    with pytest.raises(RuntimeError, match="not one row"):
        sim.layer_norm(x, epsilon=1e-6, weight=_on_device(torch.ones(2, 1, 32)))


class Patchify(torch.nn.Module):
    """DiT patchify and unpatchify around a linear: [B, C, H, W] -> [B, H/2 * W/2, 4C] tokens -> back."""

    def __init__(self, channels=16):
        super().__init__()
        self.proj = torch.nn.Linear(4 * channels, 4 * channels)

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, 4 * c)
        t = self.proj(t)
        t = t.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
        return t


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_patchify_chains_run_row_major(dtype):
    """Tiled, the [.., 2, 2] pieces of patchify would be padded to 32x32 tiles (256x the bytes); the chains untilize,
    reshape and permute row-major, and tilize, where the modelled time says so (a large latent), and stay tiled where
    the two extra ops cost more than the padding (a small one)."""
    torch.manual_seed(0)
    large = meshdit.lower(Patchify().eval(), "1x1", {"x": torch.randn(1, 16, 128, 128)}, dtype=dtype)
    fns = [op.fn for op in large.ir.ops]
    assert fns.count("ttnn.to_layout") == 4 and fns.count("ttnn.permute") == 2
    assert all(large.ir.tensors[op.outputs[0]].layout == "ROW_MAJOR" for op in large.ir.ops
               if op.fn in ("ttnn.permute", "ttnn.reshape"))
    result = large.pcc_report()[0]
    print(f"patchify row-major {dtype}: PCC {result.pcc:.6f}")
    assert result.pcc > (0.9999 if dtype == "fp32" else 0.999)
    estimate = large.estimate()
    assert estimate.waste_bytes < 0.05 * estimate.dram_bytes
    small = meshdit.lower(Patchify().eval(), "1x1", {"x": torch.randn(1, 16, 8, 8)}, dtype=dtype)
    assert not any(op.fn == "ttnn.to_layout" for op in small.ir.ops)


def test_view_chains_from_a_scalar_stay_tiled():
    """A reshape that starts from a 0-d value (a mean reshaped to [1, 1], as in WanVACE) has no last dim: the
    row-major check of narrow_views and the pair-map pass (passes/pairs.py) both once indexed its empty shape."""

    class Scaled(torch.nn.Module):
        def forward(self, x):
            return x * x.mean().reshape(1, 1)

    program = meshdit.lower(Scaled().eval(), "1x1", {"x": torch.randn(64, 64)})
    assert not any(op.fn == "ttnn.to_layout" for op in program.ir.ops)
    assert program.pcc_report()[0].pcc > 0.9999


class GatedFeedForward(torch.nn.Module):
    """DiT's gated residual after a feed-forward: x + gate * ff2(gelu(ff1(x + shift)))."""

    def __init__(self, d=128):
        super().__init__()
        self.ada, self.ff1, self.ff2 = torch.nn.Linear(d, 2 * d), torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x, c):
        shift, gate = self.ada(torch.nn.functional.silu(c)).chunk(2, dim=-1)
        h = torch.nn.functional.gelu(self.ff1(x + shift[:, None]), approximate="tanh")
        return x + gate[:, None] * self.ff2(h)


MATMUL_ADDCMUL = "ttnn.experimental.dit_minimal_matmul_addcmul_fused"


def test_linear_and_gated_residual_are_one_op():
    """x + gate * linear(h) is one dit_minimal_matmul_addcmul_fused where ttnn takes it (bf16 weights, no partial sum
    between them); bfloat8_b weights keep linear + addcmul (ttnn needs the residual's tile size), and the plan says
    why; a row-parallel linear's sum is reduced first, so it stays apart."""
    torch.manual_seed(0)
    inputs = {"x": torch.randn(1, 256, 128), "c": torch.randn(1, 128)}
    fused = meshdit.lower(GatedFeedForward().eval(), "1x1", inputs, dtype="bf16", weight_dtype="bf16")
    fns = [op.fn for op in fused.ir.ops]
    assert fns.count(MATMUL_ADDCMUL) == 1 and "ttnn.addcmul" not in fns
    result = fused.pcc_report()[0]
    print(f"linear + gated residual fused, bf16: PCC {result.pcc:.6f}")
    assert result.pcc > 0.999
    apart = meshdit.lower(GatedFeedForward().eval(), "1x1", inputs, dtype="bf16", weight_dtype="bfp8")
    assert MATMUL_ADDCMUL not in [op.fn for op in apart.ir.ops] and apart.pcc_report()[0].pcc > 0.999
    assert any("bfloat8_b weights" in reason for reason in apart.ir.fusions)
    tp = meshdit.lower(GatedFeedForward().eval(), "1x2 tp2@1", inputs, dtype="bf16", weight_dtype="bf16")
    assert MATMUL_ADDCMUL not in [op.fn for op in tp.ir.ops] and tp.pcc_report()[0].pcc > 0.999


class ScalarGated(torch.nn.Module):
    """Gated residuals the fused op cannot take: a 0-d gate (WanVACE's hint scale: it crashed the finder), and a
    linear's output reshaped before the gate (the product's operand is the view, not the linear)."""

    def __init__(self, d=128):
        super().__init__()
        self.proj, self.cond = torch.nn.Linear(d, d), torch.nn.Linear(d, d)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x, c):
        x = x + self.scale * self.proj(x)
        return x + torch.sigmoid(c)[:, None] * self.cond(c)[:, None]


def test_gates_the_fused_op_cannot_take_stay_apart():
    torch.manual_seed(0)
    inputs = {"x": torch.randn(1, 64, 128), "c": torch.randn(1, 128)}
    program = meshdit.lower(ScalarGated().eval(), "1x1", inputs, dtype="bf16", weight_dtype="bf16")
    assert MATMUL_ADDCMUL not in [op.fn for op in program.ir.ops]
    assert program.pcc_report()[0].pcc > 0.999
