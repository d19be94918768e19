"""Speed and memory options of the diffusers backend on tiny random-weight pipelines (CPU): each is applied, keeps
or changes the pixels as it should, and is recorded in every image's record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_diffusers import assert_close_pixels, build_tiny_flux, build_tiny_lora, build_tiny_sd

from ffr.errors import FFRError
from pipelines.backends import BACKENDS, create

BASE = dict(dtype="fp32", device="cpu")
ROW = {"id": "r", "prompt": "a photo of a cat", "negative_prompt": "", "seed": 5, "steps": 4, "guidance_scale": 0.0,
       "width": 32, "height": 32}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny-speed")
    sd = build_tiny_sd(root / "sd")
    return {"unet": sd, "transformer": build_tiny_flux(root / "flux"), "lora": build_tiny_lora(root / "lora", sd)}


@pytest.fixture(scope="module")
def baseline(models) -> dict[str, np.ndarray]:
    return {kind: _pixels(create("diffusers", {"model": models[kind], **BASE}, batch_size=2))
            for kind in ("unet", "transformer")}


def _pixels(backend) -> np.ndarray:
    return np.asarray(backend.generate([ROW])[0], dtype=np.int16)


def _hooked(module) -> bool:
    return any(hasattr(m, "_hf_hook") or hasattr(m, "_diffusers_hook") for m in module.modules())


def _first_linear(module) -> torch.nn.Linear:
    return next(m for m in module.modules() if isinstance(m, torch.nn.Linear))


# (denoiser kind, settings, same pixels as without?, what the loaded pipeline shows)
CASES = {
    "vae-slicing-tiling": ("unet", {"vae_slicing": True, "vae_tiling": True}, True,
                           lambda p: p.vae.use_slicing and p.vae.use_tiling),
    "offload-model": ("unet", {"offload": "model"}, True, lambda p: _hooked(p.unet)),
    "offload-group": ("transformer", {"offload": "group"}, True, lambda p: _hooked(p.transformer)),
    "deepcache": ("unet", {"cache": "deepcache", "cache_interval": 3}, False,
                  lambda p: p._ffr_deepcache is not None),
    "first-block-cache": ("transformer", {"cache": "first-block", "cache_threshold": 10.0}, False,
                          lambda p: p.transformer.is_cache_enabled),
    "pyramid-attention-cache": ("transformer", {"cache": "pyramid-attention", "cache_interval": 2}, False,
                                lambda p: p.transformer.is_cache_enabled),
    "taylorseer-cache": ("transformer", {"cache": "taylorseer", "cache_interval": 2}, False,
                         lambda p: p.transformer.is_cache_enabled),
    "int8-weight-only": ("unet", {"quantization": "int8wo"}, False,
                         lambda p: "torchao" in type(_first_linear(p.unet).weight).__module__),
    "int8-dynamic": ("transformer", {"quantization": "int8dq"}, False,
                     lambda p: "torchao" in type(_first_linear(p.transformer).weight).__module__),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_option_is_applied_and_recorded(case, models, baseline):
    if "quantization" in CASES[case][1]:
        pytest.importorskip("torchao", reason="the torchao extra: pip install 'ffr-synth[torchao]'")
    if CASES[case][1].get("cache") == "deepcache":
        pytest.importorskip("DeepCache", reason="the deepcache extra: pip install 'ffr-synth[deepcache]'")
    kind, settings, same, applied = CASES[case]
    backend = create("diffusers", {"model": models[kind], **BASE, **settings}, batch_size=2)
    assert applied(backend.text2image)
    pixels = _pixels(backend)
    if same:
        assert_close_pixels(pixels, baseline[kind], case)
    else:  # an approximation: another image, still close to the exact one (not noise)
        moved = np.abs(pixels - baseline[kind]).mean()
        assert 0 < moved < 40, moved
    recorded = json.loads(backend.record(ROW)["generator_settings"])
    for key, value in settings.items():
        assert recorded[key] == value, (key, recorded)


def test_quantized_weights_keep_adapters_unfused(models):
    pytest.importorskip("torchao")
    options = BACKENDS.options("diffusers", {"model": models["unet"], **BASE, "quantization": "int8wo",
                                             "adapters": [{"name": "a", "path": models["lora"]}]})
    assert BACKENDS.get("diffusers").check_run(options, {"steps": 2, "guidance_scale": 0.0}) == \
        {"fuse_adapters": False}  # fused LoRA deltas cannot be added to int8 weights


@pytest.mark.parametrize("kind, settings, expected", [
    ("transformer", {"cache": "deepcache"}, "needs a UNet pipeline"),
    ("unet", {"cache": "first-block"}, "for UNets use cache deepcache"),
    ("unet", {"cache": "deepcache", "compile": True}, "exclude each other"),
    ("unet", {"quantization": "int4wo"}, "needs a CUDA device"),
    ("unet", {"quantization": "int8wo", "fuse_adapters": True, "adapters": [{"name": "a", "path": "LORA"}]},
     "fuse_adapters cannot fuse"),
    ("unet", {"offload": "sequential"}, "'backend.settings.offload'"),
])
def test_contradicting_options_fail_in_one_line(models, kind, settings, expected):
    if "adapters" in settings:
        settings = {**settings, "adapters": [{"name": "a", "path": models["lora"]}]}
    with pytest.raises(FFRError) as err:
        create("diffusers", {"model": models[kind], **BASE, **settings})
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_cpu_fallback_is_what_the_record_says(models):
    with pytest.warns(UserWarning, match="fp16"):
        backend = create("diffusers", {"model": models["unet"], "dtype": "fp16", "device": "cpu"})
    recorded = json.loads(backend.record(ROW)["generator_settings"])
    assert recorded["dtype"] == "fp32" and recorded["device"] == "cpu" and backend.dtype == torch.float32
