"""Motif-Image-6B's transformer (Motif DiT) in plain PyTorch: diffusers does not ship it.

Written from the published architecture (the torch reference vendored in tt-metal under
models/experimental/tt_dit/reference/motif_image/, read for its parameter names, shapes and order of operations),
so the DiT part of a real checkpoint (`substate(state, "dit")` of Motif-Technologies/Motif-Image-6B-Preview) loads
with identical keys. An MMDiT like SD3, with these differences:

* the prompt is one tensor: CLIP-L and CLIP-G hidden states joined on channels, zero-padded to T5's width and put in
  front of the T5 tokens (`join_text_embeddings`), projected to the hidden width; one time token (the time embedding
  projected) is appended to it;
* 4 learned register tokens go in front of the image tokens and are dropped after the last block;
* the image tokens get a fixed 2-D sin-cos position table;
* the modulation input is `modulation_dim` wide (4096, not the hidden 1920): the time MLP plus a pooled-text MLP;
* each stream has an extra Linear between its modulated norm and attention (`linear_1_x` / `linear_1_c`);
* attention q/k/v/o have no bias, q/k get a per-head RMS norm, and the prompt's queries a learned per-head scale;
* the MLP branch adds to the block *input*: the attention result only feeds the MLP (x + zeta * MLP(...));
* the MLP is Linear -> SiLU -> Linear; the output layer has no LayerNorm, just (1 + scale) * x + shift with scale and
  shift a Linear of the modulation vector itself (no SiLU before it).

    model = MotifImageTransformer2DModel()                # Motif-Image-6B, 1024 x 1024
    prompt = MotifImageTransformer2DModel.join_text_embeddings(t5, clip_l, clip_g)   # [B, 333, 4096]
    velocity = model(latents, prompt, pooled, timestep).sample                      # [B, 16, 128, 128]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

MODULATIONS = 6  # per stream and block: attention scale, shift, gate; MLP scale, shift, gate


def sincos_table(dim: int, rows: int, cols: int, base_size: int) -> torch.Tensor:
    """The fixed [rows * cols, dim] position table, row-major over the patch grid. Coordinates are stretched so the
    grid spans `base_size` units on each axis (the model was trained at a 64 x 64 grid with base 64); the first half of
    the channels encodes the column, the second half the row, each as [sin(pos * w), cos(pos * w)] over dim / 4
    frequencies w = 10000^(-k / (dim / 4))."""
    if dim % 4:
        raise ValueError(f"the sin-cos position table needs a hidden width divisible by 4, got {dim}")
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    row = torch.arange(rows, dtype=torch.float64) * (base_size / rows)
    col = torch.arange(cols, dtype=torch.float64) * (base_size / cols)
    row, col = (t.reshape(-1) for t in torch.meshgrid(row, col, indexing="ij"))

    def encode(pos):
        angles = pos[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(col), encode(row)], dim=1).float()


class TextTimeEmbedding(nn.Module):
    """The modulation vector: an MLP of the sinusoidal timestep plus an MLP of the pooled CLIP embedding."""

    def __init__(self, time_embed_dim: int, pooled_text_dim: int, modulation_dim: int):
        super().__init__()
        self.time_proj = Timesteps(time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_emb = TimestepEmbedding(time_embed_dim, 4 * time_embed_dim, out_dim=modulation_dim)
        self.pooled_text_emb = TimestepEmbedding(pooled_text_dim, 4 * pooled_text_dim, out_dim=modulation_dim)

    def forward(self, pooled: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        # Timesteps computes in float32; the MLP runs in the weights' dtype
        frequencies = self.time_proj(timestep).to(self.time_emb.linear_1.weight.dtype)
        return self.time_emb(frequencies) + self.pooled_text_emb(pooled)


class Modulation(nn.Module):
    """SiLU(emb) -> Linear -> six [B, 1, D] vectors in the order (alpha, beta, gamma, delta, epsilon, zeta)."""

    def __init__(self, modulation_dim: int, dim: int):
        super().__init__()
        self.projection = nn.Linear(modulation_dim, MODULATIONS * dim)

    def forward(self, emb: torch.Tensor):
        return self.projection(F.silu(emb)).unsqueeze(1).chunk(MODULATIONS, dim=-1)


class MLP(nn.Module):
    """Linear -> SiLU -> Linear (the reference names them gate_proj and down_proj; there is no gating)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden)
        self.down_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)))


class JointAttention(nn.Module):
    """One softmax attention over [image tokens, prompt tokens]; q/k RMS-normed per head; prompt queries scaled by a
    learned factor per head."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden width {dim} does not split into {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        for name in ("q_proj", "k_proj", "v_proj", "add_q_proj", "add_k_proj", "add_v_proj", "o_proj", "add_o_proj"):
            setattr(self, name, nn.Linear(dim, dim, bias=False))
        for name in ("q_norm_x", "k_norm_x", "q_norm_c", "k_norm_c"):
            setattr(self, name, nn.RMSNorm(self.head_dim, eps=1e-6))
        self.q_scale = nn.Parameter(torch.ones(heads))

    def _heads(self, x: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:
        """[B, L, D] -> [B, H, L, d], RMS-normed per head when a norm is given."""
        x = x.unflatten(-1, (self.heads, self.head_dim))
        return (x if norm is None else norm(x)).transpose(1, 2)

    def forward(self, x: torch.Tensor, c: torch.Tensor):
        q = self._heads(self.q_proj(x), self.q_norm_x)
        k, v = self._heads(self.k_proj(x), self.k_norm_x), self._heads(self.v_proj(x))
        q_c = self._heads(self.add_q_proj(c), self.q_norm_c) * self.q_scale[None, :, None, None]
        k_c, v_c = self._heads(self.add_k_proj(c), self.k_norm_c), self._heads(self.add_v_proj(c))
        out = F.scaled_dot_product_attention(torch.cat([q, q_c], 2), torch.cat([k, k_c], 2), torch.cat([v, v_c], 2))
        out = out.transpose(1, 2).flatten(2)
        image_tokens = x.shape[1]
        return self.o_proj(out[:, :image_tokens]), self.add_o_proj(out[:, image_tokens:])


class MotifBlock(nn.Module):
    """A joint block. Per stream s in (x: image, c: prompt), with its six modulation vectors:
        h = s + (1 + gamma) * attn(linear_1((1 + alpha) * LN(s) + beta))
        out = s + zeta * MLP(delta * LN(h) + epsilon)        (delta used as is, not 1 + delta)"""

    def __init__(self, dim: int, heads: int, mlp_dim: int, modulation_dim: int):
        super().__init__()
        self.affine_params_c = Modulation(modulation_dim, dim)
        self.affine_params_x = Modulation(modulation_dim, dim)
        self.norm_1_c = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm_1_x = nn.LayerNorm(dim, elementwise_affine=False)
        self.linear_1_c = nn.Linear(dim, dim)
        self.linear_1_x = nn.Linear(dim, dim)
        self.attn = JointAttention(dim, heads)
        self.norm_2_c = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm_2_x = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp_3_c = MLP(dim, mlp_dim)
        self.mlp_3_x = MLP(dim, mlp_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, emb: torch.Tensor):
        alpha_x, beta_x, gamma_x, delta_x, epsilon_x, zeta_x = self.affine_params_x(emb)
        alpha_c, beta_c, gamma_c, delta_c, epsilon_c, zeta_c = self.affine_params_c(emb)
        attn_x, attn_c = self.attn(self.linear_1_x((1 + alpha_x) * self.norm_1_x(x) + beta_x),
                                   self.linear_1_c((1 + alpha_c) * self.norm_1_c(c) + beta_c))
        h_x = x + (1 + gamma_x) * attn_x
        h_c = c + (1 + gamma_c) * attn_c
        x_out = x + zeta_x * self.mlp_3_x(delta_x * self.norm_2_x(h_x) + epsilon_x)
        c_out = c + zeta_c * self.mlp_3_c(delta_c * self.norm_2_c(h_c) + epsilon_c)
        return x_out, c_out


def _fill_pos_embed(model, state_dict, prefix, *args):
    """A state dict without the position table gets the one the model's config defines (it is fixed, not learned)."""
    if prefix + "pos_embed" not in state_dict:
        c = model.config
        state_dict[prefix + "pos_embed"] = sincos_table(c.hidden_dim, *model.grid, c.pos_emb_size)


class MotifImageTransformer2DModel(ModelMixin, ConfigMixin):
    """Motif DiT (the reference's `MotifDiT`), defaults = Motif-Image-6B-Preview at 1024 x 1024. The image size is
    part of the config (as in the reference) because the position table is fixed: `height` and `width` in pixels,
    `vae_compression` the VAE's downscale. `text_dim` (T5-XXL's 4096) and `latent_channels` (the SD3 VAE's 16) are
    constants in the reference, parameters here so tiny test models stay tiny."""

    @register_to_config
    def __init__(self, num_layers: int = 30, hidden_dim: int = 1920, num_attention_heads: int = 30,
                 mlp_hidden_dim: int = 7680, modulation_dim: int = 4096, time_embed_dim: int = 4096,
                 pooled_text_dim: int = 2048, text_dim: int = 4096, latent_channels: int = 16, patch_size: int = 2,
                 height: int = 1024, width: int = 1024, vae_compression: int = 8, pos_emb_size: int = 64,
                 register_token_num: int = 4):
        super().__init__()
        rows, cols = height // vae_compression // patch_size, width // vae_compression // patch_size
        if rows * patch_size * vae_compression != height or cols * patch_size * vae_compression != width:
            raise ValueError(f"height {height} and width {width} must be multiples of vae_compression x patch_size = "
                             f"{vae_compression * patch_size}")
        self.grid = (rows, cols)
        self.text_cond = nn.Module()  # the reference's TextConditionModule holds one Linear named `projection`
        self.text_cond.projection = nn.Linear(text_dim, hidden_dim)
        self.patching = nn.Module()  # and its LatentPatchModule one strided conv named `projection_SD3`
        self.patching.projection_SD3 = nn.Conv2d(latent_channels, hidden_dim, patch_size, stride=patch_size)
        self.time_emb = TextTimeEmbedding(time_embed_dim, pooled_text_dim, modulation_dim)
        self.mmdit_blocks = nn.ModuleList(
            MotifBlock(hidden_dim, num_attention_heads, mlp_hidden_dim, modulation_dim) for _ in range(num_layers))
        self.final_modulation = nn.Linear(modulation_dim, 2 * hidden_dim)
        self.final_linear_SD3 = nn.Linear(hidden_dim, latent_channels * patch_size ** 2)
        self.register_tokens = nn.Parameter(torch.randn(1, register_token_num, hidden_dim))
        self.t_token_proj = nn.Linear(modulation_dim, hidden_dim)
        # A buffer, persistent: the released checkpoint stores the table under "pos_embed" (the reference keeps it as
        # a plain attribute instead, so its own state_dict() lacks it; _fill_pos_embed covers that case)
        self.register_buffer("pos_embed", sincos_table(hidden_dim, rows, cols, pos_emb_size))
        self.register_load_state_dict_pre_hook(_fill_pos_embed)

    @staticmethod
    def join_text_embeddings(t5: torch.Tensor, clip_l: torch.Tensor, clip_g: torch.Tensor) -> torch.Tensor:
        """The prompt the transformer takes: [CLIP-L | CLIP-G, zero-padded to T5's width] followed by the T5 tokens on
        the sequence axis ([B, 77 + 256, 4096] for Motif-Image-6B), as the reference's text conditioning joins them."""
        clip = torch.cat([clip_l, clip_g], dim=-1)
        return torch.cat([F.pad(clip, (0, t5.shape[-1] - clip.shape[-1])), t5], dim=-2)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep: torch.Tensor, return_dict: bool = True):
        """hidden_states: latents [B, C, H, W] at the configured size; encoder_hidden_states: the joined prompt
        [B, L, text_dim] (join_text_embeddings); pooled_projections: CLIP-L and CLIP-G pooled [B, pooled_text_dim];
        timestep: [B] in [0, 1000] (the sampler's sigma x 1000). Returns the velocity, shaped like hidden_states."""
        c = self.config
        batch, channels, height, width = hidden_states.shape
        p = c.patch_size
        if (channels, height, width) != (c.latent_channels, self.grid[0] * p, self.grid[1] * p):
            raise ValueError(f"latents {tuple(hidden_states.shape)} do not fit this model: its position table is fixed "
                             f"for [B, {c.latent_channels}, {self.grid[0] * p}, {self.grid[1] * p}]")
        emb = self.time_emb(pooled_projections, timestep)
        prompt = self.text_cond.projection(encoder_hidden_states)
        prompt = torch.cat([prompt, self.t_token_proj(emb).unsqueeze(1)], dim=1)
        image = self.patching.projection_SD3(hidden_states).flatten(2).transpose(1, 2) + self.pos_embed
        image = torch.cat([self.register_tokens.expand(batch, -1, -1), image], dim=1)
        for block in self.mmdit_blocks:
            image, prompt = block(image, prompt, emb)
        image = image[:, c.register_token_num:]
        scale, shift = self.final_modulation(emb).unsqueeze(1).chunk(2, dim=-1)
        out = self.final_linear_SD3((1 + scale) * image + shift)
        # [B, rows * cols, p * p * C] -> [B, C, rows * p, cols * p]; within a token the channel varies fastest
        rows, cols = self.grid
        out = out.reshape(batch, rows, cols, p, p, c.latent_channels).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(batch, c.latent_channels, rows * p, cols * p)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)
