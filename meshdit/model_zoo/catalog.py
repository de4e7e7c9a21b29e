"""Catalog: a tiny config and example inputs for every transformer class the installed diffusers exports.

The zoo (`model_zoo.ENTRIES`) holds the models meshdit is built and tested around; the catalog holds one tiny entry per
transformer class diffusers ships (every name in `dir(diffusers)` containing "Transformer" that is an `nn.Module`),
for the coverage sweep (`bench/coverage.py`). Each entry gives a config of a few layers, 2-4 heads and a few dozen to a
few hundred image/video tokens, and a function that builds seeded example inputs for `forward`, keyword arguments as
the class's pipeline passes them in diffusers (the pipeline is named in the entry): tensors, and the non-tensor and
structured arguments the pipeline passes too (`img_shapes`, `num_frames`, lists of tensors, dicts). `return_dict` is
left out: `meshdit.lower` captures with `return_dict=False`, as the pipelines call.

    catalog.names()                        # every class, sorted
    model = catalog.build("WanTransformer3DModel")        # seeded random weights (model_zoo.randomize_), eval mode
    inputs = catalog.example_inputs("WanTransformer3DModel")
    outputs = catalog.run_torch("WanTransformer3DModel")  # the golden: the module called in torch on its inputs

`kind` marks what the class is: "dit" (a diffusion-transformer denoiser), or "audio", "protein", "prior", "block"
(a UNet building block) for the ones that are not DiT denoisers; they are still tried. `torch_failure`, when set, is
one line saying why the class does not run in torch with any tiny config found.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import randomize_


@dataclass(frozen=True)
class CatalogEntry:
    class_name: str
    config: dict
    inputs: Callable  # (rand: _Rand, model) -> dict of keyword arguments for forward
    kind: str = "dit"  # dit | audio | protein | prior | block
    pipeline: str = ""  # the diffusers pipeline whose transformer call the inputs follow ("" = none ships)
    torch_failure: str = ""  # why the class cannot run in torch at all (one line), when it cannot
    notes: str = ""
    extra: dict = field(default_factory=dict)


class _Rand:
    """Seeded draws for example inputs."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, dtype=torch.float32):
        return torch.randn(shape, generator=self.gen).to(dtype)

    def rand(self, *shape):
        return torch.rand(shape, generator=self.gen)

    def randint(self, high, *shape, low=0):
        return torch.randint(low, high, shape, generator=self.gen)

    def timestep(self, batch=1, scale=1000.0, dtype=torch.float32):
        """A timestep as flow-matching pipelines pass it: one float per sample in [0, scale)."""
        return (torch.rand((batch,), generator=self.gen) * scale).to(dtype)

    def int_timestep(self, batch=1, high=1000):
        """A timestep as DDPM/DPM-solver pipelines pass it: int64 from the scheduler's table."""
        return torch.randint(1, high, (batch,), generator=self.gen)


def _prompt_mask(length: int, batch: int = 1, dtype=torch.int64, valid: int | None = None):
    """A tokenizer attention mask padded to `length`: the first 3/4 of the tokens are the prompt."""
    valid = max(1, 3 * length // 4) if valid is None else valid
    mask = torch.zeros(batch, length, dtype=dtype)
    mask[:, :valid] = 1
    return mask


def _flux_ids(height: int, width: int, text: int, axes: int = 3):
    """Flux-style position ids: (0, row, col) per packed image token, zeros per text token."""
    img = torch.zeros(height, width, axes)
    img[..., 1] = torch.arange(height)[:, None]
    img[..., 2] = torch.arange(width)[None, :]
    return img.reshape(height * width, axes), torch.zeros(text, axes)


# --- input builders, one per class (or family); the pipeline each follows is named in its entry ---------------------

def _ace_step(r, model):
    seq = 64  # audio latent frames
    t = r.rand(1)
    return dict(hidden_states=r.randn(1, seq, 8), timestep=t, timestep_r=t.clone(),
                encoder_hidden_states=r.randn(1, 16, 64), context_latents=r.randn(1, seq, 16))


def _allegro(r, model):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    cfg = model.config
    frames, height, width = 2, 8, 8
    gh, gw = height // cfg.patch_size, width // cfg.patch_size
    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=cfg.attention_head_dim, crops_coords=((0, 0), (gh, gw)), grid_size=(gh, gw), temporal_size=frames,
        interpolation_scale=(cfg.interpolation_scale_t, cfg.interpolation_scale_h, cfg.interpolation_scale_w))
    pos = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long()).reshape(-1, 3).transpose(0, 1)
    pos = pos.reshape(3, 1, -1).contiguous()
    return dict(hidden_states=r.randn(1, 4, frames, height, width), encoder_hidden_states=r.randn(1, 16, 16),
                encoder_attention_mask=_prompt_mask(16), timestep=r.timestep(),
                image_rotary_emb=((freqs_t, freqs_h, freqs_w), (pos[0], pos[1], pos[2])))


def _anyflow(r, model):
    frames = 2
    t = r.timestep()
    timestep = t[:, None].repeat(1, frames)
    return dict(hidden_states=r.randn(1, frames, 4, 8, 8), timestep=timestep, r_timestep=timestep.clone(),
                encoder_hidden_states=r.randn(1, 16, 32))


def _anyflow_far(r, model):
    chunk_partition = [1, 1]
    frames = sum(chunk_partition)
    t = r.timestep()
    timestep = t[:, None].repeat(1, frames)
    return dict(hidden_states=r.randn(1, frames, 4, 8, 8), chunk_partition=chunk_partition, timestep=timestep,
                r_timestep=timestep.clone(), encoder_hidden_states=r.randn(1, 16, 32))


def _auraflow(r, model):
    return dict(hidden_states=r.randn(1, 4, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                timestep=r.timestep(scale=1.0))


def _flux_like(channels, text_dim, pooled=None, guidance=False, side=8, text=16, timestep_scale=1.0, mask=False):
    def build(r, model):
        img_ids, txt_ids = _flux_ids(side, side, text)
        inputs = dict(hidden_states=r.randn(1, side * side, channels), encoder_hidden_states=r.randn(1, text, text_dim))
        if pooled:
            inputs["pooled_projections"] = r.randn(1, pooled)
        inputs.update(timestep=r.timestep(scale=timestep_scale), img_ids=img_ids, txt_ids=txt_ids)
        if guidance:
            inputs["guidance"] = torch.full((1,), 3.5)
        if mask:  # Chroma: the prompt mask, extended over the image tokens (bool, as the pipeline makes it)
            inputs["attention_mask"] = torch.cat([_prompt_mask(text, dtype=torch.bool),
                                                  torch.ones(1, side * side, dtype=torch.bool)], 1)
        return inputs
    return build


def _bria_fibo(r, model):
    inputs = _flux_like(16, 64)(r, model)
    layers = model.config.num_layers + model.config.num_single_layers
    inputs["text_encoder_layers"] = [r.randn(1, 16, model.config.text_encoder_dim) for _ in range(layers)]
    return inputs


def _bria_fibo2(r, model):
    cfg = model.config
    bundles = 1 + len(cfg.injection_layer_ids)
    return dict(hidden_states=r.randn(1, cfg.in_channels, 16, 16), timestep=r.timestep(scale=1.0),
                encoder_hidden_states=r.randn(1, bundles, 16, cfg.cap_feat_dim),
                encoder_attention_mask=_prompt_mask(16, dtype=torch.bool))


def _chronoedit(r, model):  # latents (16 ch) concatenated with the condition (16 ch + 4 mask ch), Wan-style
    return dict(hidden_states=r.randn(1, model.config.in_channels, 2, 16, 16), timestep=r.timestep(),
                encoder_hidden_states=r.randn(1, 16, 32), encoder_hidden_states_image=r.randn(1, 8, 32))


def _cogvideox(r, model):
    return dict(hidden_states=r.randn(1, 2, 4, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                timestep=r.int_timestep())


def _cogview(r, model):
    height = width = 16 * 8  # pixels: the latent is 16 x 16
    size = torch.tensor([[height, width]], dtype=torch.float32)
    return dict(hidden_states=r.randn(1, 4, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                timestep=r.timestep(), original_size=size, target_size=size.clone(),
                crop_coords=torch.zeros(1, 2))


def _consisid(r, model):
    cfg = model.config
    return dict(hidden_states=r.randn(1, 2, 2 * 4, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                timestep=r.int_timestep(), id_vit_hidden=[r.randn(1, 4, cfg.LFE_vit_dim) for _ in range(cfg.LFE_num_scale)],
                id_cond=r.randn(1, cfg.LFE_id_dim))


def _cosmos(r, model):
    return dict(hidden_states=r.randn(1, 4, 2, 16, 16), timestep=r.timestep(scale=1.0),
                encoder_hidden_states=r.randn(1, 16, 32), fps=30, padding_mask=torch.zeros(1, 1, 16 * 8, 16 * 8))


def _cosmos3(r, model):
    cfg = model.config
    height = width = 4
    tokens = height * width
    text = 8
    length = text + tokens
    vision = torch.arange(text, length)
    return dict(input_ids=r.randint(cfg.vocab_size, text), text_indexes=torch.arange(text),
                position_ids=torch.arange(length)[None].repeat(3, 1), und_len=text, sequence_length=length,
                vision_tokens=[r.randn(1, cfg.latent_channel, 1, height, width)],
                vision_token_shapes=[(1, height, width)], vision_sequence_indexes=vision,
                vision_mse_loss_indexes=vision.clone(), vision_timesteps=torch.full((tokens,), 0.5),
                vision_noisy_frame_indexes=[torch.tensor([0])])


def _dit(r, model):
    return dict(hidden_states=r.randn(1, 4, 16, 16), timestep=r.int_timestep(),
                class_labels=r.randint(model.config.num_embeds_ada_norm, 1))


def _unet_block(r, model):  # a spatial transformer inside a UNet: feature map + cross-attention context
    return dict(hidden_states=r.randn(1, 32, 8, 8), encoder_hidden_states=r.randn(1, 16, 32))


def _easyanimate(r, model):
    return dict(hidden_states=r.randn(1, 4, 2, 16, 16), timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32))


def _ernie(r, model):
    return dict(hidden_states=r.randn(1, 16, 8, 8), timestep=r.timestep(scale=1000.0),
                text_bth=r.randn(1, 16, 32), text_lens=torch.tensor([12]))


def _flux2(r, model):
    side, text = 8, 16
    img = torch.cartesian_prod(torch.arange(1), torch.arange(side), torch.arange(side), torch.arange(1))
    txt = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(text))
    return dict(hidden_states=r.randn(1, side * side, 16), timestep=r.timestep(scale=1.0),
                guidance=torch.full((1,), 4.0), encoder_hidden_states=r.randn(1, text, 48),
                txt_ids=txt[None], img_ids=img[None])


def _flux3(r, model):  # position ids per token, without a batch dim
    inputs = _flux2(r, model)
    del inputs["guidance"]
    inputs["img_ids"], inputs["txt_ids"] = inputs["img_ids"][0], inputs["txt_ids"][0]
    return inputs


def _glm_image(r, model):
    return dict(hidden_states=r.randn(1, 4, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                prior_token_id=r.randint(64, 1, 64), prior_token_drop=torch.zeros(1, 64, dtype=torch.bool),
                timestep=r.timestep(), target_size=torch.tensor([[128.0, 128.0]]), crop_coords=torch.zeros(1, 2))


def _helios(r, model):
    c, f, h, w = 4, 2, 8, 8
    return dict(hidden_states=r.randn(1, c, f, h, w), timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32),
                indices_hidden_states=torch.arange(f)[None].float() + 3, indices_latents_history_short=torch.ones(1, 1),
                indices_latents_history_mid=torch.ones(1, 1), indices_latents_history_long=torch.ones(1, 4),
                latents_history_short=r.randn(1, c, 1, h, w), latents_history_mid=r.randn(1, c, 1, h, w),
                latents_history_long=r.randn(1, c, 4, h, w))


def _hidream(r, model):
    cfg = model.config
    llama = len(cfg.llama_layers)
    return dict(hidden_states=r.randn(1, 4, 16, 16), timesteps=r.timestep(),
                encoder_hidden_states_t5=r.randn(1, 16, cfg.caption_channels[0]),
                encoder_hidden_states_llama3=r.randn(llama, 1, 16, cfg.caption_channels[1]),
                pooled_embeds=r.randn(1, cfg.text_emb_dim))


def _hunyuan_image(r, model):
    return dict(hidden_states=r.randn(1, 4, 16, 16), timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_attention_mask=_prompt_mask(16), encoder_hidden_states_2=r.randn(1, 8, 16),
                encoder_attention_mask_2=_prompt_mask(8))


def _t2v_with_condition(r, channels, frames, height, width):
    """Text-to-video latents as image-to-video models take them: the noise, then an all-zero condition and mask."""
    latents = r.randn(1, channels, frames, height, width)
    return torch.cat([latents, torch.zeros_like(latents), torch.zeros(1, 1, frames, height, width)], 1)


def _hunyuan_video15(r, model):
    return dict(hidden_states=_t2v_with_condition(r, 4, 2, 8, 8), image_embeds=torch.zeros(1, 8, 16),
                timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_attention_mask=_prompt_mask(16), encoder_hidden_states_2=r.randn(1, 8, 16),
                encoder_attention_mask_2=_prompt_mask(8))


def _hunyuan_video(r, model):
    return dict(hidden_states=r.randn(1, 4, 2, 16, 16), timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_attention_mask=_prompt_mask(16), pooled_projections=r.randn(1, 16),
                guidance=torch.full((1,), 6000.0))


def _framepack(r, model):
    # vanilla sampling: indices 0 (image prefix), 1-4 (4x history), 5-6 (2x), 7 (1x), 8-9 (the window denoised)
    c, h, w = 4, 8, 8
    return dict(hidden_states=r.randn(1, c, 2, h, w), timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_attention_mask=_prompt_mask(16), pooled_projections=r.randn(1, 16),
                image_embeds=r.randn(1, 8, 16), indices_latents=torch.tensor([8, 9]),
                guidance=torch.full((1,), 10000.0), latents_clean=r.randn(1, c, 2, h, w),
                indices_latents_clean=torch.tensor([0, 7]), latents_history_2x=r.randn(1, c, 2, h, w),
                indices_latents_history_2x=torch.tensor([5, 6]), latents_history_4x=r.randn(1, c, 4, h, w),
                indices_latents_history_4x=torch.tensor([1, 2, 3, 4]))


def _ideogram4(r, model):
    from diffusers.models.transformers import transformer_ideogram4 as m

    cfg = model.config
    text, side = 16, 8
    tokens = side * side
    length = text + tokens
    hidden = torch.zeros(1, length, cfg.in_channels)
    hidden[:, text:] = r.randn(1, tokens, cfg.in_channels)
    features = torch.zeros(1, length, cfg.llm_features_dim)
    features[:, :text] = r.randn(1, text, cfg.llm_features_dim)
    position_ids = torch.zeros(1, length, 3, dtype=torch.long)
    position_ids[:, :text] = torch.arange(text)[:, None]
    rows, cols = torch.arange(tokens) // side, torch.arange(tokens) % side
    position_ids[:, text:, 0] = m.IMAGE_POSITION_OFFSET
    position_ids[:, text:, 1] = rows + m.IMAGE_POSITION_OFFSET
    position_ids[:, text:, 2] = cols + m.IMAGE_POSITION_OFFSET
    indicator = torch.full((1, length), m.OUTPUT_IMAGE_INDICATOR, dtype=torch.long)
    indicator[:, :text] = m.LLM_TOKEN_INDICATOR
    return dict(hidden_states=hidden, timestep=r.rand(1), encoder_hidden_states=features, position_ids=position_ids,
                segment_ids=torch.ones(1, length, dtype=torch.long), indicator=indicator)


def _joyimage(r, model):  # one target item (text-to-image): (batch, items, channels, frames, height, width)
    return dict(hidden_states=r.randn(1, 1, 16, 1, 16, 16), timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32))


def _joyimage_plus(r, model):  # pre-patchified: one (C, 1, 2, 2) patch per token, 8 x 8 tokens
    return dict(hidden_states=r.randn(1, 64, 16, 1, 2, 2), timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_hidden_states_mask=_prompt_mask(16), shape_list=[[(1, 8, 8)]])


def _kandinsky5(r, model):
    f, h, w = 1, 16, 16
    return dict(hidden_states=r.randn(1, f, h, w, 4), encoder_hidden_states=r.randn(1, 16, 32),
                pooled_projections=r.randn(1, 16), timestep=r.timestep(),
                visual_rope_pos=[torch.arange(f), torch.arange(h // 2), torch.arange(w // 2)],
                text_rope_pos=torch.arange(16), scale_factor=[1.0, 1.0, 1.0], sparse_params=None)


def _kandinsky6(r, model):
    cfg = model.config
    f, h, w = 2, 8, 8
    channels = 2 * cfg.in_visual_dim + 1 if cfg.visual_cond else cfg.in_visual_dim
    latents = r.randn(1, f, h, w, cfg.in_visual_dim)
    if cfg.visual_cond:
        latents = torch.cat([latents, torch.zeros_like(latents), torch.zeros(1, f, h, w, 1)], -1)
    assert latents.shape[-1] == channels
    return dict(hidden_states=latents, encoder_hidden_states=r.randn(1, 16, 32), pooled_projections=r.randn(1, 16),
                timestep=r.timestep(), encoder_attention_mask=_prompt_mask(16, dtype=torch.bool))


def _kandinsky6_sr(r, model):
    f, h, w, c = 1, 8, 8, model.config.in_visual_dim
    latents = r.randn(1, f, h, w, c)
    return dict(hidden_states=torch.cat([latents, torch.zeros_like(latents), torch.zeros(1, f, h, w, 1)], -1),
                timestep=r.timestep())


def _krea2(r, model):
    cfg = model.config
    side, text = 8, 16
    ids = torch.zeros(text + side * side, 3)
    ids[text:, 1] = torch.arange(side).repeat_interleave(side).float()
    ids[text:, 2] = torch.arange(side).repeat(side).float()
    return dict(hidden_states=r.randn(1, side * side, cfg.in_channels),
                encoder_hidden_states=r.randn(1, text, cfg.num_text_layers, cfg.text_hidden_dim),
                timestep=r.rand(1), position_ids=ids, encoder_attention_mask=_prompt_mask(text, dtype=torch.bool))


def _latte(r, model):
    return dict(hidden_states=r.randn(1, 4, 2, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                timestep=r.int_timestep(), enable_temporal_attentions=True)


def _longcat_audio(r, model):
    cfg = model.config
    frames = 64
    return dict(hidden_states=r.randn(1, frames, cfg.latent_dim), encoder_hidden_states=r.randn(1, 16, cfg.dit_text_dim),
                encoder_attention_mask=_prompt_mask(16, dtype=torch.bool), timestep=r.rand(1),
                attention_mask=torch.ones(1, frames, dtype=torch.bool), latent_cond=torch.zeros(1, frames, cfg.latent_dim))


def _longcat_image(r, model):
    side, text, start = 8, 16, 512  # the pipeline's prepare_pos_ids: text on modality 0, the image after 512 slots
    txt_ids = torch.zeros(text, 3)
    txt_ids[:, 1] = txt_ids[:, 2] = torch.arange(text).float()
    img_ids = torch.ones(side, side, 3)
    img_ids[..., 1] = torch.arange(side)[:, None] + start
    img_ids[..., 2] = torch.arange(side)[None, :] + start
    return dict(hidden_states=r.randn(1, side * side, 16), timestep=r.rand(1), encoder_hidden_states=r.randn(1, text, 32),
                txt_ids=txt_ids, img_ids=img_ids.reshape(-1, 3))


def _ltx(r, model):
    frames, height, width = 2, 8, 8
    return dict(hidden_states=r.randn(1, frames * height * width, 8), encoder_hidden_states=r.randn(1, 16, 32),
                timestep=r.timestep(), encoder_attention_mask=_prompt_mask(16), num_frames=frames, height=height,
                width=width, rope_interpolation_scale=(8 / 25.0, 32, 32))


def _ltx2(r, model):
    from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline  # noqa: F401  (the pipeline the inputs follow)

    frames, height, width, audio_frames = 2, 8, 8, 16
    video_coords = model.rope.prepare_video_coords(1, frames, height, width, torch.device("cpu"), fps=24.0)
    audio_coords = model.audio_rope.prepare_audio_coords(1, audio_frames, torch.device("cpu"))
    t = r.timestep()
    return dict(hidden_states=r.randn(1, frames * height * width, 8), audio_hidden_states=r.randn(1, audio_frames, 8),
                encoder_hidden_states=r.randn(1, 16, 32), audio_encoder_hidden_states=r.randn(1, 16, 32),
                timestep=t, sigma=t.clone(), encoder_attention_mask=_prompt_mask(16),
                audio_encoder_attention_mask=_prompt_mask(16), num_frames=frames, height=height, width=width,
                fps=24.0, audio_num_frames=audio_frames, video_coords=video_coords, audio_coords=audio_coords,
                isolate_modalities=False, spatio_temporal_guidance_blocks=None, perturbation_mask=None,
                use_cross_timestep=False)


def _lumina2(r, model):
    return dict(hidden_states=r.randn(1, 4, 16, 16), timestep=r.rand(1), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_attention_mask=_prompt_mask(16))


def _minimax_h3(r, model):
    cfg = model.config
    text, audio, (f, h, w) = 8, 8, (2, 4, 4)
    video = f * h * w
    length = text + audio + video
    text_idx, audio_idx = torch.arange(text), torch.arange(text, text + audio)
    video_idx = torch.arange(text + audio, length)
    tags = torch.zeros(length, dtype=torch.long)
    tags[text_idx], tags[audio_idx] = 1, 2
    timestep_indices = torch.zeros(length, dtype=torch.long)
    timestep_indices[audio_idx] = 1
    pos = torch.zeros(length, 3)
    pos[:, 0] = torch.arange(length).float()
    pos[video_idx, 0] = (torch.arange(video) // (h * w)).float() + text + audio
    pos[video_idx, 1] = ((torch.arange(video) // w) % h).float()
    pos[video_idx, 2] = (torch.arange(video) % w).float()
    patch = cfg.in_channels * math.prod(cfg.patch_size)
    return dict(hidden_states=r.randn(1, video, patch), audio_hidden_states=r.randn(1, audio, cfg.audio_in_channels),
                encoder_hidden_states=r.randn(1, text, cfg.text_dim), timestep=torch.tensor([0.7, 0.3]),
                timestep_indices=timestep_indices, token_tags=tags, position_ids=pos, video_indices=video_idx,
                audio_indices=audio_idx, text_indices=text_idx)


def _music3(r, model):
    cfg = model.config
    frames = 64
    return dict(hidden_states=r.randn(1, cfg.in_channels, frames), timestep=r.rand(1),
                encoder_hidden_states=r.randn(1, frames, cfg.condition_dim))


def _mochi(r, model):
    return dict(hidden_states=r.randn(1, 4, 2, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                timestep=r.timestep(), encoder_attention_mask=_prompt_mask(16, dtype=torch.bool))


def _motif(r, model):
    cfg = model.config
    return dict(hidden_states=_t2v_with_condition(r, cfg.out_channels, 2, 8, 8), timestep=r.timestep(),
                encoder_hidden_states=r.randn(1, 16, 32), encoder_attention_mask=_prompt_mask(16))


def _nucleus(r, model):
    side = 8
    return dict(hidden_states=r.randn(1, side * side, 16), timestep=r.rand(1), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_hidden_states_mask=_prompt_mask(16), img_shapes=[(1, side, side)])


def _omnigen(r, model):  # text-to-image: no input images, the prompt's tokens then the time token then the image
    text, side = 16, 16
    image_tokens = (side // 2) ** 2
    length = text + 1 + image_tokens
    mask = torch.tril(torch.ones(length, length))  # text and the time token: causal
    mask[-image_tokens:, -image_tokens:] = 1  # the image tokens see everything, each other bidirectionally
    return dict(hidden_states=r.randn(1, 4, side, side), timestep=r.rand(1),
                input_ids=r.randint(100, 1, text, low=1), input_img_latents=[], input_image_sizes={},
                attention_mask=mask[None], position_ids=torch.arange(length)[None])


def _pixart(r, model):
    return dict(hidden_states=r.randn(1, 4, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_attention_mask=_prompt_mask(16), timestep=r.int_timestep(),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def _prior(r, model):  # unCLIP / Kandinsky prior: denoises a CLIP image embedding
    cfg = model.config
    return dict(hidden_states=r.randn(1, cfg.embedding_dim), timestep=r.int_timestep(),
                proj_embedding=r.randn(1, cfg.embedding_dim),
                encoder_hidden_states=r.randn(1, cfg.num_embeddings, cfg.embedding_dim),
                attention_mask=_prompt_mask(cfg.num_embeddings, dtype=torch.bool))


def _prx(r, model):
    return dict(hidden_states=r.randn(1, 16, 16, 16), timestep=r.rand(1), encoder_hidden_states=r.randn(1, 16, 32),
                attention_mask=_prompt_mask(16, dtype=torch.bool))


def _qwenimage(r, model):
    side = 8  # packed 2x2 latent patches: an 16 x 16 latent
    return dict(hidden_states=r.randn(1, side * side, 16), timestep=r.rand(1), encoder_hidden_states_mask=_prompt_mask(16),
                encoder_hidden_states=r.randn(1, 16, 32), img_shapes=[[(1, side, side)]])


def _qwenimage21(r, model):
    side, text = 8, 16
    img_mask = torch.cat([torch.zeros(1, text, dtype=torch.bool), torch.ones(1, side * side // 4, dtype=torch.bool)], 1)
    return dict(hidden_states=r.randn(1, side * side, 16), timestep=r.rand(1), encoder_hidden_states=r.randn(1, text, 32),
                encoder_hidden_states_mask=_prompt_mask(text), img_shapes=[[(1, side, side)]], img_mask=img_mask)


def _rfd4(r, model):
    cfg = model.config
    tokens = 32
    padding = torch.ones(1, tokens, dtype=torch.bool)
    conditioning = {"is_in_context_conditioning": torch.zeros(1, tokens, dtype=torch.bool),
                    "supports_local_latent": torch.ones(1, tokens, dtype=torch.bool)}
    return dict(bb_ca=r.randn(1, tokens, 3), local_latents=r.randn(1, tokens, cfg.latent_dim),
                bb_ca_time=r.rand(1), local_latents_time=r.rand(1), padding_mask=padding,
                token_type=torch.zeros(1, tokens, dtype=torch.long), conditioning=conditioning, recycle_depth=1)


def _sd3(r, model):
    return dict(hidden_states=r.randn(1, 4, 16, 16), timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32),
                pooled_projections=r.randn(1, 32))


def _sana(r, model):
    return dict(hidden_states=r.randn(1, 4, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_attention_mask=_prompt_mask(16), timestep=r.timestep())


def _sana_video(r, model):
    return dict(hidden_states=r.randn(1, 4, 2, 16, 16), encoder_hidden_states=r.randn(1, 16, 32),
                encoder_attention_mask=_prompt_mask(16), timestep=r.timestep())


def _sana_wm(r, model):
    frames, h, w = 2, 8, 8
    t = r.timestep()
    return dict(hidden_states=r.randn(1, model.config.in_channels, frames, h, w), timestep=t[:, None, None].repeat(1, 1, frames),
                encoder_hidden_states=r.randn(1, 1, 16, model.config.caption_channels),
                data_info={"img_hw": torch.tensor([[h * 32.0, w * 32.0]])}, mask=_prompt_mask(16))


def _sana_wm_refiner(r, model):
    frames, h, w = 2, 8, 8
    tokens = frames * h * w
    rope = model.build_rotary_emb_for_absolute_positions(batch_size=1, frame_positions=torch.arange(frames),
                                                         height=h, width=w, device=torch.device("cpu"), fps=24.0)
    return dict(hidden_states=r.randn(1, tokens, model.config.in_channels), encoder_hidden_states=r.randn(1, 16, 32),
                timestep=torch.full((1, tokens), float(r.rand(1)) * 1000.0), video_rotary_emb=rope,
                encoder_attention_mask=_prompt_mask(16))


def _temporal(r, model):  # AnimateDiff-style motion module: frames folded into the batch
    frames = 4
    return dict(hidden_states=r.randn(frames, 32, 8, 8), num_frames=frames)


def _wan(r, model):
    return dict(hidden_states=r.randn(1, 4, 2, 16, 16), timestep=r.timestep(), encoder_hidden_states=r.randn(1, 16, 32))


def _skyreels(r, model):
    return _wan(r, model)


def _wan_animate(r, model):
    cfg = model.config
    c, f, h, w = cfg.latent_channels, 4, 8, 8
    return dict(hidden_states=r.randn(1, cfg.in_channels, f + 1, h, w), timestep=r.timestep(),
                encoder_hidden_states=r.randn(1, 16, 32), encoder_hidden_states_image=r.randn(1, 8, cfg.image_dim),
                pose_hidden_states=r.randn(1, c, f, h, w),
                face_pixel_values=r.randn(1, 3, 4 * f - 3, cfg.motion_encoder_size, cfg.motion_encoder_size),
                motion_encode_batch_size=cfg.motion_encoder_batch_size)


def _wan_animate2(r, model):
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    cfg = model.config
    f, h, w = 2, 8, 8
    channels = cfg.out_dim
    return dict(hidden_states=[r.randn(channels, f, h, w)], timestep=r.timestep(),
                encoder_hidden_states=[r.randn(16, cfg.text_dim)],
                condition_latents=[r.randn(cfg.in_dim - channels, f, h, w)],
                encoder_hidden_states_image=r.randn(1, 8, 1280), kv_cache=WanAnimate2KVCache(cfg.num_layers),
                kv_cache_mode="extract", seq_len=f * (h // 2) * (w // 2),
                offset_grid_sizes=torch.tensor([[f, h // 2, w // 2]]))


def _wan_vace(r, model):
    cfg = model.config
    inputs = _wan(r, model)
    inputs["control_hidden_states"] = r.randn(1, cfg.vace_in_channels, 2, 16, 16)
    inputs["control_hidden_states_scale"] = torch.ones(len(cfg.vace_layers))
    return inputs


def _zimage(r, model):  # the pipeline passes lists: one latent (C, 1, H, W) and one prompt (L, D) per sample
    return dict(x=[r.randn(16, 1, 16, 16)], t=r.rand(1), cap_feats=[r.randn(16, 32)])


def _dreamlite(r, model):
    return dict(hidden_states=r.randn(1, 32, 8, 8), encoder_hidden_states=r.randn(1, 16, 32))


# --- the entries -------------------------------------------------------------------------------------------------------

_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
            text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=32)

_ENTRIES = [
    CatalogEntry("AceStepTransformer1DModel",
                 dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, in_channels=24, audio_acoustic_hidden_dim=8, patch_size=2,
                      sliding_window=16),
                 _ace_step, kind="audio", pipeline="ace_step/pipeline_ace_step.py"),
    CatalogEntry("AllegroTransformer3DModel",
                 dict(patch_size=2, patch_size_t=1, num_attention_heads=2, attention_head_dim=24, in_channels=4,
                      out_channels=4, num_layers=2, cross_attention_dim=48, sample_height=8, sample_width=8,
                      sample_frames=8, caption_channels=16),
                 _allegro, pipeline="allegro/pipeline_allegro.py"),
    CatalogEntry("AnyFlowFARTransformer3DModel",
                 dict(_WAN, compressed_patch_size=(1, 4, 4), full_chunk_limit=3, chunk_partition=(1, 1)),
                 _anyflow_far, pipeline="anyflow/pipeline_anyflow_far.py"),
    CatalogEntry("AnyFlowTransformer3DModel", dict(_WAN), _anyflow, pipeline="anyflow/pipeline_anyflow.py"),
    CatalogEntry("AuraFlowTransformer2DModel",
                 dict(sample_size=16, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
                      attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                      caption_projection_dim=64, out_channels=4, pos_embed_max_size=64),
                 _auraflow, pipeline="aura_flow/pipeline_aura_flow.py"),
    CatalogEntry("BriaFibo2Transformer2DModel",
                 dict(in_channels=16, patch_size=2, dim=64, n_layers=2, n_refiner_layers=1, n_heads=4, cap_feat_dim=32,
                      injection_layer_ids=(1,), perceiver_num_layers=1, min_num_gist_tokens=4,
                      max_num_gist_tokens=8, gist_step=4, gist_min_text_len=4, gist_max_text_len=32,
                      axes_dims=(4, 6, 6), axes_lens=(64, 32, 32)),
                 _bria_fibo2, pipeline="bria_fibo2/pipeline_bria_fibo2.py"),
    CatalogEntry("BriaFiboTransformer2DModel",
                 dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=64, text_encoder_dim=32, pooled_projection_dim=None,
                      axes_dims_rope=[4, 6, 6]),
                 _bria_fibo, pipeline="bria_fibo/pipeline_bria_fibo.py"),
    CatalogEntry("BriaTransformer2DModel",
                 dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=None,
                      axes_dims_rope=[4, 6, 6]),
                 _flux_like(16, 32, timestep_scale=1000.0), pipeline="bria/pipeline_bria.py"),
    CatalogEntry("ChromaTransformer2DModel",
                 dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
                      approximator_num_channels=8, approximator_hidden_dim=32, approximator_layers=1),
                 _flux_like(16, 32, mask=True), pipeline="chroma/pipeline_chroma.py"),
    CatalogEntry("ChronoEditTransformer3DModel",
                 dict(_WAN, in_channels=36, out_channels=16, image_dim=32, rope_temporal_skip_len=8),
                 _chronoedit, pipeline="chronoedit/pipeline_chronoedit.py"),
    CatalogEntry("CogVideoXTransformer3DModel",
                 dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=16,
                      text_embed_dim=32, num_layers=2, sample_width=16, sample_height=16, sample_frames=5,
                      patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16,
                      use_rotary_positional_embeddings=False),
                 _cogvideox, pipeline="cogvideo/pipeline_cogvideox.py"),
    CatalogEntry("CogView3PlusTransformer2DModel",
                 dict(patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
                      out_channels=4, text_embed_dim=32, time_embed_dim=16, condition_dim=8, pos_embed_max_size=16,
                      sample_size=16),
                 _cogview, pipeline="cogview3/pipeline_cogview3plus.py"),
    CatalogEntry("CogView4Transformer2DModel",
                 dict(patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16,
                      num_attention_heads=2, text_embed_dim=32, time_embed_dim=16, condition_dim=8,
                      rope_axes_dim=(16, 16)),
                 _cogview, pipeline="cogview4/pipeline_cogview4.py"),
    CatalogEntry("ConsisIDTransformer3DModel",
                 # the face cross-attention reads the facial extractor's output at 2/3 of the hidden size: 48 -> 32
                 dict(num_attention_heads=2, attention_head_dim=24, in_channels=8, out_channels=4, time_embed_dim=16,
                      text_embed_dim=32, num_layers=2, sample_width=16, sample_height=16, sample_frames=5,
                      patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16, cross_attn_interval=1,
                      is_kps=False, is_train_face=True, cross_attn_dim_head=16, cross_attn_num_heads=2,
                      LFE_id_dim=16, LFE_vit_dim=16, LFE_depth=2, LFE_dim_head=8, LFE_num_heads=2,
                      LFE_num_id_token=2, LFE_num_querie=4, LFE_output_dim=32, LFE_ff_mult=1, LFE_num_scale=2,
                      use_rotary_positional_embeddings=False),
                 _consisid, pipeline="consisid/pipeline_consisid.py"),
    CatalogEntry("Cosmos3OmniTransformer",
                 dict(head_dim=16, hidden_size=64, intermediate_size=128, latent_channel=4, latent_patch_size=1,
                      num_attention_heads=4, num_hidden_layers=2, num_key_value_heads=2, patch_latent_dim=4,
                      rope_axes_dim=[4, 2, 2], vocab_size=128),
                 _cosmos3, pipeline="cosmos/pipeline_cosmos3_omni.py"),
    CatalogEntry("CosmosTransformer3DModel",
                 dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                      mlp_ratio=2, text_embed_dim=32, adaln_lora_dim=8, max_size=(4, 32, 32), patch_size=(1, 2, 2),
                      rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=False, extra_pos_embed_type="learnable"),
                 _cosmos, pipeline="cosmos/pipeline_cosmos_text2world.py",
                 notes="concat_padding_mask=False: with True the model resizes the padding mask with torchvision, "
                       "which is not installed here (NameError: transforms)"),
    CatalogEntry("DiTTransformer2DModel",
                 dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
                      sample_size=16, patch_size=2, num_embeds_ada_norm=16),
                 _dit, pipeline="dit/pipeline_dit.py"),
    CatalogEntry("DreamLiteTransformer2DModel",
                 dict(num_attention_heads=2, attention_head_dim=16, in_channels=32, num_layers=1, norm_num_groups=8,
                      cross_attention_dim=32, use_linear_projection=True),
                 _dreamlite, kind="block", pipeline="",
                 notes="a spatial-transformer block inside the DreamLite UNet; no pipeline calls it directly"),
    CatalogEntry("EasyAnimateTransformer3DModel",
                 dict(attention_head_dim=16, num_attention_heads=2, in_channels=4, out_channels=4, patch_size=2,
                      mmdit_layers=2, num_layers=2, text_embed_dim=32, time_embed_dim=16,
                      sample_height=60, sample_width=90),
                 _easyanimate, pipeline="easyanimate/pipeline_easyanimate.py"),
    CatalogEntry("ErnieImageTransformer2DModel",
                 dict(hidden_size=64, num_attention_heads=4, num_layers=2, ffn_hidden_size=128, in_channels=16,
                      out_channels=16, patch_size=1, text_in_dim=32, rope_axes_dim=(8, 4, 4)),
                 _ernie, pipeline="ernie_image/pipeline_ernie_image.py"),
    CatalogEntry("Flux2Transformer2DModel",
                 dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=32,
                      axes_dims_rope=(4, 4, 4, 4)),
                 _flux2, pipeline="flux2/pipeline_flux2.py"),
    CatalogEntry("Flux3Transformer2DModel",
                 dict(in_channels=16, cond_in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=48, timestep_channels=32,
                      axes_dims_rope=(4, 4, 4, 4)),
                 _flux3, pipeline="", notes="no pipeline in this diffusers; inputs follow the forward signature"),
    CatalogEntry("FluxTransformer2DModel",
                 dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                      axes_dims_rope=(4, 6, 6)),
                 _flux_like(16, 32, pooled=32, guidance=True), pipeline="flux/pipeline_flux.py"),
    CatalogEntry("GlmImageTransformer2DModel",
                 dict(patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16,
                      num_attention_heads=2, text_embed_dim=32, time_embed_dim=16, condition_dim=8,
                      prior_vq_quantizer_codebook_size=64),
                 _glm_image, pipeline="glm_image/pipeline_glm_image.py"),
    CatalogEntry("HeliosTransformer3DModel",
                 dict({k: v for k, v in _WAN.items() if k != "rope_max_seq_len"}, rope_dim=(8, 4, 4), has_multi_term_memory_patch=True, guidance_cross_attn=True,
                      zero_history_timestep=True, is_amplify_history=False),
                 _helios, pipeline="helios/pipeline_helios.py"),
    CatalogEntry("HiDreamImageTransformer2DModel",
                 dict(patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1,
                      attention_head_dim=16, num_attention_heads=2, caption_channels=[32, 16], text_emb_dim=16,
                      num_routed_experts=2, num_activated_experts=2, axes_dims_rope=(8, 4, 4),
                      max_resolution=(16, 16), llama_layers=(0, 1)),
                 _hidream, pipeline="hidream_image/pipeline_hidream_image.py"),
    CatalogEntry("HunyuanImageTransformer2DModel",
                 dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                      num_single_layers=1, num_refiner_layers=1, patch_size=(2, 2), text_embed_dim=32,
                      text_embed_2_dim=16, rope_axes_dim=(8, 8)),
                 _hunyuan_image, pipeline="hunyuan_image/pipeline_hunyuanimage.py"),
    CatalogEntry("HunyuanVideo15Transformer3DModel",
                 dict(in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                      num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=32,
                      text_embed_2_dim=16, image_embed_dim=16, rope_axes_dim=(4, 6, 6), target_size=16,
                      task_type="t2v"),
                 _hunyuan_video15, pipeline="hunyuan_video1_5/pipeline_hunyuan_video1_5.py"),
    CatalogEntry("HunyuanVideoFramepackTransformer3DModel",
                 dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                      num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
                      text_embed_dim=32, pooled_projection_dim=16, rope_axes_dim=(4, 6, 6), has_image_proj=True,
                      image_proj_dim=16, has_clean_x_embedder=True),
                 _framepack, pipeline="hunyuan_video/pipeline_hunyuan_video_framepack.py"),
    CatalogEntry("HunyuanVideoTransformer3DModel",
                 dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                      num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
                      text_embed_dim=32, pooled_projection_dim=16, rope_axes_dim=(4, 6, 6)),
                 _hunyuan_video, pipeline="hunyuan_video/pipeline_hunyuan_video.py"),
    CatalogEntry("Ideogram4Transformer2DModel",
                 dict(in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=4, intermediate_size=128,
                      adaln_dim=16, llm_features_dim=32, rope_theta=10000, mrope_section=(4, 2, 2)),
                 _ideogram4, pipeline="ideogram4/pipeline_ideogram4.py"),
    CatalogEntry("JoyImageEditPlusTransformer3DModel",
                 dict(patch_size=[1, 2, 2], in_channels=16, hidden_size=32, num_attention_heads=2, text_dim=32,
                      num_layers=2, rope_dim_list=[4, 6, 6]),
                 _joyimage_plus, pipeline="joyimage/pipeline_joyimage_edit_plus.py"),
    CatalogEntry("JoyImageEditTransformer3DModel",
                 dict(patch_size=[1, 2, 2], in_channels=16, hidden_size=32, num_attention_heads=2, text_dim=32,
                      num_layers=2, rope_dim_list=[4, 6, 6]),
                 _joyimage, pipeline="joyimage/pipeline_joyimage_edit.py"),
    CatalogEntry("Kandinsky5Transformer3DModel",
                 dict(in_visual_dim=4, in_text_dim=32, in_text_dim2=16, time_dim=32, out_visual_dim=4,
                      patch_size=(1, 2, 2), model_dim=64, ff_dim=128, num_text_blocks=1, num_visual_blocks=2,
                      axes_dims=(8, 4, 4), visual_cond=False),
                 _kandinsky5, pipeline="kandinsky5/pipeline_kandinsky_t2i.py"),
    CatalogEntry("Kandinsky6SRTransformer3DModel",
                 dict(in_visual_dim=4, out_visual_dim=4, time_dim=32, patch_size=(1, 1, 1), model_dim=64, ff_dim=128,
                      num_visual_blocks=2, axes_dims=(8, 4, 4)),
                 _kandinsky6_sr, pipeline="kandinsky6/pipeline_kandinsky6_sr.py"),
    CatalogEntry("Kandinsky6Transformer3DModel",
                 dict(in_visual_dim=4, out_visual_dim=4, in_text_dim=32, in_text_dim2=16, time_dim=32,
                      patch_size=(1, 2, 2), model_dim=64, ff_dim=128, num_text_blocks=1, num_visual_blocks=2,
                      axes_dims=(8, 4, 4), visual_cond=True, in_audio_dim=4, out_audio_dim=4),
                 _kandinsky6, pipeline="kandinsky6/pipeline_kandinsky6_ti2va.py"),
    CatalogEntry("Krea2Transformer2DModel",
                 dict(in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, timestep_embed_dim=16, text_hidden_dim=32, num_text_layers=2,
                      text_num_attention_heads=2, text_num_key_value_heads=1, text_intermediate_size=64,
                      num_layerwise_text_blocks=1, num_refiner_text_blocks=1, axes_dims_rope=(8, 4, 4)),
                 _krea2, pipeline="krea2/pipeline_krea2.py"),
    CatalogEntry("LTX2VideoTransformer3DModel",
                 dict(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2,
                      attention_head_dim=16, cross_attention_dim=32, audio_in_channels=8, audio_out_channels=8,
                      audio_num_attention_heads=2, audio_attention_head_dim=8, audio_cross_attention_dim=16,
                      num_layers=2, caption_channels=32, rope_double_precision=False),
                 _ltx2, pipeline="ltx2/pipeline_ltx2.py"),
    CatalogEntry("LTXVideoTransformer3DModel",
                 dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16,
                      cross_attention_dim=32, num_layers=2, caption_channels=32),
                 _ltx, pipeline="ltx/pipeline_ltx.py"),
    CatalogEntry("LatteTransformer3DModel",
                 dict(sample_size=16, num_layers=2, patch_size=2, attention_head_dim=16, num_attention_heads=2,
                      caption_channels=32, in_channels=4, cross_attention_dim=32, out_channels=8, attention_bias=True,
                      activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
                      norm_elementwise_affine=False, norm_eps=1e-6, video_length=2),
                 _latte, pipeline="latte/pipeline_latte.py"),
    CatalogEntry("LongCatAudioDiTTransformer",
                 dict(dit_dim=64, dit_depth=2, dit_heads=4, dit_text_dim=32, latent_dim=8, text_conv=False),
                 _longcat_audio, kind="audio", pipeline="longcat_audio_dit/pipeline_longcat_audio_dit.py"),
    CatalogEntry("LongCatImageTransformer2DModel",
                 dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                      axes_dims_rope=[4, 6, 6]),
                 _longcat_image, pipeline="longcat_image/pipeline_longcat_image.py"),
    CatalogEntry("Lumina2Transformer2DModel",
                 dict(sample_size=16, patch_size=2, in_channels=4, hidden_size=64, num_layers=2, num_refiner_layers=1,
                      num_attention_heads=4, num_kv_heads=2, multiple_of=16, norm_eps=1e-5, axes_dim_rope=(8, 4, 4),
                      axes_lens=(64, 32, 32), cap_feat_dim=32),
                 _lumina2, pipeline="lumina2/pipeline_lumina2.py"),
    CatalogEntry("MiniMaxH3Transformer3DModel",
                 dict(num_attention_heads=2, attention_head_dim=16, hidden_size=32, num_layers=2, num_refiner_layers=1,
                      ffn_dim=64, in_channels=4, audio_in_channels=8, patch_size=(1, 2, 2), text_dim=16, freq_dim=16,
                      time_embed_hidden_dim=32, time_embed_dim=16, rope_freq_dim=2),
                 _minimax_h3, pipeline="", notes="no pipeline in this diffusers; inputs follow the diffusers tests' "
                                                 "packed layout (text, audio, video rows)"),
    CatalogEntry("MiniMaxMusic3Transformer1DModel",
                 dict(in_channels=8, condition_dim=16, num_layers=2, num_attention_heads=2, attention_head_dim=16,
                      ff_inner_dim=64, rotary_dim=8, fourier_embedding_dim=16),
                 _music3, kind="audio", pipeline="", notes="no pipeline in this diffusers"),
    CatalogEntry("MochiTransformer3DModel",
                 dict(patch_size=2, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                      pooled_projection_dim=16, in_channels=4, qk_norm="rms_norm", text_embed_dim=32,
                      time_embed_dim=16, activation_fn="swiglu", max_sequence_length=16),
                 _mochi, pipeline="mochi/pipeline_mochi.py"),
    CatalogEntry("MotifVideoTransformer3DModel",
                 dict(in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1,
                      num_single_layers=1, num_decoder_layers=0, patch_size=1, patch_size_t=1, text_embed_dim=32,
                      rope_axes_dim=(4, 6, 6)),
                 _motif, pipeline="motif_video/pipeline_motif_video.py"),
    CatalogEntry("NucleusMoEImageTransformer2DModel",
                 dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                      num_attention_heads=4, joint_attention_dim=32, axes_dims_rope=(8, 4, 4), moe_enabled=False,
                      capacity_factors=[8.0, 8.0]),
                 _nucleus, pipeline="nucleusmoe_image/pipeline_nucleusmoe_image.py"),
    CatalogEntry("OmniGenTransformer2DModel",
                 dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, intermediate_size=128, num_layers=2,
                      pad_token_id=0, vocab_size=128, in_channels=4, time_step_dim=16,
                      rope_scaling={"long_factor": [1.0] * 8, "short_factor": [1.0] * 8}),
                 _omnigen, pipeline="omnigen/pipeline_omnigen.py"),
    CatalogEntry("OvisImageTransformer2DModel",
                 dict(patch_size=1, in_channels=16, out_channels=16, num_layers=1, num_single_layers=1,
                      attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(4, 6, 6)),
                 _flux_like(16, 32), pipeline="ovis_image/pipeline_ovis_image.py"),
    CatalogEntry("PRXTransformer2DModel",
                 dict(in_channels=16, patch_size=2, context_in_dim=32, hidden_size=64, mlp_ratio=2.0, num_heads=4,
                      depth=2, axes_dim=[8, 8]),
                 _prx, pipeline="prx/pipeline_prx.py"),
    CatalogEntry("PixArtTransformer2DModel",
                 dict(sample_size=16, num_layers=2, patch_size=2, attention_head_dim=16, num_attention_heads=2,
                      in_channels=4, cross_attention_dim=32, out_channels=8, caption_channels=32,
                      use_additional_conditions=False),
                 _pixart, pipeline="pixart_alpha/pipeline_pixart_sigma.py"),
    CatalogEntry("PriorTransformer",
                 dict(num_attention_heads=2, attention_head_dim=16, num_layers=2, embedding_dim=32, num_embeddings=16,
                      additional_embeddings=4),
                 _prior, kind="prior", pipeline="kandinsky/pipeline_kandinsky_prior.py"),
    CatalogEntry("QwenImage21Transformer2DModel",
                 dict(patch_size=1, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16,
                      num_attention_heads=2, context_in_dim=32, mlp_ratio=2, axes_dims_rope=(4, 6, 6)),
                 _qwenimage21, pipeline="qwenimage21/pipeline_qwenimage21.py"),
    CatalogEntry("QwenImageTransformer2DModel",
                 dict(patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                      num_attention_heads=4, joint_attention_dim=32, guidance_embeds=False, axes_dims_rope=(8, 4, 4)),
                 _qwenimage, pipeline="qwenimage/pipeline_qwenimage.py"),
    CatalogEntry("RFD4ProteinaTransformer",
                 dict(nlayers=2, token_dim=64, nheads=4, dim_cond=32, pair_repr_dim=16, latent_dim=8,
                      token_type_emb_dim=8, cath_emb_dim=8, t_emb_dim=32, seq_sep_dim=8, xt_pair_dist_dim=8,
                      feats_seq=("xt_bb_ca", "xt_local_latents", "token_type"),
                      feats_cond_seq=("time_emb_bb_ca", "time_emb_local_latents"),
                      feats_pair_repr=("xt_bb_ca_pair_dists",), feats_pair_cond=("time_emb_bb_ca",),
                      update_pair_repr_every_n=2, tri_mult_c=16),
                 _rfd4, kind="protein", pipeline="rfd4_proteina/pipeline_rfd4_proteina.py"),
    CatalogEntry("SD3Transformer2DModel",
                 dict(sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=16,
                      num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=64,
                      pooled_projection_dim=32, out_channels=4, pos_embed_max_size=16, qk_norm="rms_norm"),
                 _sd3, pipeline="stable_diffusion_3/pipeline_stable_diffusion_3.py"),
    CatalogEntry("SanaTransformer2DModel",
                 dict(patch_size=1, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16,
                      num_attention_heads=2, num_cross_attention_heads=2, cross_attention_head_dim=16,
                      cross_attention_dim=32, caption_channels=32, sample_size=16),
                 _sana, pipeline="sana/pipeline_sana.py"),
    CatalogEntry("SanaVideoTransformer3DModel",
                 dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
                      num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32,
                      caption_channels=32, sample_size=16, patch_size=(1, 2, 2), rope_max_seq_len=32),
                 _sana_video, pipeline="sana_video/pipeline_sana_video.py"),
    CatalogEntry("SanaWMLTX2RefinerTransformer3DModel",
                 dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=16,
                      cross_attention_dim=32, num_layers=2, caption_channels=32, audio_in_channels=8,
                      audio_out_channels=8, audio_num_attention_heads=2, audio_attention_head_dim=8,
                      audio_cross_attention_dim=16, rope_double_precision=False),
                 _sana_wm_refiner, pipeline="sana_wm/refiner.py"),
    CatalogEntry("SanaWMTransformer3DModel",
                 dict(in_channels=8, num_layers=2, hidden_size=64, num_attention_heads=4, linear_head_dim=16,
                      softmax_every_n=2, caption_channels=32, mlp_ratio=2.0, chunk_plucker_post_attn_blocks=0,
                      use_chunk_plucker_post_attn=False, image_size=64, mixed_precision="fp32",
                      fp32_attention=False),
                 _sana_wm, pipeline="sana_wm/pipeline_sana_wm.py"),
    CatalogEntry("SkyReelsV2Transformer3DModel", dict(_WAN), _skyreels, pipeline="skyreels_v2/pipeline_skyreels_v2.py"),
    CatalogEntry("Transformer2DModel",
                 dict(num_attention_heads=2, attention_head_dim=16, in_channels=32, num_layers=1, norm_num_groups=8,
                      cross_attention_dim=32, use_linear_projection=True),
                 _unet_block, kind="block", pipeline="",
                 notes="the spatial transformer of SD-style UNets (continuous input, cross-attention); no pipeline "
                       "calls it directly"),
    CatalogEntry("TransformerTemporalModel",
                 dict(num_attention_heads=2, attention_head_dim=16, in_channels=32, num_layers=1, norm_num_groups=8),
                 _temporal, kind="block", pipeline="",
                 notes="a temporal (motion) transformer inside video UNets; no pipeline calls it directly"),
    CatalogEntry("WanAnimate2Transformer3DModel",
                 dict(patch_size=(1, 2, 2), text_len=16, in_dim=8, dim=32, ffn_dim=64, freq_dim=32, text_dim=32,
                      out_dim=4, num_heads=2, num_layers=2, use_img_emb=True),
                 _wan_animate2, pipeline="", notes="no pipeline in this diffusers; the reference (extract) pass"),
    CatalogEntry("WanAnimateTransformer3DModel",
                 dict(_WAN, in_channels=12, latent_channels=4, out_channels=4, image_dim=32,
                      motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=16,
                      motion_style_dim=8, motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16,
                      face_encoder_num_heads=2, inject_face_latents_blocks=2, motion_encoder_batch_size=4),
                 _wan_animate, pipeline="wan/pipeline_wan_animate.py"),
    CatalogEntry("WanTransformer3DModel", dict(_WAN), _wan, pipeline="wan/pipeline_wan.py"),
    CatalogEntry("WanVACETransformer3DModel", dict(_WAN, num_layers=4, vace_layers=[0, 2], vace_in_channels=12),
                 _wan_vace, pipeline="wan/pipeline_wan_vace.py"),
    CatalogEntry("ZImageTransformer2DModel",
                 dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=64, n_layers=2,
                      n_refiner_layers=1, n_heads=4, n_kv_heads=4, cap_feat_dim=32, axes_dims=[8, 4, 4],
                      axes_lens=[256, 32, 32]),
                 _zimage, pipeline="z_image/pipeline_z_image.py"),
]

ENTRIES = {e.class_name: e for e in _ENTRIES}


def exported_transformer_classes() -> list:
    """Every name in dir(diffusers) containing "Transformer" that is an nn.Module subclass, sorted."""
    import diffusers

    found = []
    for name in dir(diffusers):
        if "Transformer" not in name:
            continue
        cls = getattr(diffusers, name)
        if inspect.isclass(cls) and issubclass(cls, torch.nn.Module):
            found.append(name)
    return sorted(found)


def names() -> list:
    return sorted(ENTRIES)


def entry(name: str) -> CatalogEntry:
    if name not in ENTRIES:
        raise KeyError(f"no catalog entry for {name!r}; the catalog has {len(ENTRIES)} classes")
    return ENTRIES[name]


def model_class(name: str):
    import diffusers

    return getattr(diffusers, entry(name).class_name)


def build(name: str, device: str = "cpu", seed: int = 0) -> torch.nn.Module:
    """The tiny model with seeded random weights (every layer live: model_zoo.randomize_), eval mode."""
    e = entry(name)
    with torch.device(device):
        model = model_class(name)(**e.config)
    model.eval()
    if device != "meta":
        randomize_(model, seed)
    return model


def example_inputs(name: str, seed: int = 0, model: torch.nn.Module | None = None) -> dict:
    """Seeded keyword arguments for forward, as the class's pipeline passes them (batch 1: one cfg branch). A few
    builders read the model (its config, or a method that makes position tables the pipeline asks it for); the model
    is built when not given."""
    e = entry(name)
    if model is None:
        model = build(name, seed=seed)
    return e.inputs(_Rand(seed + 1), model)


def run_torch(name: str, seed: int = 0):
    """The golden: build the model, call it in torch on its example inputs (return_dict=False), return the outputs."""
    model = build(name, seed=seed)
    inputs = example_inputs(name, seed, model)
    with torch.no_grad():
        return model(**inputs, return_dict=False)


__all__ = ["CatalogEntry", "ENTRIES", "names", "entry", "build", "example_inputs", "run_torch",
           "exported_transformer_classes", "model_class"]
