"""Tiny random-weight diffusers / CLIP models built from configs, fully offline (no hub access).

``build_tiny_sd(path)`` writes a StableDiffusionPipeline (model_index.json, unet/, vae/, text_encoder/,
tokenizer/, scheduler/) that makes 32x32 images in well under a second per step on a laptop CPU, so the real
``from_pretrained`` → generate path runs in tests. ``build_tiny_clip(path)`` writes a CLIPModel + processor for
the CLIP score filter. Both are seeded, so two builds give identical weights. The tokenizer is built from a
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
