"""Each pass keeps the graph's value (run in torch before and after) and recognises the structure it should."""

import collections

import pytest
import torch

from conftest import TINY, tiny_inputs, tiny_model
from meshdit import model_zoo
from meshdit.capture import capture
from meshdit.errors import CaptureError, SpecializationError
from meshdit.ir import ops
from meshdit.passes import run_passes

aten = torch.ops.aten


def _passes(name):
    model, inputs = tiny_model(name), tiny_inputs(name)
    return run_passes(capture(model, inputs), model_zoo.entry(name).static_inputs, verify_inputs=inputs)


@pytest.mark.parametrize("name", TINY)
def test_every_pass_preserves_the_value(name):
    graph = _passes(name)  # verify_inputs makes run_passes compare every pass's output with the first
    expected = tiny_model(name)(**tiny_inputs(name), return_dict=False)
    got = graph.run(**{k: v for k, v in tiny_inputs(name).items() if k in graph.inputs})
    assert torch.allclose(expected[0], got[0], atol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_canonical_vocabulary(name):
    targets = {n.target for n in _passes(name).op_nodes()}
    spellings = {aten.view.default, aten.transpose.int, aten.chunk.default, aten.unflatten.int, aten.dropout.default,
                 aten._assert_tensor_metadata.default, aten.conv2d.default, aten.unbind.int, aten.stack.default}
    assert not targets & spellings


def test_sd3_structure():
    graph = _passes("sd3-tiny")
    kinds = collections.Counter(p.kind for p in graph.patterns)
    assert kinds["joint_attention"] == 2  # image + prompt tokens in one softmax, per block
    assert kinds["mlp"] == 5 and kinds["adaln_modulation"] == 5
    # qk RMSNorms (written out with pow/mean/rsqrt in diffusers) are fused: 4 per block
    assert sum(n.target is aten.rms_norm.default for n in graph.op_nodes()) == 8
    assert not any(n.target is aten.rsqrt.default for n in graph.op_nodes())
    joint = [n for n in graph.op_nodes() if n.target is ops.joint_sdpa]
    assert joint[0].args[0].meta["val"].shape[-2] == 64  # main stream = image tokens (8x8 patches)
    assert joint[0].args[3].meta["val"].shape[-2] == 32  # joint stream = prompt tokens


def test_mochi_mask_is_specialised_and_guarded():
    graph = _passes("mochi-tiny")
    assert "encoder_attention_mask" in graph.static_inputs
    assert not any(n.target is aten.nonzero.default for n in graph.op_nodes())
    assert any("data-dependent" in note for note in graph.notes)
    mlps = collections.Counter(p.info["act"] for p in graph.patterns if p.kind == "mlp")
    assert mlps["swiglu"] == 3


def test_flux_position_tables_are_folded():
    graph = _passes("flux-tiny")
    assert {"img_ids", "txt_ids"} <= set(graph.static_inputs)
    assert not any(n.target in (aten.sin.default, aten.cos.default) and "pos_embed" in str(n.meta.get("stack_trace"))
                   for n in graph.op_nodes())
    folded = [c for c in graph.constants.values() if c.source is None]
    assert folded and all(c.value is not None for c in folded)


def test_data_dependent_op_on_runtime_input_is_a_named_error():
    class Gather(torch.nn.Module):
        def forward(self, x, scores):
            return x[torch.nonzero(scores > 0).flatten()]

    captured = capture(Gather(), {"x": torch.randn(8, 4), "scores": torch.randn(8)})
    graph = run_passes(captured)  # scores feeds nonzero: it becomes static automatically
    assert "scores" in graph.static_inputs
    with pytest.raises(SpecializationError, match="static"):
        run_passes(capture(Gather(), {"x": torch.randn(8, 4), "scores": torch.randn(8)}),
                   static_inputs={"scores": torch.empty(8, device="meta")})


def test_capture_names_unknown_inputs():
    with pytest.raises(CaptureError, match="does not take"):
        capture(tiny_model("sd3-tiny"), {"hidden_state": torch.randn(1, 4, 16, 16)})


def test_capture_on_meta_allocates_nothing():
    model = model_zoo.build("sd3-tiny", device="meta")
    captured = capture(model, model_zoo.example_inputs("sd3-tiny", device="meta"))
    assert captured.on_meta
    graph = run_passes(captured)
    assert all(c.value is None for c in graph.constants.values() if c.source)


def test_streams_are_kept_apart_for_joint_attention():
    """Flux applies RoPE to cat(prompt, image) and runs single blocks on the concatenation; once the cats are
    pushed down, every attention is a joint attention over the two separate streams."""
    graph = _passes("flux-tiny")
    joint = [n for n in graph.op_nodes() if n.target is ops.joint_sdpa]
    assert len(joint) == 4  # 2 double + 2 single blocks
    assert not any(n.target is aten.scaled_dot_product_attention.default for n in graph.op_nodes())
    for node in joint:
        assert node.args[0].meta["val"].shape[-2] == 64 and node.args[3].meta["val"].shape[-2] == 32
    # no concatenation along the token dim survives between the joint attentions' outputs and the next block
    outputs = {u for n in joint for u in n.users}
    assert not any(u.target is aten.cat.default for o in outputs for u in o.users)


class RegisterTokens(torch.nn.Module):
    """Learned tokens moved to the input's device positionally, as AuraFlow's register tokens are
    (`self.register_tokens.to(encoder_hidden_states.device, dtype)`): on meta that names the meta device."""

    def __init__(self):
        super().__init__()
        self.tokens = torch.nn.Parameter(torch.randn(1, 4, 16))
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, x):
        tokens = self.tokens.to(x.device, torch.float32)
        return self.proj(torch.cat([tokens.expand(x.shape[0], -1, -1), x], dim=1))


def test_constants_moved_to_an_input_device_fold_on_real_and_meta_weights():
    """Folding computes constants on host: a device the model names (here positionally) is the host's; planned on
    meta, the same folding runs when the real weights arrive."""
    import meshdit

    real = RegisterTokens().eval()
    x = torch.randn(1, 8, 16)
    program = meshdit.lower(real, "1x1", {"x": x})
    assert program.pcc_report()[0].pcc >= 0.9999
    assert not any(n.target is aten.to.device for n in program.graph.op_nodes())
    with torch.device("meta"):
        planned = RegisterTokens().eval()
    program = meshdit.lower(planned, "1x1", {"x": torch.empty(1, 8, 16, device="meta")})
    program.load_weights(real.state_dict())
    with torch.no_grad():
        expected = real(x)
    assert torch.allclose(program(x=x)[0], expected, atol=1e-5)


class ComplexRotary(torch.nn.Module):
    """RoPE written with complex numbers, as diffusers' apply_rotary_emb(use_real=False) and Qwen-Image do:
    a polar frequency table, view_as_complex of the query pairs, a complex product, view_as_real back."""

    def __init__(self, dim=16, tokens=8):
        super().__init__()
        self.proj = torch.nn.Linear(dim, dim)
        freqs = torch.outer(torch.arange(tokens, dtype=torch.float32), 1.0 / 10000 ** (torch.arange(0, dim, 2) / dim))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x):
        freqs_cis = torch.polar(torch.ones_like(self.freqs), self.freqs)  # [tokens, dim / 2], complex64
        q = self.proj(x)  # [batch, tokens, dim]
        rotated = torch.view_as_complex(q.float().reshape(*q.shape[:-1], -1, 2))
        out = torch.view_as_real(rotated * freqs_cis).flatten(2)
        return out * torch.view_as_real(freqs_cis.conj().resolve_conj()).flatten(1)[None]


def test_complex_rope_becomes_real_pairs():
    import meshdit

    model, x = ComplexRotary().eval(), torch.randn(2, 8, 16)
    program = meshdit.lower(model, "1x1", {"x": x}, allow_host_fallback=False)
    assert not any(n.meta["val"].dtype.is_complex for n in program.graph.gm.graph.nodes
                   if hasattr(n.meta.get("val"), "dtype"))
    assert all(not c.dtype.is_complex for c in program.graph.constants.values())
    assert program.pcc_report()[0].pcc >= 0.9999


class _LengthFromMask(torch.nn.Module):
    """Reads a length off a mask and slices with it: torch.export refuses the guard on `n` (data-dependent), as it
    does for Lumina2, OmniGen, HiDream and HunyuanImage."""

    def __init__(self):
        super().__init__()
        self.proj, self.out = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)

    def forward(self, hidden_states, mask, scale: float = 1.0):
        n = int(mask.sum().item())
        q = self.proj(hidden_states)[:, :n].unflatten(-1, (2, 32)).transpose(1, 2)
        attended = torch.nn.functional.scaled_dot_product_attention(q, q, q).transpose(1, 2).flatten(2)
        return (self.out(attended) * scale,)


def test_a_data_dependent_guard_falls_back_to_a_trace_on_the_example_values(pcc_log):
    import warnings

    import meshdit

    model = _LengthFromMask().eval()
    mask = torch.zeros(1, 64, dtype=torch.long)
    mask[:, :40] = 1
    inputs = {"hidden_states": torch.randn(1, 64, 64, generator=torch.Generator().manual_seed(0)), "mask": mask,
              "scale": 2.0}
    with pytest.raises(Exception, match="data-dependent|DataDependent"):
        torch.export.export(model, (), inputs, strict=False)
    captured = capture(model, inputs)
    assert captured.method.startswith("trace on example values")
    for mesh in ("1x1", "2x2 sp2@0 tp2@1"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = meshdit.lower(model, mesh, inputs)
        assert "captured by trace on example values" in program.plan()
        assert set(program.graph.static_inputs) == {"mask"}  # the length is read from it: its value is baked in
        for result in program.pcc_report():
            pcc_log("data-dependent length (traced)", mesh, result)
            assert result.pcc >= 0.9999
    other = mask.clone()
    other[:, 40:48] = 1
    with pytest.raises(SpecializationError, match="'mask' differs"):
        program(**{**inputs, "mask": other})
    meta_inputs = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
    with pytest.raises(CaptureError, match="data-dependent value"):
        capture(_LengthFromMask().to("meta"), meta_inputs)


class _Einsums(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(16, 8))
        self.freq = torch.nn.Parameter(torch.randn(4))

    def forward(self, x, grid):
        q = x.reshape(1, 2, 8, 8)
        scores = torch.einsum("bhqd,bhkd->bhqk", q, q)  # attention scores: a batched matmul
        projected = torch.einsum("bnd,de->bne", x, self.w)  # a linear written as einsum
        table = torch.einsum("d,bthw->dbthw", self.freq, grid)  # an outer product (Helios's RoPE)
        ids = torch.einsum("...n,d->...nd", grid, self.freq)  # ellipsis (Ernie-Image's RoPE)
        rows, cols = torch.meshgrid(self.freq, x[0, :, 0], indexing="ij")
        return scores.sum(-1), projected, table, torch.einsum("bij->bji", x), ids, rows * cols


def test_einsum_and_meshgrid_become_canonical_ops():
    inputs = {"x": torch.randn(1, 8, 16), "grid": torch.randn(1, 2, 3, 3)}
    graph = run_passes(capture(_Einsums().eval(), inputs), verify_inputs=inputs)  # each pass keeps the value
    targets = {n.target for n in graph.op_nodes()}
    assert torch.ops.aten.einsum.default not in targets and torch.ops.aten.meshgrid.indexing not in targets
    assert torch.ops.aten.matmul.default in targets


class _Patchify(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.video = torch.nn.Conv3d(4, 16, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.audio = torch.nn.Conv1d(4, 16, kernel_size=2, stride=2)
        self.depthwise = torch.nn.Conv2d(4, 4, kernel_size=3, padding=1, groups=4)  # not a patchify: left alone

    def forward(self, video, audio):
        return self.video(video), self.audio(audio), self.depthwise(video[:, :, 0])


def test_patchify_convs_of_any_rank_become_linears():
    inputs = {"video": torch.randn(1, 4, 2, 8, 8), "audio": torch.randn(1, 4, 16)}
    graph = run_passes(capture(_Patchify().eval(), inputs), verify_inputs=inputs)
    targets = [n.target for n in graph.op_nodes()]
    assert torch.ops.aten.conv3d.default not in targets and torch.ops.aten.conv1d.default not in targets
    assert targets.count(torch.ops.aten.linear.default) == 2 and torch.ops.aten.conv2d.default in targets


class _SpelledOtherwise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = torch.nn.GroupNorm(2, 8)

    def forward(self, x, keep):
        mask = (keep > 0) & ~(keep > 2)
        y = torch.concat([self.norm(x), x.narrow(1, 2, 3)], dim=1)
        return torch.nn.functional.leaky_relu(y, 0.1).clamp(-1.0, 1.0), mask


def test_group_norm_and_other_spellings_become_canonical_ops():
    """group_norm becomes its reductions; concat, narrow, & and ~ on booleans the canonical spellings."""
    inputs = {"x": torch.randn(1, 8, 4, 4), "keep": torch.tensor([[0, 1, 2, 3]])}
    graph = run_passes(capture(_SpelledOtherwise().eval(), inputs), verify_inputs=inputs)
    targets = {n.target for n in graph.op_nodes()}
    aten = torch.ops.aten
    assert not targets & {aten.group_norm.default, aten.concat.default, aten.narrow.default, aten.__and__.Tensor,
                          aten.bitwise_not.default}
    import meshdit

    program = meshdit.lower(_SpelledOtherwise().eval(), "1x1", inputs)  # raises NumericsError on a wrong number
    assert program.coverage()["host"] == {}
    assert all(r.pcc >= 0.9999 for r in program.pcc_report())


class _ClassLabels(torch.nn.Module):
    """A class-label table (DiT's) and an id embedding (Allegro's, OmniGen's)."""

    def __init__(self):
        super().__init__()
        self.labels = torch.nn.Embedding(11, 32)

    def forward(self, x, label):
        return x + self.labels(label)[:, None, :]


def test_embedding_becomes_a_one_hot_matmul_on_device(pcc_log):
    inputs = {"x": torch.randn(2, 8, 32), "label": torch.tensor([3, 10])}
    graph = run_passes(capture(_ClassLabels().eval(), inputs), verify_inputs=inputs)
    targets = {n.target for n in graph.op_nodes()}
    assert torch.ops.aten.embedding.default not in targets and torch.ops.aten.matmul.default in targets
    import meshdit

    program = meshdit.lower(_ClassLabels().eval(), "1x2 tp2@1", inputs)
    result = program.pcc_report()[0]
    pcc_log("embedding as one-hot matmul", "1x2 tp2@1", result)
    assert result.pcc >= 0.9999 and program.coverage()["host"] == {}


class _FixedPositions(torch.nn.Module):
    """Tokens taken at fixed positions: repeated by counts from a static mask (Qwen-Image 2.1 widens each image slot
    to four tokens), reordered by a constant permutation, written to the positions of a constant mask (Qwen-Image
    2.1 places its image tokens so) and added at constant positions."""

    def __init__(self):
        super().__init__()
        self.register_buffer("order", torch.tensor([3, 0, 2, 1, 5, 4]))
        self.proj = torch.nn.Linear(32, 32)

    def forward(self, x, slots):
        repeats = torch.where(slots[0], 4, 1)
        widened = self.proj(x).repeat_interleave(repeats, dim=1)
        placed = torch.zeros(1, 9, 32)
        placed[:, torch.tensor([False, True, True, False, False, True, False, False, False])] = x[:, :3]  # scatter
        placed = torch.ops.aten.index_put(placed, [None, torch.tensor([0, 8, 0])], x[:, 3:6], True)
        return widened, x.index_select(1, self.order) * 2, placed


def test_fixed_positions_become_one_hot_matmuls_on_device(pcc_log):
    slots = torch.tensor([[False, True, False, False, True, False]])
    inputs = {"x": torch.randn(1, 6, 32), "slots": slots}
    import meshdit

    program = meshdit.lower(_FixedPositions().eval(), "1x2 tp2@1", inputs, static_inputs=("slots",))
    targets = {n.target for n in program.graph.op_nodes()}
    aten = torch.ops.aten
    assert not targets & {aten.repeat_interleave.self_Tensor, aten.index_select.default, aten.index_put.default}
    for result in program.pcc_report():
        pcc_log("fixed positions (repeats, order, scatters)", "1x2 tp2@1", result)
        assert result.pcc >= 0.9999
    assert program.coverage()["host"] == {}


class _EmptyStream(torch.nn.Module):
    """A stream with no tokens (AnyFlow-FAR's context frames when there are none) joined to the others."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(32, 32)

    def forward(self, x, frames: int = 0):
        context = self.proj(x[:, :frames]).relu()
        return torch.cat([context, self.proj(x)], dim=1) * 2


def test_an_empty_tensor_is_a_constant_and_never_reaches_the_device(pcc_log):
    """Real ttnn dies with SIGFPE on an op over a zero-volume tensor: an empty value holds nothing, so it is folded
    to a constant and dropped from the concatenation, and the simulated mesh refuses such ops."""
    import meshdit
    from meshdit.runtime import sim

    inputs = {"x": torch.randn(1, 8, 32)}
    program = meshdit.lower(_EmptyStream().eval(), "1x1", inputs)
    assert all(0 not in spec.shape for spec in program.ir.tensors.values())
    result = program.pcc_report()[0]
    pcc_log("an empty stream", "1x1", result)
    assert result.pcc >= 0.9999
    mesh = sim.open_mesh_device(sim.MeshShape(1, 1))
    empty = sim.Tensor(torch.zeros(1, 0, 32).numpy(), data_type=sim.float32, device=mesh, layout=sim.TILE_LAYOUT)
    with pytest.raises(RuntimeError, match="empty tensor"):
        sim.relu(empty)


class _RotaryPairs(torch.nn.Module):
    """diffusers' RoPE on [B, H, S, D] queries: pairs (d/2, 2) rotated (Flux, HunyuanVideo) and halves (2, d/2)."""

    def __init__(self):
        super().__init__()
        self.q = torch.nn.Linear(64, 64)

    def forward(self, x, cos, sin):
        from diffusers.models.embeddings import apply_rotary_emb

        q = self.q(x).reshape(1, 16, 2, 32).transpose(1, 2)
        pairs = apply_rotary_emb(q, (cos, sin), use_real=True, use_real_unbind_dim=-1)
        halves = apply_rotary_emb(q, (cos, sin), use_real=True, use_real_unbind_dim=-2)
        return pairs, halves * 0.5


def test_rotary_pair_maps_become_matmuls(pcc_log):
    """RoPE's pair rotation reshapes the head dim into (16, 2): on device every such tensor pads its last dim of
    1 or 2 to a 32-wide tile. The rotation is a linear map of the head dim, so it becomes q @ M (M constant,
    entries 0 and +-1, exact) and no tensor of last dim < 32 is left."""
    inputs = {"x": torch.randn(1, 16, 64), "cos": torch.randn(16, 32), "sin": torch.randn(16, 32)}
    graph = run_passes(capture(_RotaryPairs().eval(), inputs), verify_inputs=inputs)
    narrow = [n.name for n in graph.op_nodes() if n.meta["val"].dim() and n.meta["val"].shape[-1] < 16]
    assert not narrow
    import meshdit

    program = meshdit.lower(_RotaryPairs().eval(), "1x2 tp2@1", inputs)
    for result in program.pcc_report():
        pcc_log("rotary pairs as matmuls", "1x2 tp2@1", result)
        assert result.pcc >= 0.9999


class _PairRotary(torch.nn.Module):
    """RoPE as a complex product on channel pairs without complex numbers. "interleaved" is Mochi's: even and odd
    channels rotated separately (strided slices times tables), then interleaved back with stack(-1) + flatten;
    "halves" pairs channel i with channel i + d/2 and concatenates the results; "swapped" puts the two results back
    in each other's places, which is not a rotation of x and must be left as it is."""

    def __init__(self, layout="interleaved"):
        super().__init__()
        self.q = torch.nn.Linear(64, 64)
        self.layout = layout

    def forward(self, x, cos, sin):
        q = self.q(x).reshape(1, 16, 2, 32)
        if self.layout == "halves":
            even, odd = q[..., :16], q[..., 16:]
        else:
            even, odd = q[..., 0::2], q[..., 1::2]
        real, imag = even * cos - odd * sin, cos * odd + sin * even
        if self.layout == "halves":
            rotated = torch.cat([real, imag], dim=-1)
        else:
            pair = [imag, real] if self.layout == "swapped" else [real, imag]
            rotated = torch.stack(pair, dim=-1).flatten(-2)
        return rotated.transpose(1, 2)


@pytest.mark.parametrize("layout", ["interleaved", "halves", "swapped"])
def test_pair_product_becomes_one_rotation(layout, pcc_log):
    """x * C' + (x @ T) * S' replaces the nine ops (passes/pair_products.py); with runtime tables, C' and S' are
    the tables' own pairs expansion (a matmul each, made once per forward, not per block)."""
    inputs = {"x": torch.randn(1, 16, 64), "cos": torch.randn(16, 2, 16), "sin": torch.randn(16, 2, 16)}
    graph = run_passes(capture(_PairRotary(layout).eval(), inputs), verify_inputs=inputs)
    targets = [n.target for n in graph.op_nodes()]
    aten = torch.ops.aten
    narrow = [n.name for n in graph.op_nodes() if n.meta["val"].dim() and n.meta["val"].shape[-1] < 16]
    assert not narrow
    rotations = [n for n in graph.op_nodes() if n.target is aten.matmul.default and n.args[0].op != "placeholder"]
    if layout == "swapped":
        assert aten.sub.Tensor in targets  # left as the model wrote it (pairs.py still makes its interleave a matmul)
        return
    assert len(rotations) == 1 and aten.sub.Tensor not in targets
    assert targets.count(aten.mul.Tensor) == 2 and targets.count(aten.add.Tensor) == 1
    import meshdit

    program = meshdit.lower(_PairRotary(layout).eval(), "1x2 tp2@1", inputs)
    for result in program.pcc_report():
        pcc_log(f"pair rotary ({layout}) as one rotation", "1x2 tp2@1", result)
        assert result.pcc >= 0.9999


class _SlidingWindowFlex(torch.nn.Module):
    """flex_attention with a block mask from a mask function (a sliding window), as AnyFlow-FAR builds its causal
    chunk mask."""

    def __init__(self):
        super().__init__()
        self.q, self.out = torch.nn.Linear(32, 32), torch.nn.Linear(32, 32)

    def forward(self, x):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        mask = create_block_mask(lambda b, h, q, k: (q - k).abs() <= 40, 1, None, 128, 128, device="cpu")
        heads = self.q(x).reshape(1, 128, 2, 16).transpose(1, 2)
        return self.out(flex_attention(heads, heads, heads, block_mask=mask).transpose(1, 2).reshape(1, 128, 32))


@pytest.mark.parametrize("mesh", ["1x1", "1x2 tp2@1"])
def test_flex_attention_becomes_sdpa_with_its_dense_mask(mesh, pcc_log):
    import meshdit

    program = meshdit.lower(_SlidingWindowFlex().eval(), mesh, {"x": torch.randn(1, 128, 32)})
    targets = {n.target for n in program.graph.op_nodes()}
    assert torch.ops.aten.scaled_dot_product_attention.default in targets
    assert program.coverage()["host"] == {}
    for result in program.pcc_report():
        pcc_log("flex attention (sliding window)", mesh, result)
        assert result.pcc >= 0.9999


class RegistersBeforeImage(torch.nn.Module):
    """Learned register tokens concatenated in front of the image tokens, then joint attention with the prompt and a
    one-token stream behind it (Motif-Image's layout, in miniature), two blocks deep."""

    def __init__(self):
        super().__init__()
        self.registers = torch.nn.Parameter(torch.randn(1, 4, 32))
        self.patch = torch.nn.Linear(8, 32)
        self.qkv = torch.nn.ModuleList(torch.nn.Linear(32, 96) for _ in range(2))
        self.qkv_c = torch.nn.ModuleList(torch.nn.Linear(32, 96) for _ in range(2))

    def forward(self, x, prompt, token):
        image = torch.cat([self.registers.expand(x.shape[0], -1, -1), self.patch(x)], dim=1)
        c = torch.cat([prompt, token[:, None]], dim=1)
        for qkv, qkv_c in zip(self.qkv, self.qkv_c):
            q, k, v = (t.unflatten(-1, (2, 16)).transpose(1, 2) for t in qkv(image).chunk(3, -1))
            q_c, k_c, v_c = (t.unflatten(-1, (2, 16)).transpose(1, 2) for t in qkv_c(c).chunk(3, -1))
            out = torch.nn.functional.scaled_dot_product_attention(
                torch.cat([q, q_c], 2), torch.cat([k, k_c], 2), torch.cat([v, v_c], 2)).transpose(1, 2).flatten(2)
            image, c = image + out[:, :image.shape[1]], c + out[:, image.shape[1]:]
        return (image[:, 4:],)


def test_learned_tokens_in_front_of_the_image_join_the_joint_stream():
    """The register tokens hold no image tokens: each joint attention's main stream is the 64 image tokens alone (the
    learned 4 go with the prompt and the one-token stream), in every block, so sequence parallelism shards the image
    from its projection on; the value is unchanged (run_passes verifies every pass). The prompt and the token behind
    it are one stream, so their cat stays: split, every op would run on each part padded to whole tiles."""
    import meshdit

    torch.manual_seed(0)
    model = RegistersBeforeImage().eval()
    inputs = {"x": torch.randn(1, 64, 8), "prompt": torch.randn(1, 11, 32), "token": torch.randn(1, 32)}
    graph = run_passes(capture(model, inputs), verify_inputs=inputs)
    joint = [n for n in graph.op_nodes() if n.target is ops.joint_sdpa]
    assert [(n.args[0].meta["val"].shape[-2], n.args[3].meta["val"].shape[-2]) for n in joint] == [(64, 16)] * 2
    # the prompt and its one token are one stream: joined once, each block's ops run on the 12 tokens together
    linears = [n for n in graph.op_nodes() if n.target is aten.linear.default]
    # (the first block's projection of the registers is a constant, folded)
    assert sorted(n.args[0].meta["val"].shape[-2] for n in linears) == [4, 12, 12, 64, 64, 64]
    program = meshdit.lower(model, "1x2 sp2@1", inputs)
    assert program.pcc_report()[0].pcc >= 0.9999
    origins = program.graph.sharding.sp_origins
    nodes = {node.name: node for node in program.graph.gm.graph.nodes}
    assert [nodes[name].meta["val"].shape[dim] for name, dim in origins] == [64]


def test_a_size_one_dim_keeps_its_place_through_a_reshape():
    """[1, 1, 64] -> [1, 1, 4, 16] (a one-token stream of batch 1): dim 1 maps to dim 1, not to the batch dim."""
    from meshdit.ir.graph import reshape_dim_map

    assert reshape_dim_map((1, 1, 64), (1, 1, 4, 16), 1) == 1
    assert reshape_dim_map((1, 1, 64), (1, 1, 4, 16), 0) == 0
    assert reshape_dim_map((2, 8, 64), (2, 8, 4, 16), 1) == 1 and reshape_dim_map((2, 8, 64), (16, 64), 1) is None


def test_adaln_modulation_through_an_unsqueeze():
    """silu(emb) -> linear -> [:, None] -> chunk(6, -1) (Motif's adaLN) is an adaLN modulation like SD3's: its linear
    is column-parallel under tp (its output gathered), not a whole weight on every device."""
    class Modulated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(16, 6 * 32)

        def forward(self, x, emb):
            a, b, c, d, e, f = self.linear(torch.nn.functional.silu(emb)).unsqueeze(1).chunk(6, dim=-1)
            y = torch.nn.functional.layer_norm(x, (32,)) * (1 + a) + b
            return (y * c + d * e + f,)

    inputs = {"x": torch.randn(1, 8, 32), "emb": torch.randn(1, 16)}
    graph = run_passes(capture(Modulated().eval(), inputs), verify_inputs=inputs)
    assert [p.info["chunks"] for p in graph.patterns if p.kind == "adaln_modulation"] == [6]


class TableCutLikeItsStream(torch.nn.Module):
    """Clean-latent tokens (an input, prompt-side) in front of the image tokens, multiplied by a table made of two
    prompt-side parts cut at the same place (FramePack's RoPE rows for its clean latents and its image)."""

    def __init__(self):
        super().__init__()
        self.proj, self.clean = torch.nn.Linear(32, 32), torch.nn.Linear(8, 32)
        self.qkv = torch.nn.Linear(32, 96)

    def forward(self, x, clean, pos_clean, pos_x):
        table = torch.cat([pos_clean.sin(), pos_x.sin()], 0)  # [80, 32] rows, one per token
        h = torch.cat([self.clean(clean), self.proj(x)], 1) * table.reshape(1, 80, 32)
        q, k, v = (t.unflatten(-1, (2, 16)).transpose(1, 2) for t in self.qkv(h).chunk(3, -1))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return (out[:, 16:],)


def test_a_table_cut_like_a_mixed_stream_is_not_regrouped(monkeypatch):
    """The table's parts are both prompt-side, but the stream it multiplies mixes prompt-side and latent tokens at the
    same cut: kept whole, the table would be sliced again for each part of the stream. Cut alike, it is pushed apart
    like the stream, and regrouping adds no node."""
    import meshdit.passes.streams as streams

    torch.manual_seed(0)
    inputs = {"x": torch.randn(1, 64, 32), "clean": torch.randn(1, 16, 8), "pos_clean": torch.randn(16, 32),
              "pos_x": torch.randn(64, 32)}
    grouped = run_passes(capture(TableCutLikeItsStream().eval(), inputs), verify_inputs=inputs)
    monkeypatch.setattr(streams, "group_same_streams", lambda mg: None)
    apart = run_passes(capture(TableCutLikeItsStream().eval(), inputs), verify_inputs=inputs)
    assert len(grouped.op_nodes()) == len(apart.op_nodes())
    assert not any(n.meta.get(streams.KEEP) for n in grouped.op_nodes())


class SharedPaddedHeads(torch.nn.Module):
    """Learned tokens scaled by an input in front of the image, one attention over both with 3 heads: under tp2 the
    heads are padded to 4, each linear's weight once per token stream that reads it, and the learned tokens' q/k/v
    in the first block of a model like this are constants when nothing scales them."""

    def __init__(self):
        super().__init__()
        self.registers = torch.nn.Parameter(torch.randn(1, 4, 48))
        self.proj, self.out = torch.nn.Linear(48, 48), torch.nn.Linear(48, 48)
        self.q, self.k, self.v = (torch.nn.Linear(48, 48) for _ in range(3))

    def forward(self, x, s=None):
        tokens = self.registers.expand(x.shape[0], -1, -1)
        h = torch.cat([tokens * s[:, None, None] if s is not None else tokens, self.proj(x)], 1)
        q, k, v = (lin(h).unflatten(-1, (3, 16)).transpose(1, 2) for lin in (self.q, self.k, self.v))
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return (self.out(o)[:, 4:],)


@pytest.mark.parametrize("scaled", [True, False])
def test_a_weight_two_streams_share_is_padded_once(scaled, pcc_log):
    """Padding the heads pads each linear's weight; the learned tokens and the image are two streams through the same
    q/k/v linears, so the padded weight is one constant (fold_constants reads an identical recipe computation's
    constant), uploaded once. Unscaled, the learned tokens' q/k/v are constants that the attention reads as weights
    (they were read as computed values, which the device does not have)."""
    import meshdit

    torch.manual_seed(0)
    inputs = {"x": torch.randn(1, 64, 48), "s": torch.randn(1) if scaled else None}
    inputs = {k: v for k, v in inputs.items() if v is not None}
    program = meshdit.lower(SharedPaddedHeads().eval(), "1x2 tp2@1", inputs)
    weights = list(program.ir.weights.values()) if isinstance(program.ir.weights, dict) else program.ir.weights
    constants = [w.constant for w in weights]
    assert sum(c.startswith("q.weight") for c in constants) == 1
    assert len(constants) == len(set(constants))
    result = program.pcc_report()[0]
    pcc_log(f"shared padded heads ({'scaled' if scaled else 'constant'} tokens)", "1x2 tp2@1", result)
    assert result.pcc >= 0.9999


class NumbersOnChunks(torch.nn.Module):
    """A modulation linear's chunks with numbers added: 1 + a and b - 2 fold into its bias; c + 1 does not (c is also
    read as it is), nor does the number on columns another slice reads too (y[..., 100:] overlaps the chunk d)."""

    def __init__(self):
        super().__init__()
        self.ada = torch.nn.Linear(16, 4 * 32)

    def forward(self, x, emb):
        y = self.ada(torch.nn.functional.silu(emb))
        a, b, c, d = y.unsqueeze(1).chunk(4, dim=-1)
        out = torch.nn.functional.layer_norm(x, (32,)) * (1 + a) + (b - 2) + (c + 1) * c + (d + 3)
        return (out, y[..., 100:].sum())


def test_numbers_added_to_a_linears_chunks_go_into_its_bias():
    from meshdit.passes.bias_numbers import fold_numbers_into_bias

    torch.manual_seed(0)
    inputs = {"x": torch.randn(1, 8, 32), "emb": torch.randn(1, 16)}
    graph = run_passes(capture(NumbersOnChunks().eval(), inputs), verify_inputs=inputs)
    assert graph.gm.meta["pass_stats"]["fold_numbers_into_bias"]["changed"] == 2
    numbers = [n.args for n in graph.op_nodes() if n.target in (aten.add.Tensor, aten.sub.Tensor) and
               any(isinstance(a, (int, float)) for a in n.args)]
    assert sorted(a[1] for a in numbers) == [1, 3]  # c + 1 and d + 3 stay
    assert fold_numbers_into_bias(graph) == 0  # nothing left to fold


@pytest.mark.parametrize("name", ["flux-tiny", "sd3-tiny", "mochi-tiny"])
def test_stream_oracle_remembers_what_a_fresh_walk_finds(name):
    """StreamOracle keeps its answers so a later block's walk stops at an earlier block's queries (ir/tokens.py):
    asked in graph order, every answer equals a fresh walk's from the graph's inputs."""
    from meshdit.ir.tokens import StreamOracle
    graph = _passes(name)
    shared = StreamOracle(graph)
    asked = [(node, i) for node in graph.gm.graph.nodes if node.target is ops.joint_sdpa for i in (0, 3)]
    assert asked
    for node, i in asked:
        assert shared.is_main(node.args[i], 2) == StreamOracle(graph).is_main(node.args[i], 2)
    assert {shared.is_main(node.args[0], 2) for node, _ in asked} == {True}  # the image / video stream
    # the prompt: also where Mochi pads each prompt's attention output back to the full prompt length (a constant
    # pad's other positions are its input's)
    assert {shared.is_main(node.args[3], 2) for node, _ in asked} == {False}
    assert not [note for note in graph.notes if "neither stream alone" in note]


class _CountedRouting(torch.nn.Module):
    """A mixture-of-experts style count of routed tokens read with .numpy() (HiDream's moe_infer): torch.export
    refuses it, so capture traces the example values, whose meta values fix the count's data-dependent shape."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, x):
        counts = self.proj(x).argmax(-1).flatten().bincount()
        used = int(counts.cpu().numpy().astype(bool).sum())
        return x * used


def test_traced_capture_does_not_reuse_data_dependent_shapes():
    """The specialiser reuses torch.export's meta values (concrete only where no value decides a shape), never a
    trace's: there a bincount of runtime values would go through with the example's shape."""
    captured = capture(_CountedRouting().eval(), {"x": torch.randn(1, 16, 8)})
    assert captured.method != "torch.export"
    with pytest.raises(SpecializationError, match="bincount"):
        run_passes(captured)


def test_each_constant_value_gets_its_own_placeholder():
    """The specialiser kept constant placeholders by id() of their abstract value: a folded value nothing else held
    (the positions a static mask selects) was freed, a later constant allocated at its address got its placeholder,
    and _FixedPositions' index_put read the wrong table now and then. Keyed by the value itself, it stays alive."""
    from meshdit.passes.specialize import Val, _Specializer

    spec = _Specializer(capture(_CountedRouting().eval(), {"x": torch.randn(1, 4, 8)}), set(), [], {})
    table, other = torch.zeros(2), torch.ones(3)
    first = Val("const", table, table)
    placeholder, address = spec.const_node(first, "first"), id(first)
    del first
    later = [Val("const", other, other) for _ in range(50)]  # the allocator hands a freed address out again
    assert all(spec.const_node(v, "later") is not placeholder for v in later)
    assert all(id(v) != address for v in later)
