"""LoRA adapters of the diffusers backend, with tiny random-weight LoRAs (peft) on the tiny SD pipeline (CPU)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from tiny_diffusers import assert_close_pixels, build_tiny_lora, build_tiny_sd

from ffr.errors import FFRError
from ffr.shards import read_metadata
from pipelines import generate
from pipelines.backends import create

BASE = dict(dtype="fp32", device="cpu")
ROW = {"id": "r", "prompt": "a photo of a cat", "negative_prompt": "", "seed": 7, "steps": 2, "guidance_scale": 5.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny-lora")
    model = build_tiny_sd(root / "sd")
    return {"model": model, "a": build_tiny_lora(root / "lora-a", model, seed=1),
            "b": build_tiny_lora(root / "lora-b", model, seed=2)}


def _pixels(backend, **row) -> np.ndarray:
    return np.asarray(backend.generate([{**ROW, **row}])[0], dtype=np.int16)


def test_pixels_change_with_the_adapter_scale(tiny):
    # One backend, the same LoRA file declared at three scales; rows pick one each (unfused: set per call).
    adapters = [{"name": f"s{int(s * 10)}", "path": tiny["a"], "scale": s} for s in (0.0, 0.5, 1.0)]
    backend = create("diffusers", {"model": tiny["model"], **BASE, "adapters": adapters}, batch_size=2)
    base, zero, half, full = (_pixels(backend, adapter=a) for a in ("", "s0", "s5", "s10"))
    assert_close_pixels(zero, base, "scale 0 is the base model")
    moved_half, moved_full = np.abs(half - base).mean(), np.abs(full - base).mean()
    assert 0.5 < moved_half < moved_full, (moved_half, moved_full)  # larger scale, further from the base
    record = json.loads(backend.record({**ROW, "adapter": "s5"})["adapters"])
    assert record == [{"name": "s5", "path": tiny["a"], "scale": 0.5, "fused": False}]


def test_one_adapter_set_for_the_run_is_fused_with_the_same_pixels(tiny):
    adapters = [{"name": "a", "path": tiny["a"], "scale": 0.8}, {"name": "b", "path": tiny["b"], "scale": 0.5}]
    unfused = create("diffusers", {"model": tiny["model"], **BASE, "adapters": adapters, "fuse_adapters": False})
    fused = create("diffusers", {"model": tiny["model"], **BASE, "adapters": adapters, "fuse_adapters": True})
    assert fused.text2image.get_list_adapters() == {}  # fused into the weights, LoRA branches unloaded
    assert_close_pixels(_pixels(fused), _pixels(unfused, adapter="a+b"), "fused vs unfused")
    assert json.loads(fused.record(ROW)["adapters"])[0]["fused"] is True
    with pytest.raises(FFRError, match="fused for the whole run"):
        fused.generate([{**ROW, "adapter": "a"}])


def test_a_local_file_and_an_s3_folder_load_the_same_adapter(tiny, s3_bucket, tmp_path):
    from ffr.storage import filesystem

    fs, _ = filesystem(s3_bucket)
    fs.put_file(os.path.join(tiny["a"], "pytorch_lora_weights.safetensors"),
                f"{s3_bucket[len('s3://'):]}/loras/a/pytorch_lora_weights.safetensors")
    sources = [os.path.join(tiny["a"], "pytorch_lora_weights.safetensors"), f"{s3_bucket}/loras/a"]
    images = [_pixels(create("diffusers", {"model": tiny["model"], **BASE, "cache_dir": str(tmp_path / "cache"),
                                           "adapters": [{"name": "a", "path": path}]})) for path in sources]
    assert np.array_equal(images[0], images[1])


def _config(tiny: dict, root: str, **overrides) -> dict:
    config = {"recipe": {"name": "custom", "options": {"classes": ["cat", "dog"], "attributes": ["indoors"],
                                                       "templates": ["a photo of a {class} {attribute}"]}},
              "output": root, "budget": {"per_group": 2}, "shard_size": 4, "batch_size": 2, "seed": 3,
              "generator": {"steps": 2, "height": 32, "width": 32, "adapter": {"0,0": "a", "1,0": "b"}},
              "backend": {"name": "diffusers", "settings": {
                  "model": tiny["model"], **BASE,
                  "adapters": [{"name": "a", "path": tiny["a"]}, {"name": "b", "path": tiny["b"], "scale": 0.7}]}},
              "filters": {"gray_threshold": 0}, "progress": False}
    for key, value in overrides.items():
        section, _, leaf = key.partition(".")
        config[section] = {**config[section], leaf: value} if leaf else value
    return config


def test_two_groups_get_two_adapters_recorded_per_image(ray_cluster, tiny, tmp_path):
    """The Ray job over an actor pool: each group's rows use its own adapter, in separate pipeline calls; every
    image's record names its adapter (path, scale, unfused), and the output's identity holds the adapters."""
    root = str(tmp_path / "out")
    config = _config(tiny, root)
    summary = generate(config)
    assert summary["complete"] and summary["accepted"] == 4
    meta = read_metadata(root)
    by_group = {g: set(part["adapter"]) for g, part in meta.groupby("group")}
    assert by_group == {0: {"a"}, 1: {"b"}}
    for row in meta.to_dict("records"):
        (recorded,) = json.loads(row["adapters"])
        expected = {"a": (tiny["a"], 1.0), "b": (tiny["b"], 0.7)}[row["adapter"]]
        assert (recorded["path"], recorded["scale"], recorded["fused"]) == (*expected, False)
        assert "adapter={" in row["generator"] and json.loads(row["generator_settings"])["pipeline"] \
            == "StableDiffusionPipeline"
    manifest = json.loads(open(os.path.join(root, "manifest", "manifest.json")).read())
    identity = manifest["identity"]
    assert identity["backend.settings.fuse_adapters"] is False  # two adapter sets: not fused, decided once
    assert identity["generator.adapter.0,0"] == "a" and "backend.settings.adapters" in identity
    # The image is the adapter's: regenerating a group-0 row outside Ray with adapter a alone gives its pixels.
    from ffr.shards import ShardReader

    reader = ShardReader(root)
    row = meta[meta["group"] == 0].iloc[0].to_dict()
    alone = create("diffusers", {"model": tiny["model"], **BASE, "adapters": [{"name": "a", "path": tiny["a"]}]},
                   batch_size=2)
    stored = np.asarray(Image.open(io.BytesIO(reader.image_bytes(row["image_key"]))).convert("RGB"), dtype=np.int16)
    made = {k: row[k] for k in ("id", "prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width",
                                "height")}
    assert_close_pixels(_pixels(alone, **made), stored, "group 0 = adapter a")
    # Adapters are part of the output's identity: another scale on the same output is refused, in one line.
    changed = _config(tiny, root)
    changed["backend"]["settings"]["adapters"][1]["scale"] = 0.9
    with pytest.raises(FFRError, match="backend.settings.adapters") as err:
        generate({**changed, "runner": "local"})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, expected", [
    ({"generator.adapter": {"0,0": "a", "1,0": "c"}}, "adapter 'c'"),
    ({"generator.adapter": {"0,0": "a"}}, "no adapter for group 'dog/indoors'"),
    ({"generator.adapter": 3}, "generator.adapter"),
    ({"generator.adapter": "a+a"}, "twice"),
])
def test_bad_adapter_choices_fail_in_one_line_before_anything_is_written(tiny, tmp_path, overrides, expected):
    root = tmp_path / "out"
    with pytest.raises(FFRError) as err:
        generate(_config(tiny, str(root), runner="local", **overrides))
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not (root / "manifest").exists()


@pytest.mark.parametrize("adapters, fuse, expected", [
    ([{"name": "a", "path": "/no/such/lora"}], None, "'/no/such/lora'"),
    ([{"name": "a", "path": "A"}, {"name": "a", "path": "B"}], None, "declared twice"),
    ([{"name": "a b", "path": "A"}], None, "backend.settings.adapters.name"),
    ([{"name": "a", "path": "TINY_A"}, {"name": "b", "path": "TINY_B"}], True, "fuse_adapters"),
    # a hub adapter that is not in the HF cache (offline): checked on the driver, before any actor starts
    ([{"name": "a", "path": "no-such-org/no-such-lora"}], None,
     "adapter 'a': model 'no-such-org/no-such-lora' is not in the local Hugging Face cache"),
])
def test_bad_adapter_settings_fail_in_one_line(tiny, tmp_path, adapters, fuse, expected):
    adapters = [{**a, "path": tiny.get(a["path"][5:].lower(), a["path"]) if a["path"].startswith("TINY_")
                 else a["path"]} for a in adapters]
    config = _config(tiny, str(tmp_path / "out"), runner="local")
    config["backend"]["settings"] = {**config["backend"]["settings"], "adapters": adapters,
                                     **({} if fuse is None else {"fuse_adapters": fuse})}
    if len(adapters) == 1:
        config["generator"] = {**config["generator"], "adapter": adapters[0]["name"]}
    with pytest.raises(FFRError) as err:
        generate(config)
    assert expected in str(err.value) and "\n" not in str(err.value)
