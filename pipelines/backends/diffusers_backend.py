"""The ``diffusers`` generator backend: text-to-image and img2img with any diffusers pipeline that fits.

The pipeline class comes from the model's ``model_index.json`` (``AutoPipelineForText2Image``; SD 1.x/2.x, SDXL,
SDXL-Turbo, LCM...), and img2img reuses the same weights through ``AutoPipelineForImage2Image.from_pipe``. The
model is a hub id, a local directory or an ``s3://`` prefix synced to local disk (:mod:`pipelines.model_source`).

Reproducibility: every row gets its own CPU ``torch.Generator`` seeded from its ``seed`` (CPU so the initial noise
does not depend on the GPU model). Per-image generators alone are not enough: batched convolutions and matmuls are
not bit-identical across batch *sizes* (measured on CPU: ~1e-6 differences, sometimes one pixel level after
rounding). So every pipeline call has the same shape: rows are cut into micro-batches of exactly ``batch_size``
and the last one is padded by repeating its last row (the extra images are dropped). Fixed shapes make a row's
pixels the same whichever rows share its batch on many CPUs, but not on all: on AVX-512/AMX CPUs a row at
another batch position can come out one level off. docs/reproducibility.md states what is guaranteed (same
batch → same bytes; any batch → within a stated tolerance) and tests check exactly that. For the Ray job, use a
batch size that is a multiple of ``batch_size`` so no padding is wasted.

Settings (keyword arguments of the constructor; ``DiffusersSettings`` below lists defaults). Per-row overrides:
a row may carry ``steps``, ``guidance_scale``, ``strength``, ``width``, ``height`` (None/NaN = backend setting);
rows with different effective settings go to separate pipeline calls, so recipes such as d3s-background
(50 steps, guidance 5, strength 0.9) can set them in the manifest. A configured safety checker is kept: the
pipeline blacks out flagged images and the black-image filter records them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ffr.errors import FFRError
from ffr.registry import Registry
from pipelines.backends.base import BACKENDS, GeneratorBackend
from pipelines.model_source import check_model_source, resolve_model

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
ATTENTION = ("sdpa", "xformers")
ROW_OVERRIDES = ("steps", "guidance_scale", "strength", "width", "height")

# name → (pipeline scheduler config → scheduler). Built from the model's own scheduler config so betas,
# prediction type and timestep spacing stay those the model was trained with.
SCHEDULERS: Registry[Callable[[dict], Any]] = Registry("scheduler")


def _scheduler(name: str, class_name: str, **overrides: Any) -> None:
    def build(config: dict) -> Any:
        import diffusers

        return getattr(diffusers, class_name).from_config(config, **overrides)

    SCHEDULERS.register(name)(build)


_scheduler("ddim", "DDIMScheduler")
_scheduler("ddpm", "DDPMScheduler")
_scheduler("pndm", "PNDMScheduler", skip_prk_steps=True)  # as SD ships it; PRK warm-up breaks at few steps
_scheduler("euler", "EulerDiscreteScheduler")
_scheduler("euler_a", "EulerAncestralDiscreteScheduler")
_scheduler("heun", "HeunDiscreteScheduler")
_scheduler("lms", "LMSDiscreteScheduler")
_scheduler("dpm++", "DPMSolverMultistepScheduler")
_scheduler("dpm++_karras", "DPMSolverMultistepScheduler", use_karras_sigmas=True)
_scheduler("dpm++_sde", "DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++")
_scheduler("unipc", "UniPCMultistepScheduler")
_scheduler("lcm", "LCMScheduler")


@dataclass
class DiffusersSettings:
    model: str = ""
    cache_dir: str | None = None  # where s3:// models are synced; default $FFR_MODEL_CACHE or ~/.cache/ffr/models
    variant: str | None = None  # weight file variant on the hub, e.g. "fp16"
    dtype: str = "fp16"  # fp32 | fp16 | bf16; fp16/bf16 fall back to fp32 (with a warning) on CPU
    device: str = "auto"  # auto = cuda if available else cpu
    attention: str = "sdpa"  # sdpa (PyTorch default) | xformers (must be installed; CUDA only)
    compile: bool = False  # torch.compile the denoiser (UNet / transformer)
    compile_mode: str = "max-autotune-no-cudagraphs"
    channels_last: bool = False
    scheduler: str | None = None  # None keeps the model's scheduler; else a name in SCHEDULERS
    steps: int = 30
    guidance_scale: float = 7.5
    strength: float = 0.8  # img2img only
    width: int | None = None  # None = the model's default size
    height: int | None = None
    batch_size: int = 8  # images per pipeline call; every call is padded to this size (see module docstring)

    def __post_init__(self) -> None:
        if not self.model:
            raise FFRError("diffusers backend needs 'model': a hub id, a local directory or an s3:// prefix")
        if self.dtype not in DTYPES:
            raise FFRError(f"dtype {self.dtype!r} is not supported; expected one of: fp32, fp16, bf16")
        if self.attention not in ATTENTION:
            raise FFRError(f"attention {self.attention!r} is not supported; expected one of: {', '.join(ATTENTION)}")
        if self.scheduler is not None:
            SCHEDULERS.get(self.scheduler)  # unknown names fail here, before the model loads
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            raise FFRError(f"device {self.device!r} is not supported; expected auto, cpu, cuda or cuda:N")
        for name in ("steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise FFRError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0.0 < float(self.strength) <= 1.0:
            raise FFRError(f"strength must be in (0, 1], got {self.strength!r}")


def _row_value(row: dict, key: str, default: Any) -> Any:
    """The row's value, or ``default`` where it is missing, None or NaN (Parquet nulls arrive as either)."""
    value = row.get(key)
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return default
    return value


def _pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise FFRError(f"device {requested!r} was requested but CUDA is not available; use device=auto or cpu")
    return torch.device(requested)


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    dtype = DTYPES[name]
    if dtype != torch.float32 and device.type != "cuda":
        # Half precision on CPU is slow or unsupported for many ops; fall back rather than fail a CPU smoke run.
        warnings.warn(f"dtype {name!r} needs CUDA; running in fp32 on {device}", stacklevel=3)
        return torch.float32
    return dtype


def _require_xformers(device: torch.device) -> None:
    try:
        import xformers  # noqa: F401
    except ImportError:
        raise FFRError("attention 'xformers' was requested but xformers is not installed; "
                       "pip install 'ffr-synth[xformers]' or use attention=sdpa") from None
    if device.type != "cuda":
        raise FFRError(f"attention 'xformers' needs a CUDA device, got {device}; use attention=sdpa")


def _parse_settings(settings: dict[str, Any]) -> DiffusersSettings:
    known = {f.name for f in dataclasses.fields(DiffusersSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise FFRError(f"unknown diffusers backend setting(s) {', '.join(map(repr, unknown))}; "
                       f"expected some of: {', '.join(sorted(known))}")
    return DiffusersSettings(**settings)


@BACKENDS.register("diffusers")
class DiffusersBackend(GeneratorBackend):
    """Loads the pipeline once (per Ray actor) and generates one image per manifest row, in order."""

    name = "diffusers"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.config = _parse_settings(settings)
        self.device = _pick_device(self.config.device)
        self.dtype = _pick_dtype(self.config.dtype, self.device)
        if self.config.attention == "xformers":  # checked before the (slow) model load
            _require_xformers(self.device)
        self.model_path = resolve_model(self.config.model, self.config.cache_dir)
        self.text2image = self._load()
        self._image2image = None

    @classmethod
    def check(cls, settings: dict[str, Any]) -> None:
        """Settings and the model's existence (a local directory, or files under an s3:// prefix); the model
        itself loads in the actors. The device is checked there too: the driver may have no GPU."""
        config = _parse_settings(settings)
        check_model_source(config.model)

    def _load(self):
        from diffusers import AutoPipelineForText2Image, DiffusionPipeline

        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if self.config.variant:
            kwargs["variant"] = self.config.variant
        try:
            try:
                pipe = AutoPipelineForText2Image.from_pretrained(self.model_path, **kwargs)
            except ValueError as err:  # a pipeline class the auto mapping does not know: load it as saved
                if "AutoPipeline" not in str(err):
                    raise
                pipe = DiffusionPipeline.from_pretrained(self.model_path, **kwargs)
        except OSError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FFRError(f"cannot load diffusers model {self.config.model!r}: {first}") from None
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return self._optimize(pipe)

    def _optimize(self, pipe):
        denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
        denoiser = getattr(pipe, denoiser_name, None)
        if self.config.attention == "xformers":
            pipe.enable_xformers_memory_efficient_attention()
        # attention == "sdpa": nothing to do, diffusers uses torch's scaled_dot_product_attention by default.
        if self.config.scheduler is not None:
            pipe.scheduler = SCHEDULERS.get(self.config.scheduler)(pipe.scheduler.config)
        if self.config.channels_last and denoiser is not None:
            denoiser.to(memory_format=torch.channels_last)
            if getattr(pipe, "vae", None) is not None:
                pipe.vae.to(memory_format=torch.channels_last)
        if self.config.compile and denoiser is not None:
            setattr(pipe, denoiser_name, torch.compile(denoiser, mode=self.config.compile_mode))
        return pipe

    @property
    def image2image(self):
        """The img2img pipeline over the same modules (no second copy of the weights), built on first use."""
        if self._image2image is None:
            from diffusers import AutoPipelineForImage2Image

            try:
                self._image2image = AutoPipelineForImage2Image.from_pipe(self.text2image)
            except ValueError as err:
                raise FFRError(f"model {self.config.model!r} ({type(self.text2image).__name__}) has no "
                               f"image-to-image pipeline: {str(err).splitlines()[0]}") from None
            self._image2image.set_progress_bar_config(disable=True)
        return self._image2image

    def _call_settings(self, row: dict, init_image: Image.Image | None) -> tuple:
        """The pipeline-call settings of one row; rows with equal settings share pipeline calls."""
        c = self.config
        steps = int(_row_value(row, "steps", c.steps))
        guidance = float(_row_value(row, "guidance_scale", c.guidance_scale))
        width, height = _row_value(row, "width", c.width), _row_value(row, "height", c.height)
        width, height = (None if width is None else int(width)), (None if height is None else int(height))
        for name, value in (("width", width), ("height", height)):
            if value is not None and (value < 8 or value % 8):
                raise FFRError(f"{name} {value!r} must be a positive multiple of 8")
        strength, init_size = None, None
        if init_image is not None:
            strength = float(_row_value(row, "strength", c.strength))
            if int(steps * strength) < 1:
                raise FFRError(f"img2img with steps={steps} and strength={strength} runs no denoising step; "
                               "expected steps * strength >= 1")
            init_size = init_image.size if width is None or height is None else None
        has_negative = bool(_row_value(row, "negative_prompt", ""))
        return steps, guidance, strength, width, height, has_negative, init_size

    def generate(self, rows: list[dict], init_images: list[Image.Image] | None = None) -> list[Image.Image]:
        """One image per row, in order; rows need ``prompt`` and ``seed``, optionally ``negative_prompt``."""
        if init_images is not None and len(init_images) != len(rows):
            raise FFRError(f"img2img needs one init image per row: got {len(init_images)} images for {len(rows)} rows")
        for row in rows:
            if not isinstance(row.get("prompt"), str) or row.get("seed") is None:
                raise FFRError(f"manifest row {row.get('id', '?')!r} needs a text 'prompt' and an integer 'seed'")
        img2img = init_images is not None
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(self._call_settings(row, init_images[i] if img2img else None), []).append(i)
        out: list[Image.Image | None] = [None] * len(rows)
        size = self.config.batch_size
        for settings, indices in groups.items():
            for start in range(0, len(indices), size):
                chunk = indices[start:start + size]
                padded = chunk + [chunk[-1]] * (size - len(chunk))  # fixed call shape → batch-invariant pixels
                images = self._call([rows[i] for i in padded],
                                    [init_images[i] for i in padded] if img2img else None, settings)
                for i, image in zip(chunk, images):
                    out[i] = image
        return out  # type: ignore[return-value]

    def _call(self, rows: list[dict], init_images: list[Image.Image] | None, settings: tuple) -> list[Image.Image]:
        steps, guidance, strength, width, height, has_negative, _ = settings
        kwargs: dict[str, Any] = {
            "prompt": [row["prompt"] for row in rows],
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "generator": [torch.Generator("cpu").manual_seed(int(row["seed"])) for row in rows],
            "output_type": "pil",
        }
        if has_negative:
            kwargs["negative_prompt"] = [row.get("negative_prompt") or "" for row in rows]
        if init_images is None:
            pipe = self.text2image
            if width is not None:
                kwargs["width"] = width
            if height is not None:
                kwargs["height"] = height
        else:
            pipe = self.image2image
            images = [im.convert("RGB") for im in init_images]
            if width is not None and height is not None:
                images = [im.resize((width, height), Image.BICUBIC) if im.size != (width, height) else im
                          for im in images]
            kwargs.update(image=images, strength=strength)
        return list(pipe(**kwargs).images)
