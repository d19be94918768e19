"""Speed and memory options of the diffusers backend, each one ``backend.settings`` key, each recorded per image.

- ``vae_slicing`` / ``vae_tiling``: decode a batch one image at a time / in overlapping tiles (diffusers'
  ``AutoencoderKL.enable_slicing`` / ``enable_tiling``): less peak memory at large batches or sizes; tiling can
  leave faint seams on large images.
- ``offload``: ``model`` (whole components to the GPU only while they run: SDXL or FLUX on a 16–24 GB card) or
  ``group`` (layer by layer, each streamed in on a side CUDA stream while the previous one computes: the least
  memory). diffusers' ``sequential`` offload is not offered: with accelerate 1.16 and the pinned torch 2.14 its
  hooks fail after the first forward (``set_module_tensor_to_device`` to "meta"); ``group`` is diffusers' own
  low-memory successor to it.
- ``cache``: skip denoiser work that changes little between steps. Transformer pipelines (FLUX and the other
  models with diffusers' cache hooks): ``first-block`` (FirstBlockCache: recompute the rest of the blocks only
  when the first block's residual moved by more than ``cache_threshold``), ``pyramid-attention`` (reuse
  attention outputs for ``cache_interval`` steps in the middle of the schedule) and ``taylorseer`` (predict
  features for ``cache_interval`` steps by a Taylor expansion). UNet pipelines (SD1.x, SDXL): ``deepcache``
  (the ``DeepCache`` package: reuse the deep UNet features for ``cache_interval`` steps, from branch
  ``cache_branch``; works with diffusers 0.42 through its module wrapper, ``pip install 'ffr-synth[deepcache]'``).
  All trade exactness for speed: images differ from uncached ones, so ``cache`` is part of the output's identity.
- ``quantization``: torchao weight quantization of the denoiser at load (``int8wo``, ``int8dq``, ``int4wo``,
  ``float8wo``, ``float8dq``; ``pip install 'ffr-synth[torchao]'``). int4/float8 need a CUDA GPU (float8: compute
  capability 8.9+). Quantized weights cannot take fused adapters, so adapters stay unfused.
"""

from __future__ import annotations

from typing import Any

import torch

from ffr.errors import FFRError

QUANTIZATIONS = {  # name → torchao config class
    "int8wo": "Int8WeightOnlyConfig",
    "int8dq": "Int8DynamicActivationInt8WeightConfig",
    "int4wo": "Int4WeightOnlyConfig",
    "float8wo": "Float8WeightOnlyConfig",
    "float8dq": "Float8DynamicActivationFloat8WeightConfig",
}
CUDA_ONLY_QUANTIZATIONS = ("int4wo", "float8wo", "float8dq")
TRANSFORMER_CACHES = ("first-block", "pyramid-attention", "taylorseer")
UNET_CACHES = ("deepcache",)
CACHES = ("none", *TRANSFORMER_CACHES, *UNET_CACHES)
OFFLOADS = ("none", "model", "group")


def denoiser_name(pipe) -> str:
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def quantization_config(name: str, model_path: str, device: torch.device):
    """diffusers' pipeline quantization config for ``from_pretrained``, or None for ``none``: the denoiser only
    (the UNet or the transformer, whichever model_index.json lists), which holds most of the weights and time."""
    if name == "none":
        return None
    if name in CUDA_ONLY_QUANTIZATIONS and device.type != "cuda":
        raise FFRError(f"quantization {name!r} needs a CUDA device, got {device}; use int8wo or int8dq on CPU")
    try:
        import torchao.quantization as ao
    except ImportError:
        raise FFRError(f"quantization {name!r} needs torchao: pip install 'ffr-synth[torchao]'") from None
    from diffusers import DiffusionPipeline, PipelineQuantizationConfig, TorchAoConfig

    try:
        components = DiffusionPipeline.load_config(model_path)
    except (OSError, ValueError):
        components = {"unet": None, "transformer": None}  # unreadable here: map both, diffusers skips the absent
    names = [n for n in ("unet", "transformer") if n in components]
    return PipelineQuantizationConfig(quant_mapping={n: TorchAoConfig(getattr(ao, QUANTIZATIONS[name])())
                                                     for n in names})


def apply_vae(pipe, slicing: bool, tiling: bool) -> None:
    vae = getattr(pipe, "vae", None)
    for wanted, method in ((slicing, "enable_slicing"), (tiling, "enable_tiling")):
        if not wanted:
            continue
        if vae is None or not hasattr(vae, method):
            raise FFRError(f"vae_{method[len('enable_'):]} needs a VAE with {method}(); "
                           f"{type(vae).__name__ if vae is not None else 'this pipeline has no VAE'}")
        getattr(vae, method)()


def apply_offload(pipe, offload: str, device: torch.device) -> None:
    """Place the pipeline: on ``device``, or managed by diffusers' offload hooks (which move modules themselves)."""
    if offload == "none":
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:  # group: leaf-level groups streamed in on a side CUDA stream
        pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), offload_type="leaf_level",
                                  use_stream=device.type == "cuda")


def apply_cache(pipe, cache: str, threshold: float, interval: int, branch: int) -> dict[str, Any]:
    """Turn the denoiser cache on; returns what the image record says about it."""
    if cache == "none":
        return {"cache": "none"}
    name = denoiser_name(pipe)
    denoiser = getattr(pipe, name)
    if cache in UNET_CACHES:
        if name != "unet":
            raise FFRError(f"cache 'deepcache' needs a UNet pipeline (SD 1.x/2.x, SDXL); {type(pipe).__name__} has "
                           f"a transformer: use cache first-block, pyramid-attention or taylorseer")
        try:
            from DeepCache import DeepCacheSDHelper
        except ImportError:
            raise FFRError("cache 'deepcache' needs the DeepCache package: "
                           "pip install 'ffr-synth[deepcache]'") from None
        helper = DeepCacheSDHelper(pipe=pipe)
        helper.set_params(cache_interval=interval, cache_branch_id=branch)
        helper.enable()
        pipe._ffr_deepcache = helper  # keeps the wrapper alive as long as the pipeline
        return {"cache": cache, "cache_interval": interval, "cache_branch": branch}
    if not hasattr(denoiser, "enable_cache"):
        raise FFRError(f"cache {cache!r} needs a denoiser with diffusers' cache hooks (FLUX and other transformer "
                       f"models); {type(pipe).__name__}'s {type(denoiser).__name__} has none"
                       + ("; for UNets use cache deepcache" if name == "unet" else ""))
    import diffusers

    if cache == "first-block":
        config = diffusers.FirstBlockCacheConfig(threshold=threshold)
        recorded = {"cache_threshold": threshold}
    elif cache == "pyramid-attention":
        config = diffusers.PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=interval, spatial_attention_timestep_skip_range=(100, 800),
            current_timestep_callback=lambda: pipe.current_timestep)
        recorded = {"cache_interval": interval}
    else:
        config = diffusers.TaylorSeerCacheConfig(cache_interval=interval)
        recorded = {"cache_interval": interval}
    denoiser.enable_cache(config)
    return {"cache": cache, **recorded}
