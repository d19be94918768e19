"""CLIP image–text agreement filter: drop generated images that do not show what their prompt asked for.

The score is CLIPScore's: 100 × cosine similarity of the CLIP image and text embeddings of each (image, prompt)
pair (CLIPScore also clamps negatives to 0, which changes no keep/drop decision for a positive threshold, so we
keep the raw value for the run summary). The model is a local directory, a hub id or an ``s3://`` prefix (synced
once per node by :mod:`pipelines.model_source`), saved with ``CLIPModel`` + ``CLIPProcessor``. No Ray here.
"""

from __future__ import annotations

import torch
from PIL import Image

from ffr.errors import FFRError
from pipelines.model_source import resolve_model


class ClipScoreFilter:
    """``scores(images, prompts)`` → CLIPScore per pair; ``keep`` → score >= threshold."""

    def __init__(self, model_path: str, threshold: float, device: str = "auto", cache_dir: str | None = None,
                 batch_size: int = 32) -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        path = resolve_model(model_path, cache_dir)
        try:
            self.model = CLIPModel.from_pretrained(path).to(self.device).eval()
            self.processor = CLIPProcessor.from_pretrained(path)
        except OSError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FFRError(f"cannot load CLIP model {model_path!r}: {first}") from None

    @torch.inference_mode()
    def scores(self, images: list[Image.Image], prompts: list[str]) -> list[float]:
        """100 × cos(image embedding, text embedding) for each (image, prompt) pair, in order."""
        if len(images) != len(prompts):
            raise FFRError(f"CLIP filter needs one prompt per image: got {len(images)} images, {len(prompts)} prompts")
        out: list[float] = []
        for start in range(0, len(images), self.batch_size):
            batch_images = [im.convert("RGB") for im in images[start:start + self.batch_size]]
            inputs = self.processor(text=list(prompts[start:start + self.batch_size]), images=batch_images,
                                    return_tensors="pt", padding=True, truncation=True).to(self.device)
            result = self.model(**inputs)
            # CLIPModel returns L2-normalised projected embeddings, so the row-wise dot product is the cosine.
            cosine = (result.image_embeds * result.text_embeds).sum(dim=-1)
            out.extend((100.0 * cosine).float().cpu().tolist())
        return out

    def keep(self, images: list[Image.Image], prompts: list[str]) -> list[bool]:
        """True where the image's CLIPScore against its prompt reaches the threshold."""
        return [score >= self.threshold for score in self.scores(images, prompts)]
