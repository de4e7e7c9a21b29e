"""Tiny diffusers pipelines around the zoo's tiny transformers, built locally from configs (nothing downloaded).

    pipe = pipelines.tiny_pipeline("sd3", vocab_dir)       # StableDiffusion3Pipeline around sd3-tiny (also flux,
                                                           # mochi, and motif: model_zoo/motif_pipeline.py)
    pipe.transformer = meshdit.compile_transformer(pipe.transformer, "2x4 cfg2@1 sp2@0 tp2@1")
    out = pipe(**pipelines.call_arguments("sd3"))

Text encoders (CLIP, T5) are one-layer random models, tokenizers are word-level over a small vocabulary written to
`vocab_dir`, the VAE has two or four narrow levels. Each pipeline's prompt length and latent size are chosen so
its transformer sees the zoo entry's input shapes (sd3-tiny, flux-tiny, mochi-tiny): those are the shapes the zoo's
seed parallel configs are known to divide.
"""

from __future__ import annotations

import json
import os

import torch

from . import build

PROMPT = "a small red cube on a wooden table in the morning light"
NEGATIVE = "blurry dark low quality"
FAMILIES = ("sd3", "flux", "mochi", "motif")
WORDS = sorted(set((PROMPT + " " + NEGATIVE + " an image of a photo with the sun and a tree").split()))


def _tokenizer(vocab_dir: str, max_length: int):
    """A word-level fast tokenizer over WORDS, saved to and loaded from vocab_dir/vocab.json (ids 0-3 special)."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    os.makedirs(vocab_dir, exist_ok=True)
    path = os.path.join(vocab_dir, "vocab.json")
    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    with open(path, "w") as f:
        json.dump({word: i for i, word in enumerate(specials + WORDS)}, f)
    model = Tokenizer(WordLevel.from_file(path, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=model, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>", model_max_length=max_length)


def vocab_size() -> int:
    return 4 + len(WORDS)


def _clip(hidden: int, max_length: int, projection: bool, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab_size(), hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=max_length,
                            projection_dim=hidden, pad_token_id=0, eos_token_id=1, bos_token_id=3)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _t5(d_model: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size(), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1,
                      num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def _vae(latent_channels: int, seed: int):
    """Two levels: a vae_scale_factor of 2, so a 32x32 image has a 16x16 latent."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=8, sample_size=32, scaling_factor=1.5,
                         shift_factor=0.1, use_quant_conv=False, use_post_quant_conv=False).eval()


def _mochi_vae(latent_channels: int, seed: int):
    """Mochi's pipeline fixes the VAE's scale factors (8 spatial, 6 temporal): three up levels as Mochi's, with 32
    channels (its chunked group norm has 32 groups) and one layer each. No latents mean/std: the pipeline reshapes
    them to Mochi-1's 12 channels."""
    from diffusers import AutoencoderKLMochi

    torch.manual_seed(seed)
    return AutoencoderKLMochi(latent_channels=latent_channels, encoder_block_out_channels=(32,) * 4,
                              decoder_block_out_channels=(32,) * 4, layers_per_block=(1,) * 5,
                              add_attention_block=(False,) * 5, latents_mean=None, latents_std=None,
                              scaling_factor=1.5).eval()


def _sd3_encoders(vocab_dir: str, clip_tokens: int, t5_tokens: int, seed: int) -> dict:
    """SD3's three text encoders and tokenizers (Motif conditions the same way): CLIP-L and CLIP-G (hidden 8 + 24 =
    the joint width 32, pooled 32) and T5 (d_model 32)."""
    return dict(text_encoder=_clip(8, clip_tokens, True, seed + 2), tokenizer=_tokenizer(vocab_dir, clip_tokens),
                text_encoder_2=_clip(24, clip_tokens, True, seed + 3), tokenizer_2=_tokenizer(vocab_dir, clip_tokens),
                text_encoder_3=_t5(32, seed + 4), tokenizer_3=_tokenizer(vocab_dir, t5_tokens))


def tiny_pipeline(family: str, vocab_dir: str, seed: int = 0):
    """A StableDiffusion3Pipeline ("sd3"), FluxPipeline ("flux"), MochiPipeline ("mochi") or MotifPipeline ("motif")
    around the zoo's tiny transformer of that family, on CPU in float32. Weights are seeded: two calls build the
    same pipeline."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if family == "sd3":
        from diffusers import StableDiffusion3Pipeline

        # prompt: 16 CLIP tokens then 16 T5 tokens
        return StableDiffusion3Pipeline(
            transformer=build("sd3-tiny", seed=seed), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=_vae(4, seed + 1), **_sd3_encoders(vocab_dir, 16, 16, seed))
    if family == "flux":
        from diffusers import FluxPipeline

        # 2x2-packed latents: 16 = 4 latent channels x 4, a 32x32 image gives 8x8 = 64 image tokens
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                    base_image_seq_len=64, max_image_seq_len=4096)
        return FluxPipeline(
            transformer=build("flux-tiny", seed=seed), scheduler=scheduler, vae=_vae(4, seed + 1),
            text_encoder=_clip(32, 16, False, seed + 2), tokenizer=_tokenizer(vocab_dir, 16),
            text_encoder_2=_t5(32, seed + 4), tokenizer_2=_tokenizer(vocab_dir, 32))
    if family == "mochi":
        from diffusers import MochiPipeline

        return MochiPipeline(
            transformer=build("mochi-tiny", seed=seed), scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=_mochi_vae(4, seed + 1), text_encoder=_t5(32, seed + 4), tokenizer=_tokenizer(vocab_dir, 32))
    if family == "motif":
        from .motif_pipeline import MotifPipeline

        # SD3's encoders: 15 CLIP tokens then 16 T5 tokens, and the transformer's time token makes 32
        return MotifPipeline(
            transformer=build("motif-tiny", seed=seed), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=_vae(4, seed + 1), **_sd3_encoders(vocab_dir, 15, 16, seed))
    raise KeyError(f"no tiny pipeline for family {family!r}; there are {', '.join(FAMILIES)}")


def call_arguments(family: str, steps: int = 2, seed: int = 0) -> dict:
    """The pipeline call that gives the tiny transformer its zoo shapes, with a fixed generator."""
    common = dict(prompt=PROMPT, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed))
    if family == "sd3":
        return common | dict(negative_prompt=NEGATIVE, height=32, width=32, guidance_scale=4.0,
                             max_sequence_length=16, output_type="np")
    if family == "flux":
        return common | dict(height=32, width=32, guidance_scale=3.5, max_sequence_length=32, output_type="np")
    if family == "mochi":
        return common | dict(negative_prompt=NEGATIVE, height=64, width=64, num_frames=7, guidance_scale=4.5,
                             max_sequence_length=32, output_type="np")
    if family == "motif":  # the image size follows the transformer (its position table); 2 steps cross the switch
        return common | dict(negative_prompt=NEGATIVE, guidance_scale=5.0, negative_switch=0.7,
                             max_sequence_length=16, output_type="np")
    raise KeyError(f"no tiny pipeline for family {family!r}; there are {', '.join(FAMILIES)}")
