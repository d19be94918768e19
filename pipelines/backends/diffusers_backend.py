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
device, attention, compile, scheduler, the model family and its rules (:mod:`.diffusers_families`), LoRA
adapters (:mod:`.diffusers_adapters`), speed and memory options (:mod:`.diffusers_speedups`). *What* to make —
``steps``, ``guidance_scale``, ``strength``, ``width``, ``height``, ``adapter`` — comes from each manifest row
(the recipe's values and the config's ``generator`` section), and the micro-batch size is the run's one
``batch_size``. Rows with different settings go to separate pipeline calls, so
one shard may mix them; so do rows with different adapters. A row without ``width``/``height`` gets the model's
default size. A configured safety checker is kept: the pipeline blacks out flagged images and the black-image
filter records them. Every image's record says how it was made (``generator_settings``: the effective dtype,
device, scheduler class, family, speed options; ``adapters``: its adapters with path, scale, fused).
"""

from __future__ import annotations

import json
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
from pipelines.backends import diffusers_speedups as speedups
from pipelines.backends.base import BACKENDS, GeneratorBackend
from pipelines.backends.diffusers_adapters import (
    AdapterOptions,
    AdapterState,
    check_adapter_names,
    check_adapter_source,
    run_selections,
)
from pipelines.backends.diffusers_families import FAMILIES, Family, known_family
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
_scheduler("tcd", "TCDScheduler")
# Few-step models sample the last timestep first ("trailing"): SDXL-Turbo, Hyper-SD, SD-Turbo's model cards.
_scheduler("ddim_trailing", "DDIMScheduler", timestep_spacing="trailing")
_scheduler("euler_a_trailing", "EulerAncestralDiscreteScheduler", timestep_spacing="trailing")


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
        None, description="None keeps the model's scheduler (or the family's); else a name in SCHEDULERS")
    family: Annotated[str | None, AfterValidator(known_family)] = Field(
        None, description="the model's family and its scheduler/steps/guidance rules (lcm-lora, hyper-sd, tcd, "
                          "sdxl-turbo, sd3, sd3-turbo, flux-schnell); None: no rules")
    adapters: Annotated[list[AdapterOptions], AfterValidator(check_adapter_names)] = Field(
        [], description="LoRA adapters: [{name, path, scale, weight_name}]; rows pick them by generator.adapter")
    fuse_adapters: bool | None = Field(None, description="fuse the adapters into the weights; None: when every "
                                                         "row uses all of them (and no quantization)")
    vae_slicing: bool = Field(False, description="decode one image of a batch at a time (less peak memory)")
    vae_tiling: bool = Field(False, description="decode in overlapping tiles (large images)")
    offload: Literal[speedups.OFFLOADS] = Field(
        "none", description="none | model | group: keep weights on the CPU until needed (large models, small GPUs)")
    cache: Literal[speedups.CACHES] = Field(
        "none", description="first-block | pyramid-attention | taylorseer (transformers) | deepcache (UNets)")
    cache_threshold: float = Field(0.05, gt=0, description="first-block: residual change that forces a full step")
    cache_interval: int = Field(3, ge=1, description="deepcache / pyramid-attention / taylorseer: steps a cache "
                                                     "is reused")
    cache_branch: int = Field(0, ge=0, description="deepcache: the UNet branch below which features are cached")
    quantization: Literal["none", *speedups.QUANTIZATIONS] = Field(
        "none", description="torchao quantization of the denoiser: int8wo | int8dq | int4wo | float8wo | float8dq")


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


def _check_combination(options: DiffusersOptions) -> None:
    """Settings that contradict each other or the family, from the options alone (driver and actor)."""
    family = FAMILIES.get(options.family) if options.family else None
    if family is not None:
        family.check_scheduler(options.scheduler)
        if family.needs_adapter and not options.adapters:
            raise FFRError(f"family {family.name!r} samples in few steps only with its distillation LoRA; "
                           "expected it in backend.settings.adapters ({name, path})")
    if options.cache == "deepcache" and options.compile:
        raise FFRError("cache 'deepcache' and compile exclude each other (DeepCache swaps the UNet's block "
                       "functions between steps); choose one")
    if options.quantization != "none" and options.fuse_adapters:
        raise FFRError(f"fuse_adapters cannot fuse LoRA weights into {options.quantization!r}-quantized weights; "
                       "set fuse_adapters: null or quantization: none")


def _saved_pipeline_class(model: str) -> str | None:
    """The pipeline class a local model folder saves in model_index.json (None for hub ids and s3:// prefixes)."""
    try:
        with open(os.path.join(os.path.expanduser(model), "model_index.json")) as f:
            return str(json.load(f).get("_class_name") or "") or None
    except (OSError, ValueError):
        return None


@BACKENDS.register("diffusers")
class DiffusersBackend(GeneratorBackend):
    """Loads the pipeline once (per Ray actor) and generates one image per manifest row, in order."""

    name = "diffusers"
    Options = DiffusersOptions
    execution_settings = frozenset({"cache_dir", "variant", "dtype", "device", "attention", "compile", "compile_mode",
                                    "channels_last", "vae_slicing", "offload", "fuse_adapters"})
    generator_keys = ("mode", "steps", "guidance_scale", "strength", "adapter")

    def __init__(self, options: DiffusersOptions, batch_size: int = 8) -> None:
        super().__init__(options, batch_size)
        _check_combination(options)
        self.device = _pick_device(options.device)
        self.dtype = _pick_dtype(options.dtype, self.device)
        if options.attention == "xformers":  # checked before the (slow) model load
            _require_xformers(self.device)
        self.family: Family | None = FAMILIES.get(options.family) if options.family else None
        self.model_path = resolve_model(options.model, options.cache_dir)
        if not os.path.isdir(self.model_path):  # a hub id: offline, it must be cached (one line, no retries)
            check_hub_cached(self.model_path)
        self.text2image = self._load()
        self._image2image = None

    @classmethod
    def check(cls, options: DiffusersOptions) -> None:
        """The model's and adapters' existence (a local directory, or files under an s3:// prefix), the settings'
        consistency, and for a local model the family's pipeline class; the model itself loads in the actors.
        The device is checked there too: the driver may have no GPU."""
        check_model_source(options.model)
        _check_combination(options)
        for adapter in options.adapters:
            check_adapter_source(adapter)
        saved = _saved_pipeline_class(options.model)
        if options.family and saved:
            FAMILIES.get(options.family).check_pipeline(saved, options.model)

    @classmethod
    def check_run(cls, options: DiffusersOptions, generator: dict[str, Any]) -> dict[str, Any]:
        """The family's step and guidance rules against the run's generator settings, the adapter names every
        group uses; decides whether the adapters are fused (the same adapters on every row)."""
        family = FAMILIES.get(options.family) if options.family else None
        if family is not None:
            family.check(generator.get("steps"), generator.get("guidance_scale"))
        declared = [a.name for a in options.adapters]
        selections = run_selections(generator.get("adapter"), declared)
        if family is not None and family.needs_adapter and () in selections:
            raise FFRError(f"generator.adapter leaves some rows without an adapter, and family {family.name!r} "
                           "samples in few steps only with its distillation LoRA; expected it on every row")
        if not declared:
            return {}
        every_row_all = selections == {tuple(declared)}
        if options.fuse_adapters and not every_row_all:
            raise FFRError("fuse_adapters: true fuses every declared adapter for the whole run, and generator.adapter "
                           "gives rows other adapters; set fuse_adapters: null")
        if options.fuse_adapters is None:
            return {"fuse_adapters": every_row_all and options.quantization == "none"}
        return {}

    def _load(self):
        from diffusers import AutoPipelineForText2Image, DiffusionPipeline

        o = self.options
        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if o.variant:
            kwargs["variant"] = o.variant
        quantization = speedups.quantization_config(o.quantization, self.model_path, self.device)
        if quantization is not None:
            kwargs["quantization_config"] = quantization
        try:
            try:
                pipe = AutoPipelineForText2Image.from_pretrained(self.model_path, **kwargs)
            except ValueError as err:  # a pipeline class the auto mapping does not know: load it as saved
                if "AutoPipeline" not in str(err):
                    raise
                pipe = DiffusionPipeline.from_pretrained(self.model_path, **kwargs)
        except OSError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FFRError(f"cannot load diffusers model {o.model!r}: {first}") from None
        if self.family is not None:
            self.family.check_pipeline(type(pipe).__name__, o.model)
        pipe.set_progress_bar_config(disable=True)
        # Order matters: adapters are loaded (and fused) into the plain modules, before offload hooks, caches and
        # torch.compile wrap them.
        scheduler = o.scheduler or (self.family.scheduler if self.family else None)
        if scheduler is not None:
            pipe.scheduler = SCHEDULERS.get(scheduler)(pipe.scheduler.config)
        self.adapters = AdapterState(pipe, list(o.adapters), bool(o.fuse_adapters), o.cache_dir, o.model)
        speedups.apply_vae(pipe, o.vae_slicing, o.vae_tiling)
        speedups.apply_offload(pipe, o.offload, self.device)
        if o.attention == "xformers":
            pipe.enable_xformers_memory_efficient_attention()
        # attention == "sdpa": nothing to do, diffusers uses torch's scaled_dot_product_attention by default.
        denoiser_name = speedups.denoiser_name(pipe)
        denoiser = getattr(pipe, denoiser_name, None)
        if o.channels_last and denoiser is not None:
            denoiser.to(memory_format=torch.channels_last)
            if getattr(pipe, "vae", None) is not None:
                pipe.vae.to(memory_format=torch.channels_last)
        cache = speedups.apply_cache(pipe, o.cache, o.cache_threshold, o.cache_interval, o.cache_branch)
        if o.compile and denoiser is not None:
            setattr(pipe, denoiser_name, torch.compile(denoiser, mode=o.compile_mode))
        self._settings_record = json.dumps(self._how(pipe, cache), sort_keys=True)
        return pipe

    def _how(self, pipe, cache: dict[str, Any]) -> dict[str, Any]:
        """How this actor runs the model, as recorded with each image (effective values: e.g. fp32 after a
        CPU fallback)."""
        import diffusers

        o = self.options
        dtype = next(k for k, v in DTYPES.items() if v == self.dtype and k in ("fp32", "fp16", "bf16"))
        return {"model": o.model, "pipeline": type(pipe).__name__, "scheduler": type(pipe.scheduler).__name__,
                "family": o.family, "dtype": dtype, "device": self.device.type, "attention": o.attention,
                "compile": o.compile, "channels_last": o.channels_last, "vae_slicing": o.vae_slicing,
                "vae_tiling": o.vae_tiling, "offload": o.offload, **cache, "quantization": o.quantization,
                "diffusers": diffusers.__version__, "torch": torch.__version__}

    def record(self, row: dict) -> dict[str, Any]:
        return {"generator_settings": self._settings_record,
                "adapters": json.dumps(self.adapters.record(self.adapters.selection(row)), sort_keys=True)}

    def sampler(self) -> dict:
        """The scheduler that ran: the model's own (FFR's and D3S's setting), or a study's explicit choice."""
        chosen = self.options.scheduler
        return {"scheduler": type(self.text2image.scheduler).__name__,
                "source": f"backend.settings.scheduler={chosen}" if chosen else "the model's own"}

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
        if self.family is not None:
            self.family.check(steps, guidance, where=f"manifest row {row.get('id', '?')!r}")
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
        return steps, guidance, strength, width, height, has_negative, init_size, self.adapters.selection(row)

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
        steps, guidance, strength, width, height, has_negative, _, adapters = settings
        self.adapters.activate(adapters)
        kwargs: dict[str, Any] = {**(self.family.call_kwargs if self.family else {}),
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
