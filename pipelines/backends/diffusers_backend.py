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

Settings (``backend.settings``; ``Options`` below lists them with defaults) say *how* to run: model, dtype,
device, attention, compile, scheduler. *What* to make — ``steps``, ``guidance_scale``, ``strength``, ``width``,
``height`` — comes from each manifest row (the recipe's values and the config's ``generator`` section), and the
micro-batch size is the run's one ``batch_size``. Rows with different settings go to separate pipeline calls, so
one shard may mix them. A row without ``width``/``height`` gets the model's default size. A configured safety
checker is kept: the pipeline blacks out flagged images and the black-image filter records them.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import AfterValidator

from ffr.errors import FFRError
from ffr.options import Field, Options, PathField
from ffr.registry import Registry
from pipelines.backends.base import BACKENDS, GeneratorBackend
from pipelines.model_source import check_hub_cached, check_model_source, resolve_model

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}

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


def _known_scheduler(name: str | None) -> str | None:
    if name is not None and name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler; expected one of: {', '.join(SCHEDULERS.names())}")
    return name


class DiffusersOptions(Options):
    """``backend.settings`` of the diffusers backend: how to run (what to make comes from the manifest rows)."""

    model: str = PathField(model=True, min_length=1, description="a hub id, a local directory or an s3:// prefix")
    cache_dir: str | None = PathField(None, description="where s3:// models are synced (default $FFR_MODEL_CACHE "
                                                    "or ~/.cache/ffr/models)")
    variant: str | None = Field(None, description="weight file variant on the hub, e.g. fp16")
    dtype: Literal["fp32", "float32", "fp16", "float16", "bf16", "bfloat16"] = Field(
        "fp16", description="fp16/bf16 fall back to fp32 (with a warning) on CPU")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto = cuda if available else cpu")
    attention: Literal["sdpa", "xformers"] = Field("sdpa", description="xformers must be installed; CUDA only")
    compile: bool = Field(False, description="torch.compile the denoiser (UNet / transformer)")
    compile_mode: str = Field("max-autotune-no-cudagraphs", description="torch.compile mode")
    channels_last: bool = Field(False, description="channels-last memory format for the denoiser and VAE")
    scheduler: Annotated[str | None, AfterValidator(_known_scheduler)] = Field(
        None, description="None keeps the model's scheduler; else a name in SCHEDULERS")


def _row_value(row: dict, key: str, default: Any) -> Any:
    """The row's value, or ``default`` where it is missing, None or NaN (Parquet nulls arrive as either)."""
    value = row.get(key)
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return default
    return value


def _required(row: dict, key: str) -> Any:
    value = _row_value(row, key, None)
    if value is None:
        raise FFRError(f"manifest row {row.get('id', '?')!r} has no {key!r}; expected the recipe's or the "
                       f"config's generator.{key} in every row")
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


@BACKENDS.register("diffusers")
class DiffusersBackend(GeneratorBackend):
    """Loads the pipeline once (per Ray actor) and generates one image per manifest row, in order."""

    name = "diffusers"
    Options = DiffusersOptions

    def __init__(self, options: DiffusersOptions, batch_size: int = 8) -> None:
        super().__init__(options, batch_size)
        self.device = _pick_device(options.device)
        self.dtype = _pick_dtype(options.dtype, self.device)
        if options.attention == "xformers":  # checked before the (slow) model load
            _require_xformers(self.device)
        self.model_path = resolve_model(options.model, options.cache_dir)
        if not os.path.isdir(self.model_path):  # a hub id: offline, it must be cached (one line, no retries)
            check_hub_cached(self.model_path)
        self.text2image = self._load()
        self._image2image = None

    @classmethod
    def check(cls, options: DiffusersOptions) -> None:
        """The model's existence (a local directory, or files under an s3:// prefix); the model itself loads in
        the actors. The device is checked there too: the driver may have no GPU."""
        check_model_source(options.model)

    def _load(self):
        from diffusers import AutoPipelineForText2Image, DiffusionPipeline

        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if self.options.variant:
            kwargs["variant"] = self.options.variant
        try:
            try:
                pipe = AutoPipelineForText2Image.from_pretrained(self.model_path, **kwargs)
            except ValueError as err:  # a pipeline class the auto mapping does not know: load it as saved
                if "AutoPipeline" not in str(err):
                    raise
                pipe = DiffusionPipeline.from_pretrained(self.model_path, **kwargs)
        except OSError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FFRError(f"cannot load diffusers model {self.options.model!r}: {first}") from None
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return self._optimize(pipe)

    def _optimize(self, pipe):
        denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
        denoiser = getattr(pipe, denoiser_name, None)
        if self.options.attention == "xformers":
            pipe.enable_xformers_memory_efficient_attention()
        # attention == "sdpa": nothing to do, diffusers uses torch's scaled_dot_product_attention by default.
        if self.options.scheduler is not None:
            pipe.scheduler = SCHEDULERS.get(self.options.scheduler)(pipe.scheduler.config)
        if self.options.channels_last and denoiser is not None:
            denoiser.to(memory_format=torch.channels_last)
            if getattr(pipe, "vae", None) is not None:
                pipe.vae.to(memory_format=torch.channels_last)
        if self.options.compile and denoiser is not None:
            setattr(pipe, denoiser_name, torch.compile(denoiser, mode=self.options.compile_mode))
        return pipe

    @property
    def image2image(self):
        """The img2img pipeline over the same modules (no second copy of the weights), built on first use."""
        if self._image2image is None:
            from diffusers import AutoPipelineForImage2Image

            try:
                self._image2image = AutoPipelineForImage2Image.from_pipe(self.text2image)
            except ValueError as err:
                raise FFRError(f"model {self.options.model!r} ({type(self.text2image).__name__}) has no "
                               f"image-to-image pipeline: {str(err).splitlines()[0]}") from None
            self._image2image.set_progress_bar_config(disable=True)
        return self._image2image

    def _call_settings(self, row: dict, init_image: Image.Image | None) -> tuple:
        """The pipeline-call settings of one row; rows with equal settings share pipeline calls."""
        steps = int(_required(row, "steps"))
        guidance = float(_required(row, "guidance_scale"))
        if steps < 1:
            raise FFRError(f"manifest row {row.get('id', '?')!r}: steps {steps!r} must be a positive integer")
        width, height = _row_value(row, "width", None), _row_value(row, "height", None)
        width, height = (None if width is None else int(width)), (None if height is None else int(height))
        for name, value in (("width", width), ("height", height)):
            if value is not None and (value < 8 or value % 8):
                raise FFRError(f"{name} {value!r} must be a positive multiple of 8")
        strength, init_size = None, None
        if init_image is not None:
            strength = float(_required(row, "strength"))
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
        size = self.batch_size
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
