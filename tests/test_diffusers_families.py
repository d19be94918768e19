"""Model families: every registered family generates from its shipped config on a tiny random-weight model of its
pipeline class (CPU), with its scheduler, steps and guidance; a setting that contradicts it fails in one line
before Ray starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_diffusers

from ffr.config import load_config
from ffr.errors import FFRError
from ffr.shards import read_metadata
from pipelines import generate
from pipelines.backends.diffusers_backend import SCHEDULERS
from pipelines.backends.diffusers_families import FAMILIES

BUILDERS = {"StableDiffusionPipeline": tiny_diffusers.build_tiny_sd,
            "StableDiffusionXLPipeline": tiny_diffusers.build_tiny_sdxl,
            "StableDiffusion3Pipeline": tiny_diffusers.build_tiny_sd3,
            "FluxPipeline": tiny_diffusers.build_tiny_flux}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny models by pipeline class, built on first use (a module-wide cache)."""
    root, built = tmp_path_factory.mktemp("tiny-families"), {}

    def get(pipeline: str) -> str:
        if pipeline not in built:
            built[pipeline] = BUILDERS[pipeline](root / pipeline)
        return built[pipeline]

    def lora() -> str:
        if "lora" not in built:
            built["lora"] = tiny_diffusers.build_tiny_lora(root / "lora", get("StableDiffusionPipeline"))
        return built["lora"]

    get.lora = lora
    return get


def family_config(family: str, tiny_models, out: Path, **generator) -> dict:
    """The family's shipped config, on its tiny model (and a tiny LoRA in place of the distillation LoRA),
    small, on this CPU, in this process."""
    config = load_config(f"configs/generate-custom-{family}.yaml")
    settings = config["backend"]["settings"]
    settings.update(model=tiny_models(FAMILIES.get(family).pipelines[0]), dtype="fp32", device="cpu")
    settings.pop("variant", None)
    if settings.get("adapters"):
        settings["adapters"] = [{"name": a["name"], "path": tiny_models.lora()} for a in settings["adapters"]]
    config.update(output=str(out), budget={"per_group": 1}, shard_size=4, batch_size=2, runner="local",
                  progress=False, filters={"gray_threshold": 0})
    steps = min(int(config["generator"]["steps"]), 4)  # SD3's 28 steps are the card's; 4 show the same path
    config["generator"] = {**config["generator"], "height": 32, "width": 32, "steps": steps, **generator}
    return config


@pytest.mark.parametrize("family", FAMILIES.names())
def test_every_family_generates_from_its_shipped_config(family, tiny_models, tmp_path):
    rules = FAMILIES.get(family)
    config = family_config(family, tiny_models, tmp_path / "out")
    summary = generate(config)
    assert summary["complete"] and summary["accepted"] == 4
    meta = read_metadata(str(tmp_path / "out"))
    how = json.loads(meta["generator_settings"].iloc[0])
    assert how["family"] == family and how["pipeline"] == rules.pipelines[0]
    if rules.scheduler:  # the family's scheduler, built from the model's own scheduler config
        expected = SCHEDULERS.get(rules.scheduler)({})
        assert how["scheduler"] == type(expected).__name__
    steps, guidance = int(meta["steps"].iloc[0]), float(meta["guidance_scale"].iloc[0])
    rules.check(steps, guidance)  # the shipped config follows its own family's rules
    assert f"family={family}" in meta["generator"].iloc[0] and summary["generator"] == meta["generator"].iloc[0]
    if rules.needs_adapter:
        assert json.loads(meta["adapters"].iloc[0])[0]["fused"] is True  # one adapter for the whole run: fused


@pytest.mark.parametrize("family", FAMILIES.names())
def test_a_setting_against_the_family_fails_in_one_line_before_anything_is_written(family, tiny_models, tmp_path):
    rules = FAMILIES.get(family)
    wrong = {"guidance_scale": 7.5} if rules.max_guidance is not None else {"steps": rules.steps[1] + 1}
    with pytest.raises(FFRError) as err:
        generate(family_config(family, tiny_models, tmp_path / "out", **wrong))
    message = str(err.value)
    assert family in message and "\n" not in message
    assert ("guidance_scale = 7.5" if "guidance_scale" in wrong else f"steps = {rules.steps[1] + 1}") in message
    assert not (tmp_path / "out" / "manifest").exists()


def test_the_wrong_model_or_scheduler_for_a_family_fails_in_one_line(tiny_models, tmp_path):
    config = family_config("sdxl-turbo", tiny_models, tmp_path / "out")
    config["backend"]["settings"]["model"] = tiny_models("StableDiffusionPipeline")
    with pytest.raises(FFRError, match="loads as StableDiffusionPipeline, which is not a 'sdxl-turbo'"):
        generate(config)  # read from the local model's model_index.json, before any load
    config = family_config("lcm-lora", tiny_models, tmp_path / "out")
    config["backend"]["settings"]["scheduler"] = "ddim"
    with pytest.raises(FFRError, match="scheduler = 'ddim' does not fit family 'lcm-lora'"):
        generate(config)
    del config["backend"]["settings"]["scheduler"], config["backend"]["settings"]["adapters"]
    with pytest.raises(FFRError, match="distillation LoRA"):
        generate(config)


def test_cfg_on_a_guidance_distilled_model_is_one_line_from_the_cli_before_ray(tiny_models, tmp_path):
    """The user's path: the shipped SDXL-Turbo config with CFG 7.5 — exit 2, one stderr line, no Ray start-up."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cli = [sys.executable, "-m", "ffr.cli", "generate", "--config", "configs/generate-custom-sdxl-turbo.yaml",
           f"output={out}", f"backend.settings.model={tiny_models('StableDiffusionXLPipeline')}",
           "generator.guidance_scale=7.5"]
    done = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip() and not _import_noise(line)]
    assert len(lines) == 1 and "guidance-distilled family 'sdxl-turbo'" in lines[0], done.stderr[-2000:]
    assert "Ray" not in done.stderr and not out.exists()


def _import_noise(line: str) -> bool:
    """Lines that importing torchao (the optional quantization extra) prints with torch 2.14, unrelated here."""
    return "torch/utils/_pytree.py" in line or "Unable to import `torchao`" in line
