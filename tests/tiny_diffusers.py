"""Tiny random-weight diffusers / CLIP models built from configs, fully offline (no hub access).

``build_tiny_sd(path)`` writes a StableDiffusionPipeline (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/) that makes 32x32 images in well under a second per step on a laptop CPU, so the real
``from_pretrained`` → generate path runs in tests. ``build_tiny_clip(path)`` writes a CLIPModel + processor for
the CLIP score filter (and for CLIP zero-shot evaluation). ``build_tiny_sdxl``, ``build_tiny_sd3`` and
``build_tiny_flux`` write the other pipeline families the backend supports (SDXL / SDXL-Turbo, SD3 / SD3.5,
FLUX.1) at the same toy scale, and ``build_tiny_lora`` a random-weight LoRA adapter for the tiny SD pipeline in
the diffusers/peft file format (``pytorch_lora_weights.safetensors``). All are seeded, so two builds give
identical weights. The tokenizer is built from a
vocab and merges written here; ``CLIPTokenizer(vocab_file=...)`` is a trap in transformers 5 (silently
ignored, every character maps to one id), so we pass ``vocab=`` / ``merges=`` with merges as tuples.
"""

from __future__ import annotations

import os
import string

import torch

_TEXT_HIDDEN = 32
_VOCAB_SIZE = 1000


def _tiny_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A character-level BPE vocab (+ a few merges for common prompt words) under _VOCAB_SIZE entries."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    # Merging a few frequent pairs makes prompts tokenize into fewer, word-like pieces, as a real CLIP BPE does.
    for a, b in [("t", "h"), ("th", "e</w>"), ("a", "n"), ("o", "n</w>"), ("i", "n</w>"), ("o", "f</w>")]:
        merges.append((a, b))
        tokens.append(a + b)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    assert len(vocab) < _VOCAB_SIZE
    return vocab, merges


def tiny_tokenizer():
    """A CLIPTokenizer over the tiny vocab; pads/truncates to 77 like the real one."""
    from transformers import CLIPTokenizer

    vocab, merges = _tiny_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _text_config_kwargs() -> dict:
    # bos/eos/pad ids follow the vocab above: <|startoftext|>=0, <|endoftext|>=1 (also used as pad).
    return dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=_TEXT_HIDDEN, intermediate_size=37,
                layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2, vocab_size=_VOCAB_SIZE,
                max_position_embeddings=77, projection_dim=_TEXT_HIDDEN)


def build_tiny_sd(path: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny random-weight StableDiffusionPipeline to ``path`` (32x32 images); return the path."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = str(path)
    torch.manual_seed(seed)  # seeded init: the same fixture every build, so tests compare exact pixels
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=_TEXT_HIDDEN, attention_head_dim=8, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=32,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**_text_config_kwargs()))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path)
    return path


def _tiny_vae(latent_channels: int = 4, flow: bool = False):
    from diffusers import AutoencoderKL

    # SD3/FLUX VAEs have no quant convs and a latent shift; their values are the real models' (any would do).
    extra = dict(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False) \
        if flow else {}
    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=latent_channels,
                         layers_per_block=1, down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=32, sample_size=32, **extra)


def tiny_t5_tokenizer():
    """A T5 (Unigram) tokenizer over lowercase characters and digits, built from a vocab list (no download)."""
    from transformers import T5Tokenizer

    chars = list(string.ascii_lowercase + string.digits + " ,.-")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + c, -1.0) for c in chars] + [(c, -2.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _tiny_t5(d_model: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tiny_t5_tokenizer()), d_model=d_model, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0,
                                   pad_token_id=0, eos_token_id=1))


def build_tiny_sdxl(path: str | os.PathLike, seed: int = 0) -> str:
    """A tiny StableDiffusionXLPipeline (two text encoders, text-time embeddings), saved with SDXL-Turbo's
    scheduler (Euler ancestral, trailing timesteps); 32x32 images."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * _TEXT_HIDDEN, attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        # pooled text embedding (text_encoder_2's projection) + 6 micro-conditioning numbers × 8
        projection_class_embeddings_input_dim=_TEXT_HIDDEN + 6 * 8, norm_num_groups=32,
    )
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                timestep_spacing="trailing")
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(), unet=unet, scheduler=scheduler, tokenizer=tiny_tokenizer(), tokenizer_2=tiny_tokenizer(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**_text_config_kwargs())),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**_text_config_kwargs())))
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_sd3(path: str | os.PathLike, seed: int = 0) -> str:
    """A tiny StableDiffusion3Pipeline (MMDiT transformer, two CLIP encoders and a T5, flow-matching Euler)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    # joint_attention_dim = the T5 width, which must hold the two CLIP widths side by side (SD3 pads them to it)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=2 * _TEXT_HIDDEN, pooled_projection_dim=2 * _TEXT_HIDDEN)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(flow=True),
        text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**_text_config_kwargs())), tokenizer=tiny_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**_text_config_kwargs())),
        tokenizer_2=tiny_tokenizer(), text_encoder_3=_tiny_t5(2 * _TEXT_HIDDEN), tokenizer_3=tiny_t5_tokenizer())
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_flux(path: str | os.PathLike, seed: int = 0) -> str:
    """A tiny FluxPipeline shaped like FLUX.1-schnell (no guidance embedding; CLIP + T5, flow-matching Euler).
    Its default size is 256²; tests ask for 32²."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    # FLUX packs 2×2 latent patches: in_channels = 4 × the VAE's latent channels; the RoPE axes sum to the head dim
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=_TEXT_HIDDEN,
                                         pooled_projection_dim=_TEXT_HIDDEN, axes_dims_rope=[4, 4, 8],
                                         guidance_embeds=False)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_vae(latent_channels=1, flow=True),
                        text_encoder=CLIPTextModel(CLIPTextConfig(**_text_config_kwargs())), tokenizer=tiny_tokenizer(),
                        text_encoder_2=_tiny_t5(_TEXT_HIDDEN), tokenizer_2=tiny_t5_tokenizer(), transformer=transformer)
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_lora(path: str | os.PathLike, model: str | os.PathLike, seed: int = 0, rank: int = 4) -> str:
    """A random-weight LoRA (rank ``rank``, on the UNet's attention projections) for the tiny SD pipeline at
    ``model``, saved as diffusers saves trained LoRAs. peft initialises lora_B to zero (a no-op adapter), so both
    matrices are random here: the adapter changes the images."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(os.path.join(str(model), "unet"))
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    unet.add_adapter(config, adapter_name="tiny")
    layers = get_peft_model_state_dict(unet, adapter_name="tiny")
    StableDiffusionPipeline.save_lora_weights(str(path), unet_lora_layers=layers)
    return str(path)


def build_tiny_clip(path: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny random-weight CLIPModel + CLIPProcessor (32x32 images) to ``path``; return the path."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    path = str(path)
    torch.manual_seed(seed)
    text = _text_config_kwargs()
    vision = dict(hidden_size=_TEXT_HIDDEN, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                  image_size=32, patch_size=8, projection_dim=_TEXT_HIDDEN)
    config = CLIPConfig(text_config=text, vision_config=CLIPVisionConfig(**vision).to_dict(),
                        projection_dim=_TEXT_HIDDEN)
    model = CLIPModel(config)
    model.save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer()).save_pretrained(path)
    return path


# docs/reproducibility.md, guarantee 2: the same row in another batch (position, neighbours, batch size), in
# another process or on another CPU gives pixels equal within these bounds, in 0–255 levels per channel.
# Measured: 0 on AMD EPYC (AVX-512, no AMX); one pixel off by one level was seen on AVX-512/AMX machines when a
# row sat at another batch position.
MAX_LEVELS = 2
MEAN_LEVELS = 0.05


def assert_close_pixels(a, b, what: str = "") -> None:
    """Equal within the stated cross-batch tolerance, and so far from 'another image' (tens of levels)."""
    import numpy as np

    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, \
        f"{what}: max |diff| {diff.max()} levels (≤ {MAX_LEVELS}), mean {diff.mean():.4f} (≤ {MEAN_LEVELS})"
