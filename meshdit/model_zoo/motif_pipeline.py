"""Motif-Image-6B's text-to-image pipeline, written in diffusers' style (diffusers does not ship Motif).

    pipe = MotifPipeline(transformer, scheduler, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                         text_encoder_3, tokenizer_3)
    image = pipe("a cat", num_inference_steps=20, guidance_scale=5.0).images[0]

Motif conditions as SD3 does (research notes, tt_dit_design.md section 8.1): CLIP-L and CLIP-G penultimate hidden
states joined on channels and zero-padded to T5's width, in front of T5 (FLAN-T5-XXL, 256 tokens, padded positions
zeroed), pooled CLIP-L | CLIP-G as the pooled text; SD3's VAE. So this is StableDiffusion3Pipeline's prompt encoding
with Motif's own denoising loop:

* classifier-free guidance with Motif's negative-prompt switch: while the timestep is at or above
  `negative_switch` x 1000 the unconditional half uses the negative prompt's embeddings, afterwards zeros;
* a rectified-flow Euler sampler, the scheduler's sigmas (Motif's own linear-quadratic schedule is not reproduced
  here: pass `sigmas` to use another);
* latents of the size the transformer's position table fixes (its config's height and width over vae_compression).
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor


class MotifPipeline(StableDiffusion3Pipeline):
    model_cpu_offload_seq = "text_encoder->text_encoder_2->text_encoder_3->transformer->vae"
    _optional_components = []

    def __init__(self, transformer, scheduler, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2,
                 text_encoder_3, tokenizer_3):
        # SD3's __init__ reads SD3 transformer config fields Motif's config does not have; set what encode_prompt
        # and decoding need instead
        DiffusionPipeline.__init__(self)
        self.register_modules(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                              text_encoder_3=text_encoder_3, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
                              tokenizer_3=tokenizer_3, transformer=transformer, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.tokenizer_max_length = self.tokenizer.model_max_length

    def _get_t5_prompt_embeds(self, prompt=None, num_images_per_prompt: int = 1, max_sequence_length: int = 256,
                              device=None, dtype=None):
        """T5's hidden states with the padded positions zeroed, as Motif's text conditioning masks them."""
        device = device or self._execution_device
        dtype = dtype or self.text_encoder_3.dtype
        prompt = [prompt] if isinstance(prompt, str) else prompt
        tokens = self.tokenizer_3(prompt, padding="max_length", max_length=max_sequence_length, truncation=True,
                                  add_special_tokens=True, return_tensors="pt")
        mask = tokens.attention_mask.to(device)
        embeds = self.text_encoder_3(tokens.input_ids.to(device))[0] * mask[..., None]
        embeds = embeds.to(dtype=dtype, device=device)
        return embeds.repeat_interleave(num_images_per_prompt, dim=0)

    @torch.no_grad()
    def __call__(self, prompt, negative_prompt=None, num_inference_steps: int = 20, guidance_scale: float = 5.0,
                 negative_switch: float = 0.85, sigmas=None, num_images_per_prompt: int = 1, generator=None,
                 max_sequence_length: int = 256, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",)):
        device = self._execution_device
        cfg = guidance_scale > 1.0
        positive, negative, pooled, negative_pooled = self.encode_prompt(
            prompt, None, None, device=device, num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=cfg, negative_prompt=negative_prompt, max_sequence_length=max_sequence_length)
        config = self.transformer.config
        shape = (positive.shape[0], config.latent_channels, config.height // config.vae_compression,
                 config.width // config.vae_compression)
        latents = randn_tensor(shape, generator=generator, device=device, dtype=positive.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device, **({"sigmas": sigmas} if sigmas else {}))
        for step, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            if cfg:
                switched = t < negative_switch * self.scheduler.config.num_train_timesteps
                unconditional = torch.zeros_like(negative) if switched else negative
                prompt_embeds = torch.cat([unconditional, positive])
                pooled_embeds = torch.cat([torch.zeros_like(negative_pooled) if switched else negative_pooled,
                                           pooled])
                model_input = torch.cat([latents] * 2)
            else:
                prompt_embeds, pooled_embeds, model_input = positive, pooled, latents
            velocity = self.transformer(hidden_states=model_input, encoder_hidden_states=prompt_embeds,
                                        pooled_projections=pooled_embeds, timestep=t.expand(model_input.shape[0]),
                                        return_dict=False)[0]
            if cfg:
                uncond, cond = velocity.chunk(2)
                velocity = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
            if callback_on_step_end is not None:
                values = {"latents": latents, "prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled_embeds}
                tensors = callback_on_step_end(self, step, t, {k: values[k] for k in
                                                               callback_on_step_end_tensor_inputs})
                latents = tensors.pop("latents", latents)
        if output_type == "latent":
            image = latents
        else:
            latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
            image = self.image_processor.postprocess(self.vae.decode(latents, return_dict=False)[0],
                                                     output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=image) if return_dict else (image,)
