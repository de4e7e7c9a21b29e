"""Model zoo: the only place in meshdit that knows model names.

Each entry gives a diffusers class (or one defined here, for models diffusers does not ship: model_zoo/motif.py), a
config, example inputs, the inputs that are static (position ids), and the seeds' parallel configs. Weights are
random and seeded (nothing is downloaded); full-size entries are meant to be built on the meta device for planning,
and real checkpoints load from safetensors files or diffusers folders.

    model = model_zoo.build("sd3-tiny")                     # seeded random weights, eval mode
    model = model_zoo.build("sd35-large", device="meta")    # 8B parameters, nothing allocated
    inputs = model_zoo.example_inputs("sd3-tiny")
    model = model_zoo.from_checkpoint("sd3-tiny", "path/to/diffusion_pytorch_model.safetensors")
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str  # sd3 | flux | mochi | motif
    class_name: str  # diffusers class, or "module.Class" for a class in model_zoo/module.py
    config: dict
    inputs: dict  # input name -> (shape, dtype) for batch 1; see example_inputs
    static_inputs: tuple = ()
    parallel: dict = field(default_factory=dict)  # mesh "RxC" -> seeds' parallel tuples
    description: str = ""
    timestep_max: float = 1000.0  # the range the model's pipeline passes timesteps in


SD3_PARALLEL = {"2x4": ((2, 1), (2, 0), (2, 1)), "4x8": ((2, 1), (4, 0), (4, 1))}
FLUX_PARALLEL = {"2x4": ((2, 0), (4, 1)), "4x8": ((4, 0), (8, 1))}
MOCHI_PARALLEL = {"2x4": ((2, 0), (4, 1)), "4x8": ((8, 1), (4, 0))}
# the Motif seed's examples, ((cfg, axis), (sp, axis), (tp, axis)): QuietBox cfg2 sp2 tp2, Galaxy cfg2 sp4 tp4
MOTIF_PARALLEL = {"2x4": ((2, 1), (2, 0), (2, 1)), "4x8": ((2, 1), (4, 0), (4, 1))}
MOTIF_CLASS = "motif.MotifImageTransformer2DModel"

ENTRIES = {
    "sd3-tiny": ZooEntry(
        "sd3-tiny", "sd3", "SD3Transformer2DModel",
        dict(sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=4,
             joint_attention_dim=32, caption_projection_dim=64, pooled_projection_dim=32, out_channels=4,
             pos_embed_max_size=16, qk_norm="rms_norm"),
        {"hidden_states": ((1, 4, 16, 16), torch.float32), "encoder_hidden_states": ((1, 32, 32), torch.float32),
         "pooled_projections": ((1, 32), torch.float32), "timestep": ((1,), torch.float32)},
        parallel=SD3_PARALLEL, description="SD3.5-Large-shaped MMDiT, 2 joint blocks, 4 heads x 16"),
    "sd35-large": ZooEntry(
        "sd35-large", "sd3", "SD3Transformer2DModel",
        dict(sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
             num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
             pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, qk_norm="rms_norm"),
        {"hidden_states": ((1, 16, 128, 128), torch.float32),
         "encoder_hidden_states": ((1, 333, 4096), torch.float32),
         "pooled_projections": ((1, 2048), torch.float32), "timestep": ((1,), torch.float32)},
        parallel=SD3_PARALLEL, description="Stable Diffusion 3.5 Large transformer, 1024x1024 image"),
    "flux-tiny": ZooEntry(
        "flux-tiny", "flux", "FluxTransformer2DModel",
        dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
             num_attention_heads=8, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
             axes_dims_rope=(4, 6, 6)),
        {"hidden_states": ((1, 64, 16), torch.float32), "encoder_hidden_states": ((1, 32, 32), torch.float32),
         "pooled_projections": ((1, 32), torch.float32), "timestep": ((1,), torch.float32),
         "img_ids": ((64, 3), torch.float32), "txt_ids": ((32, 3), torch.float32),
         "guidance": ((1,), torch.float32)},
        static_inputs=("img_ids", "txt_ids"), parallel=FLUX_PARALLEL, timestep_max=1.0,
        description="Flux.1-shaped DiT, 2 double + 2 single blocks, 8 heads x 16"),
    "flux1-dev": ZooEntry(
        "flux1-dev", "flux", "FluxTransformer2DModel",
        dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
             num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
             axes_dims_rope=(16, 56, 56)),
        {"hidden_states": ((1, 4096, 64), torch.float32), "encoder_hidden_states": ((1, 512, 4096), torch.float32),
         "pooled_projections": ((1, 768), torch.float32), "timestep": ((1,), torch.float32),
         "img_ids": ((4096, 3), torch.float32), "txt_ids": ((512, 3), torch.float32),
         "guidance": ((1,), torch.float32)},
        static_inputs=("img_ids", "txt_ids"), parallel=FLUX_PARALLEL, timestep_max=1.0,
        description="Flux.1-dev transformer, 1024x1024 image"),
    "mochi-tiny": ZooEntry(
        "mochi-tiny", "mochi", "MochiTransformer3DModel",
        # hidden 96 and prompt width 48 make the SwiGLU widths (8 * dim // 3 = 256, 128) divide by tp 8, as
        # Mochi-1's 8192 and 4096 do
        dict(patch_size=2, num_attention_heads=4, attention_head_dim=24, num_layers=2, pooled_projection_dim=48,
             in_channels=4, text_embed_dim=32, time_embed_dim=32, max_sequence_length=32),
        {"hidden_states": ((1, 4, 2, 8, 8), torch.float32), "encoder_hidden_states": ((1, 32, 32), torch.float32),
         "timestep": ((1,), torch.int64), "encoder_attention_mask": ((1, 32), torch.bool)},
        parallel=MOCHI_PARALLEL, description="Mochi-1-shaped AsymmDiT, 2 blocks, 4 heads x 24"),
    "mochi1": ZooEntry(
        "mochi1", "mochi", "MochiTransformer3DModel",
        dict(patch_size=2, num_attention_heads=24, attention_head_dim=128, num_layers=48, pooled_projection_dim=1536,
             in_channels=12, text_embed_dim=4096, time_embed_dim=256, max_sequence_length=256),
        {"hidden_states": ((1, 12, 28, 60, 106), torch.float32),
         "encoder_hidden_states": ((1, 256, 4096), torch.float32), "timestep": ((1,), torch.int64),
         "encoder_attention_mask": ((1, 256), torch.bool)},
        parallel=MOCHI_PARALLEL, description="Mochi-1 preview transformer, 848x480, 168 frames (28 latent frames)"),
    "motif-tiny": ZooEntry(
        # modulation width (96) differs from the hidden width (64), as Motif's 4096 does from 1920; 31 prompt tokens
        # and the time token make 32
        "motif-tiny", "motif", MOTIF_CLASS,
        dict(num_layers=2, hidden_dim=64, num_attention_heads=4, mlp_hidden_dim=256, modulation_dim=96,
             time_embed_dim=32, pooled_text_dim=32, text_dim=32, latent_channels=4, height=128, width=128,
             pos_emb_size=8),
        {"hidden_states": ((1, 4, 16, 16), torch.float32), "encoder_hidden_states": ((1, 31, 32), torch.float32),
         "pooled_projections": ((1, 32), torch.float32), "timestep": ((1,), torch.float32)},
        parallel=MOTIF_PARALLEL, description="Motif-Image-6B-shaped MMDiT, 2 blocks, 4 heads x 16, 4 registers"),
    "motif-image-6b": ZooEntry(
        # the published config (motif_image.json); the prompt is CLIP-L|CLIP-G (77) then T5-XXL (256) tokens
        "motif-image-6b", "motif", MOTIF_CLASS,
        dict(num_layers=30, hidden_dim=1920, num_attention_heads=30, mlp_hidden_dim=7680, modulation_dim=4096,
             time_embed_dim=4096, pooled_text_dim=2048, text_dim=4096, latent_channels=16, patch_size=2,
             height=1024, width=1024, vae_compression=8, pos_emb_size=64, register_token_num=4),
        {"hidden_states": ((1, 16, 128, 128), torch.float32),
         "encoder_hidden_states": ((1, 333, 4096), torch.float32),
         "pooled_projections": ((1, 2048), torch.float32), "timestep": ((1,), torch.float32)},
        parallel=MOTIF_PARALLEL, description="Motif-Image-6B-Preview transformer, 1024x1024 image"),
}

# Tiny models shaped for the real ttnn library (the conformance harness): its attention kernels need head_dim a
# multiple of the 32-wide tile, and image/video token counts here split into whole tiles at the seeds' largest sp.
ENTRIES.update({
    "sd3-tiny-tt": ZooEntry(
        "sd3-tiny-tt", "sd3", "SD3Transformer2DModel",
        dict(ENTRIES["sd3-tiny"].config, sample_size=32, attention_head_dim=32, caption_projection_dim=128,
             pos_embed_max_size=32),
        dict(ENTRIES["sd3-tiny"].inputs, hidden_states=((1, 4, 32, 32), torch.float32)),
        parallel=SD3_PARALLEL, description="sd3-tiny with 4 heads x 32 and 256 image tokens"),
    "flux-tiny-tt": ZooEntry(
        "flux-tiny-tt", "flux", "FluxTransformer2DModel",
        dict(ENTRIES["flux-tiny"].config, attention_head_dim=32, axes_dims_rope=(8, 12, 12)),
        dict(ENTRIES["flux-tiny"].inputs, hidden_states=((1, 256, 16), torch.float32),
             img_ids=((256, 3), torch.float32)),
        static_inputs=("img_ids", "txt_ids"), parallel=FLUX_PARALLEL, timestep_max=1.0,
        description="flux-tiny with 8 heads x 32 and 256 image tokens"),
    "flux1-schnell": ZooEntry(
        # the distilled 4-step model: Flux.1-dev's transformer without the guidance embedding, and its pipeline's
        # 256 prompt tokens (max_sequence_length for schnell)
        "flux1-schnell", "flux", "FluxTransformer2DModel", dict(ENTRIES["flux1-dev"].config, guidance_embeds=False),
        {k: v for k, v in ENTRIES["flux1-dev"].inputs.items() if k != "guidance"} | {
            "encoder_hidden_states": ((1, 256, 4096), torch.float32), "txt_ids": ((256, 3), torch.float32)},
        static_inputs=("img_ids", "txt_ids"), parallel=FLUX_PARALLEL, timestep_max=1.0,
        description="Flux.1-schnell transformer, 1024x1024 image, 4 steps"),
    "flux-schnell-tiny-tt": ZooEntry(
        "flux-schnell-tiny-tt", "flux", "FluxTransformer2DModel",
        dict(ENTRIES["flux-tiny"].config, attention_head_dim=32, axes_dims_rope=(8, 12, 12), guidance_embeds=False),
        {k: v for k, v in ENTRIES["flux-tiny"].inputs.items() if k != "guidance"} | {
            "hidden_states": ((1, 256, 16), torch.float32), "img_ids": ((256, 3), torch.float32)},
        static_inputs=("img_ids", "txt_ids"), parallel=FLUX_PARALLEL, timestep_max=1.0,
        description="Flux.1-schnell-shaped (no guidance embedding), 8 heads x 32, 256 image tokens"),
    "mochi-tiny-tt": ZooEntry(
        "mochi-tiny-tt", "mochi", "MochiTransformer3DModel",
        # 6 heads x 32: hidden 192 gives SwiGLU width 512 (divides by tp 4 and 8); heads pad to 8 at tp 4. The
        # prompt pooling attention has 8 heads over text_embed_dim: 256 makes them 32 wide too
        dict(ENTRIES["mochi-tiny"].config, num_attention_heads=6, attention_head_dim=32, text_embed_dim=256),
        dict(ENTRIES["mochi-tiny"].inputs, hidden_states=((1, 4, 4, 16, 16), torch.float32),
             encoder_hidden_states=((1, 32, 256), torch.float32)),
        parallel=MOCHI_PARALLEL, description="mochi-tiny with 6 heads x 32 and 256 video tokens"),
    "motif-tiny-tt": ZooEntry(
        # 6 heads x 32 pad to 8 at tp 4 as Motif's 30 do to 32. The register tokens join the prompt's side of the
        # joint attention (they hold no image tokens), so 16 x 16 patches are 256 sequence-sharded tokens and
        # 4 registers + 27 prompt tokens + the time token make 32 joint ones
        "motif-tiny-tt", "motif", MOTIF_CLASS,
        dict(ENTRIES["motif-tiny"].config, hidden_dim=192, num_attention_heads=6, mlp_hidden_dim=768,
             modulation_dim=256, height=256, width=256, pos_emb_size=16),
        dict(ENTRIES["motif-tiny"].inputs, hidden_states=((1, 4, 32, 32), torch.float32),
             encoder_hidden_states=((1, 27, 32), torch.float32)),
        parallel=MOTIF_PARALLEL, description="motif-tiny with 6 heads x 32, 256 image and 32 joint tokens"),
})


def seed_mesh(name: str, mesh: str):
    """The MeshConfig for a mesh string: a bare mesh shape ("2x4") names the entry's seed parallel config for it;
    anything else is parsed as a mesh config ("2x4 sp4@1 ulysses2@0")."""
    from ..sharding.mesh_config import MeshConfig

    parallel = entry(name).parallel
    if mesh in parallel:
        return MeshConfig.from_tuples(tuple(int(d) for d in mesh.split("x")), parallel[mesh])
    return MeshConfig.parse(mesh)


def names() -> list:
    return sorted(ENTRIES)


def entry(name: str) -> ZooEntry:
    if name not in ENTRIES:
        raise KeyError(f"unknown model {name!r}; the zoo has {names()}")
    return ENTRIES[name]


def _model_class(e: ZooEntry):
    """The entry's class: "module.Class" is defined in this package (model_zoo/module.py), a bare name is a diffusers
    export."""
    if "." in e.class_name:
        module, name = e.class_name.rsplit(".", 1)
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    import diffusers

    return getattr(diffusers, e.class_name)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded random weights with unit-scale activations: matrices N(0, 1/fan_in), norm weights near 1, small biases.

    diffusers zero-initialises some layers (adaLN-Zero, output projections); a PCC test needs every layer live."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.device.type == "meta":
                continue
            if param.dim() >= 2:
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("bias"):
                param.copy_(0.02 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
    return model


def build(name: str, device: str = "cpu", seed: int = 0) -> torch.nn.Module:
    """The model with seeded random weights (device='meta': no weights allocated, for planning)."""
    e = entry(name)
    cls = _model_class(e)
    with torch.device(device):
        model = cls(**e.config)
    model.eval()
    if device != "meta":
        randomize_(model, seed)
    return model


def example_inputs(name: str, device: str = "cpu", seed: int = 0, batch: int = 1) -> dict:
    """Seeded example inputs for the model's forward (batch 1 per cfg branch by default)."""
    e = entry(name)
    gen = torch.Generator().manual_seed(seed + 1)
    inputs = {}
    for key, (shape, dtype) in e.inputs.items():
        shape = (batch,) + tuple(shape[1:]) if key not in e.static_inputs else tuple(shape)
        if device == "meta":
            inputs[key] = torch.empty(shape, dtype=dtype, device="meta")
        elif key in ("img_ids", "txt_ids"):
            inputs[key] = _position_ids(shape[0], key == "txt_ids")
        elif dtype == torch.bool:  # attention mask: a prompt of 3/4 of the maximum length
            mask = torch.zeros(shape, dtype=torch.bool)
            mask[..., : max(1, 3 * shape[-1] // 4)] = True
            inputs[key] = mask
        elif key == "timestep":
            inputs[key] = (torch.rand(shape, generator=gen) * e.timestep_max).to(dtype)
        elif key == "guidance":
            inputs[key] = torch.full(shape, 3.5)
        else:
            inputs[key] = torch.randn(shape, generator=gen, dtype=dtype)
    return inputs


def static_inputs(name: str) -> dict:
    """Real values of the entry's static inputs (position ids), also when planning on meta."""
    e = entry(name)
    return {k: v for k, v in example_inputs(name).items() if k in e.static_inputs}


def _position_ids(count: int, text: bool) -> torch.Tensor:
    """Flux position ids: zeros for text tokens, (0, row, col) on a square latent grid for image tokens."""
    ids = torch.zeros(count, 3)
    if not text:
        side = int(math.isqrt(count))
        rows = torch.arange(count) // side
        ids[:, 1], ids[:, 2] = rows.float(), (torch.arange(count) % side).float()
    return ids


def from_checkpoint(name: str, path: str) -> torch.nn.Module:
    """Build the model from its zoo config and load real weights: a .safetensors file or a diffusers folder."""
    e = entry(name)
    cls = _model_class(e)
    if os.path.isdir(path):
        return cls.from_pretrained(path).eval()
    from safetensors.torch import load_file

    with torch.device("meta"):
        model = cls(**e.config)
    state = load_file(path)
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise KeyError(f"checkpoint {path} does not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, assign=True)
    return model.eval()
