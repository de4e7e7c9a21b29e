"""Tiny SD3, Flux and Mochi at 1x1: PCC against the torch module at each dtype (figures printed at the end); the
Motif DiT (model_zoo/motif.py) as a module and lowered."""

import warnings

import pytest
import torch

import meshdit
from conftest import TINY, lowered, tiny_inputs, tiny_model
from meshdit import model_zoo
from meshdit.ir.graph import shape_of

CASES = [("fp32", None), ("bf16", None), ("bf16", "bfp8")]


@pytest.mark.parametrize("dtype, weight_dtype", CASES, ids=["fp32", "bf16", "bf16-bfp8"])
@pytest.mark.parametrize("name", TINY)
def test_pcc_at_1x1(name, dtype, weight_dtype, pcc_log):
    program = lowered(name, dtype, weight_dtype)
    results = program.pcc_report()
    for result in results:
        pcc_log(name, f"1x1 act {dtype} weights {weight_dtype or dtype}", result)
    assert results and all(r.ok for r in results), [str(r) for r in results]
    # the threshold each output was checked against, per DEVELOPERS.md: fp32 0.9999, bf16 0.999, bfp8 weights 0.99
    expected = 0.99 if weight_dtype == "bfp8" else {"fp32": 0.9999, "bf16": 0.999}[dtype]
    assert all(r.threshold == expected for r in results), [str(r) for r in results]


@pytest.mark.parametrize("name", TINY)
def test_no_host_fallback_in_seed_models(name):
    assert lowered(name).coverage()["host"] == {}


# --- Motif-Image-6B: not in diffusers, so its transformer is model_zoo/motif.py, checked here as a module too -----

def _motif_reference_keys(config) -> dict:
    """Key -> shape of the DiT state dict as the published reference declares it (tt-metal's vendored
    reference/motif_image/modeling_dit.py, MotifDiT), plus "pos_embed", which the released checkpoint stores."""
    d, m, f = config["hidden_dim"], config["modulation_dim"], config["mlp_hidden_dim"]
    h, t, p = config["num_attention_heads"], config["time_embed_dim"], config["pooled_text_dim"]
    c, patch, pixels = config["latent_channels"], config["patch_size"], config["vae_compression"] * config["patch_size"]
    grid = (config["height"] // pixels) * (config["width"] // pixels)
    keys = {"text_cond.projection.weight": (d, config["text_dim"]), "text_cond.projection.bias": (d,),
            "patching.projection_SD3.weight": (d, c, patch, patch), "patching.projection_SD3.bias": (d,),
            "time_emb.time_emb.linear_1.weight": (4 * t, t), "time_emb.time_emb.linear_1.bias": (4 * t,),
            "time_emb.time_emb.linear_2.weight": (m, 4 * t), "time_emb.time_emb.linear_2.bias": (m,),
            "time_emb.pooled_text_emb.linear_1.weight": (4 * p, p), "time_emb.pooled_text_emb.linear_1.bias": (4 * p,),
            "time_emb.pooled_text_emb.linear_2.weight": (m, 4 * p), "time_emb.pooled_text_emb.linear_2.bias": (m,),
            "final_modulation.weight": (2 * d, m), "final_modulation.bias": (2 * d,),
            "final_linear_SD3.weight": (c * patch * patch, d), "final_linear_SD3.bias": (c * patch * patch,),
            "register_tokens": (1, config["register_token_num"], d), "t_token_proj.weight": (d, m),
            "t_token_proj.bias": (d,), "pos_embed": (grid, d)}
    for i in range(config["num_layers"]):
        b = f"mmdit_blocks.{i}."
        for s in "cx":
            keys.update({f"{b}affine_params_{s}.projection.weight": (6 * d, m), f"{b}affine_params_{s}.projection.bias":
                         (6 * d,), f"{b}linear_1_{s}.weight": (d, d), f"{b}linear_1_{s}.bias": (d,),
                         f"{b}mlp_3_{s}.gate_proj.weight": (f, d), f"{b}mlp_3_{s}.gate_proj.bias": (f,),
                         f"{b}mlp_3_{s}.down_proj.weight": (d, f), f"{b}mlp_3_{s}.down_proj.bias": (d,)})
        for proj in ("q", "k", "v", "o", "add_q", "add_k", "add_v", "add_o"):
            keys[f"{b}attn.{proj}_proj.weight"] = (d, d)
        for norm in ("q_norm_x", "k_norm_x", "q_norm_c", "k_norm_c"):
            keys[f"{b}attn.{norm}.weight"] = (d // h,)
        keys[f"{b}attn.q_scale"] = (h,)
    return keys


@pytest.mark.parametrize("name", ["motif-tiny", "motif-tiny-tt", "motif-image-6b"])
def test_motif_state_dict_has_the_reference_names(name):
    model = model_zoo.build(name, device="meta")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _motif_reference_keys(model.config)  # the full config, defaults included
    if name == "motif-image-6b":  # "6B": 5.92e9 parameters
        assert 5.9e9 < sum(p.numel() for p in model.parameters()) < 6.0e9


def test_motif_module_is_deterministic_and_shaped():
    model, inputs = tiny_model("motif-tiny"), tiny_inputs("motif-tiny")
    with torch.no_grad():
        first = model(**inputs).sample
        again = model(**inputs, return_dict=False)[0]
    assert torch.equal(first, again) and first.shape == inputs["hidden_states"].shape
    assert torch.isfinite(first).all() and first.std() > 0.1
    assert model.config.num_layers == 2 and model.dtype == torch.float32 and model.device.type == "cpu"
    with pytest.raises(ValueError, match="position table is fixed"):
        model(**dict(inputs, hidden_states=torch.randn(1, 4, 8, 8)))


def test_motif_block_output_skips_the_attention_branch():
    """Motif's MLP residual adds to the block input: with the MLP's output projection zeroed, a block returns its
    inputs unchanged, whatever attention computed (an SD3 block would return x + gate * attention)."""
    block = model_zoo.build("motif-tiny").mmdit_blocks[0]
    with torch.no_grad():
        for mlp in (block.mlp_3_x, block.mlp_3_c):
            mlp.down_proj.weight.zero_()
            mlp.down_proj.bias.zero_()
        x, c, emb = torch.randn(1, 68, 64), torch.randn(1, 32, 64), torch.randn(1, 96)
        out_x, out_c = block(x, c, emb)
    assert torch.equal(out_x, x) and torch.equal(out_c, c)


def test_motif_position_table_and_prompt_layout():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    from meshdit.model_zoo.motif import MotifImageTransformer2DModel, sincos_table

    # the same fixed 2-D sin-cos scheme as diffusers' (an independent implementation), on a non-square grid too
    for dim, rows, cols, base in [(1920, 64, 64, 64), (192, 14, 18, 16)]:
        expected = get_2d_sincos_pos_embed(dim, (rows, cols), base_size=base, interpolation_scale=1.0,
                                           output_type="pt").float()
        assert torch.allclose(sincos_table(dim, rows, cols, base), expected, atol=1e-6)
    t5, clip_l, clip_g = torch.randn(2, 256, 4096), torch.randn(2, 77, 768), torch.randn(2, 77, 1280)
    prompt = MotifImageTransformer2DModel.join_text_embeddings(t5, clip_l, clip_g)
    assert prompt.shape == (2, 333, 4096)
    assert torch.equal(prompt[:, :77, :768], clip_l) and torch.equal(prompt[:, :77, 768:2048], clip_g)
    assert not prompt[:, :77, 2048:].any() and torch.equal(prompt[:, 77:], t5)


def test_motif_checkpoints_load(tmp_path):
    """save_pretrained writes the diffusers folder layout; it and a bare safetensors file load back through the zoo
    with identical outputs. A state dict without "pos_embed" (the reference module's own, which keeps the fixed table
    as a plain attribute) loads strictly too."""
    from safetensors.torch import save_file

    real = model_zoo.build("motif-tiny", seed=3)
    real.save_pretrained(tmp_path / "folder")
    assert {p.name for p in (tmp_path / "folder").iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    save_file({k: v.contiguous() for k, v in real.state_dict().items()}, str(tmp_path / "w.safetensors"))
    inputs = tiny_inputs("motif-tiny")
    with torch.no_grad():
        expected = real(**inputs, return_dict=False)[0]
        for source in (tmp_path / "folder", tmp_path / "w.safetensors"):
            loaded = model_zoo.from_checkpoint("motif-tiny", str(source))
            assert type(loaded) is type(real) and torch.equal(loaded(**inputs, return_dict=False)[0], expected)
        fresh = model_zoo.build("motif-tiny", seed=4)
        fresh.load_state_dict({k: v for k, v in real.state_dict().items() if k != "pos_embed"}, strict=True)
        assert torch.equal(fresh(**inputs, return_dict=False)[0], expected)


@pytest.mark.parametrize("mesh", ["1x1", "2x4", "4x8"])
def test_motif_lowers_at_fp32(mesh, pcc_log):
    """motif-tiny lowered on one chip and in the Motif seed's parallel configs (2x4 cfg2 sp2 tp2, 4x8 cfg2 sp4 tp4):
    PCC against the module. Under sp the image tokens are sharded from the patch embedding on, the register tokens
    (learned, prepended to them) ride with the prompt in the joint stream: no gather of the sequence between blocks."""
    config = model_zoo.seed_mesh("motif-tiny", mesh)
    inputs = model_zoo.example_inputs("motif-tiny", batch=config.cfg.factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = meshdit.lower(tiny_model("motif-tiny"), config, inputs)
    results = program.pcc_report()
    for result in results:
        pcc_log("motif-tiny", f"{config} fp32", result)
    assert results and all(r.ok and r.threshold == 0.9999 for r in results), [str(r) for r in results]
    assert program.coverage()["host"] == {}
    if config.sp.factor > 1:
        nodes = {node.name: node for node in program.graph.gm.graph.nodes}
        origins = program.graph.sharding.sp_origins
        assert [shape_of(nodes[name])[dim] for name, dim in origins] == [64]  # 8 x 8 patches, no registers
        sp_gathers = [op for op in program.ir.ops if op.fn.endswith("all_gather_async")
                      and op.kwargs["cluster_axis"] == config.sp.axis]
        assert len(sp_gathers) == 1  # only the output's
