"""The generation job end to end on the real Ray cluster, to moto S3 and to a local folder.

Every manifest id must come back exactly once; the same id must give the same pixels wherever and
however often it is generated; different ids must give different images.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from ffr.errors import FFRError
from ffr.shards import ShardReader, read_groups, read_metadata
from ffr.storage import filesystem, join
from pipelines import generate
from pipelines.api import plan
from pipelines.backends import create as create_backend

pytestmark = pytest.mark.slow


def _config(output: str, **extra) -> dict:
    return {"recipe": "colored-digits", "output": output, "budget": {"per_group": 12}, "shard_size": 10,
            "batch_size": 4, "seed": 3, "progress": False, "ray": {"min_actors": 1, "max_actors": 2},
            "contact_sheet_size": 4, **extra}


def _image_folders(root, names, n=2):
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    return str(root)


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _check_output(root: str, manifest) -> dict[str, np.ndarray]:
    """Every manifest id exactly once in the metadata and (accepted) in the tars; returns id → pixels."""
    meta = read_metadata(root, accepted_only=False)
    assert meta["id"].is_unique and set(meta["id"]) == set(manifest["id"])
    reader = ShardReader(root)
    names = read_groups(root).group_names()
    assert set(names) == set(manifest["group_name"]) and list(manifest["group_name"][: len(names)]) == names
    pixels = {row.id: _pixels(reader.image_bytes(row.image_key)) for row in reader.metadata.itertuples()}
    assert len(pixels) == len(reader.metadata)
    return pixels


def test_procedural_job_to_s3_and_local_gives_every_id_once_and_same_pixels(ray_cluster, s3_bucket, tmp_path):
    s3_root, local_root = f"{s3_bucket}/digits", str(tmp_path / "digits")
    manifest = plan(_config(s3_root))
    s3_summary = generate(_config(s3_root))
    local_summary = generate(_config(local_root))
    for summary in (s3_summary, local_summary):
        assert summary["complete"] and summary["rows_done"] == len(manifest) == 48 and summary["shards_run"] == 5
        assert summary["accepted_per_group"] == {name: 12 for name in manifest["group_name"].unique()}
        assert summary["rejects_by_reason"] == {} and summary["images_per_s"] > 0
    on_s3, on_disk = _check_output(s3_root, manifest), _check_output(local_root, manifest)
    assert on_s3.keys() == on_disk.keys() == set(manifest["id"])
    for sample_id in on_s3:  # same id → same pixels (two runs, two sinks)
        assert np.array_equal(on_s3[sample_id], on_disk[sample_id]), sample_id
    digests = {hashlib.sha256(p.tobytes()).hexdigest() for p in on_s3.values()}
    assert len(digests) == len(on_s3)  # different ids → different images
    # any single image regenerates from its manifest row alone
    row = manifest.iloc[17].to_dict()
    again = np.asarray(create_backend("procedural").generate([row])[0])
    assert np.array_equal(again, on_s3[row["id"]])
    # review outputs land next to the shards, on S3 too
    fs, base = filesystem(s3_root)
    summary = json.loads(fs.cat_file(join(base, "summary.json")))
    assert summary["accepted"] == 48 and len(summary["contact_sheets"]) == 4
    sheet = Image.open(io.BytesIO(fs.cat_file(summary["contact_sheets"][0].removeprefix("s3://"))))
    assert sheet.width >= 2 * 128
    assert "AWS" not in fs.cat_file(join(base, "config.json")).decode()


def test_gray_and_black_outputs_are_rejected_with_reasons(ray_cluster, tmp_path):
    """A black 'background' trips FFR's rule: rows are kept in the metadata as rejected, with the reason."""
    root = str(tmp_path / "gray")
    config = {"recipe": {"name": "custom", "options": {"classes": ["a", "b"], "attributes": ["x"],
                                                       "templates": ["{class} {attribute}"]}},
              "output": root, "budget": {"per_group": 3}, "backend": {"name": "procedural", "settings": {"noise": 0}},
              "shard_size": 4, "progress": False, "filters": {"gray_threshold": 200.0}}
    with pytest.raises(FFRError, match="has 0 of its 3 accepted images after generating 9"):
        generate(config)  # every image is rejected: extra rounds up to the cap (3 × 3 per group), then stop
    summary = json.loads((tmp_path / "gray" / "summary.json").read_text())
    assert not summary["complete"] and summary["accepted"] == 0 and summary["rounds"] == 2
    assert summary["rejects_by_reason"] == {"grayscale": 18}
    meta = read_metadata(root, accepted_only=False)
    assert set(meta["reject_reason"]) == {"grayscale"} and not meta["accepted"].any()


@pytest.fixture(scope="module")
def tiny_sd_model(tmp_path_factory) -> str:
    from tiny_diffusers import build_tiny_sd  # tests/ is on sys.path under pytest

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "model")


def _diffusers_backend(model: str) -> dict:
    return {"name": "diffusers", "settings": {"model": model, "dtype": "fp32", "device": "cpu"}}


def test_diffusers_text_to_image_through_ray_to_s3(ray_cluster, s3_bucket, s3_endpoint, tiny_sd_model):
    root = f"{s3_bucket}/t2i"
    config = {"recipe": {"name": "custom", "options": {"classes": ["cat", "dog"], "attributes": ["indoors", "outdoors"],
                                                       "templates": ["a photo of a {class} {attribute}"]}},
              "output": root, "budget": {"per_group": 2}, "shard_size": 3, "batch_size": 4, "seed": 11,
              "generator": {"steps": 2, "height": 32, "width": 32}, "backend": _diffusers_backend(tiny_sd_model),
              "filters": {"gray_threshold": 0}, "progress": False, "image_format": "png",
              "s3_endpoint": s3_endpoint}  # the endpoint from config reaches the actors through runtime_env
    manifest = plan(config)
    summary = generate(config)
    assert summary["complete"] and summary["rows_done"] == 8 and summary["shards_run"] == 3
    # the run's record says which sampler made the images: here the saved model's own scheduler
    assert summary["sampler"] == {"scheduler": "DDIMScheduler", "source": "the model's own"}
    meta = read_metadata(root, accepted_only=False)
    assert meta["id"].is_unique and set(meta["id"]) == set(manifest["id"])
    pixels = _check_output(root, manifest) if summary["accepted"] == 8 else {}
    assert summary["accepted"] == 8, summary["rejects_by_reason"]
    assert all(p.shape == (32, 32, 3) for p in pixels.values())
    assert len({p.tobytes() for p in pixels.values()}) == 8
    # the same id regenerates the same pixels outside Ray, from the manifest row alone (alone in its batch:
    # equal within the cross-batch tolerance of docs/reproducibility.md)
    from tiny_diffusers import assert_close_pixels

    backend = create_backend("diffusers", config["backend"]["settings"], batch_size=config["batch_size"])
    row = manifest.iloc[5].to_dict()
    assert_close_pixels(np.asarray(backend.generate([row])[0]), pixels[row["id"]], row["id"])


def test_diffusers_img2img_d3s_guides_through_ray_to_s3(ray_cluster, s3_bucket, tiny_sd_model, tmp_path):
    fg = _image_folders(tmp_path / "imagenet", ["7"])
    bg = _image_folders(tmp_path / "backgrounds", ["grass", "road", "forest", "water", "sand", "indoors", "snow",
                                                   "rain", "night", "cave"])
    root = f"{s3_bucket}/img2img"
    config = {"recipe": {"name": "d3s-background", "options": {"classes": [7], "foreground_root": fg,
                                                               "background_root": bg}},
              "output": root, "budget": {"per_group": 1}, "shard_size": 5, "batch_size": 4, "seed": 2,
              "generator": {"steps": 3, "height": 32, "width": 32}, "backend": _diffusers_backend(tiny_sd_model),
              "progress": False, "image_format": "webp"}
    manifest = plan(config)
    assert (manifest["mode"] == "img2img").all() and (manifest["strength"] == 0.9).all()
    summary = generate(config)
    assert summary["complete"] and summary["rows_done"] == 10
    meta = read_metadata(root, accepted_only=False)
    assert meta["id"].is_unique and set(meta["id"]) == set(manifest["id"])
    assert summary["accepted"] + sum(summary["rejects_by_reason"].values()) == 10
    accepted = meta[meta["accepted"]]
    assert accepted["image_key"].str.endswith(".webp").all()
    reader = ShardReader(root)
    for key in reader.metadata["image_key"]:
        assert Image.open(io.BytesIO(reader.image_bytes(key))).size == (32, 32)
    # rerun: nothing left to do, nothing rewritten
    again = generate(config)
    assert again["shards_run"] == 0 and again["shards_skipped"] == 2 and again["rows_done"] == 10
