"""The diffusers backend on a tiny random-weight SD pipeline loaded with the real ``from_pretrained`` (CPU, offline)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_diffusers import MEAN_LEVELS, assert_close_pixels, build_tiny_sd

from ffr.errors import FFRError
from pipelines.backends import BACKENDS, create
from pipelines.backends.diffusers_backend import SCHEDULERS
from pipelines.model_source import MARKER, resolve_model, sync_remote

BASE = dict(dtype="fp32", device="cpu")  # backend.settings: how to run; rows say what to make (steps, guidance...)


def _create(model: str, batch_size: int = 3, **settings):
    return create("diffusers", {"model": model, **BASE, **settings}, batch_size=batch_size)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> str:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "model")


@pytest.fixture(scope="module")
def backend(tiny_sd):
    return _create(tiny_sd)


def _row(prompt: str, seed: int, **extra) -> dict:
    return {"id": f"{prompt}-{seed}", "prompt": prompt, "negative_prompt": "", "seed": seed, "steps": 2,
            "guidance_scale": 5.0, **extra}


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


ROWS = [_row("a photo of a cat", 11), _row("a dog on the grass", 12), _row("the sea at night", 13),
        _row("a red car", 14), _row("a bird in the water", 15, negative_prompt="blurry")]


def test_diffusers_is_registered_and_loads_the_saved_pipeline_class(backend):
    assert "diffusers" in BACKENDS
    assert type(backend.text2image).__name__ == "StableDiffusionPipeline"  # from model_index.json
    assert type(backend.image2image).__name__ == "StableDiffusionImg2ImgPipeline"
    assert backend.image2image.unet is backend.text2image.unet  # from_pipe shares weights, no second copy


def test_text_to_image_gives_one_image_per_row_at_model_size(backend):
    images = backend.generate(ROWS)
    assert len(images) == len(ROWS)
    assert all(im.size == (32, 32) and im.mode == "RGB" for im in images)
    assert len({_pixels(im).tobytes() for im in images}) == len(ROWS)  # different rows, different images


def test_a_row_gives_the_same_pixels_in_any_batch_and_any_instance(tiny_sd):
    """docs/reproducibility.md: (1) the same rows in the same batch, with the same settings, on the same machine
    and library versions give the same bytes, in any backend instance; (2) the same row at another batch
    position, beside other rows or in a batch of another size gives pixels equal within a stated tolerance
    (bit-identical on some CPUs; one level off here and there on AVX-512/AMX CPUs)."""
    # euler_a adds fresh noise each step, so this also checks the per-image generators reach the scheduler.
    backend = _create(tiny_sd, scheduler="euler_a")
    batch = [ROWS[3], ROWS[1], ROWS[0], ROWS[2]]  # two pipeline calls of 3 (the second padded)
    first = [_pixels(im) for im in backend.generate(batch)]
    again = [_pixels(im) for im in backend.generate(batch)]
    fresh = [_pixels(im) for im in _create(tiny_sd, scheduler="euler_a").generate(batch)]
    for a, b, c in zip(first, again, fresh):
        assert np.array_equal(a, b) and np.array_equal(a, c)  # (1): bit-identical

    alone = _pixels(backend.generate([ROWS[0]])[0])  # position 0, padded with copies of itself
    elsewhere = _pixels(_create(tiny_sd, scheduler="euler_a")
                        .generate([ROWS[2], ROWS[0]])[1])  # position 1, other neighbours, another instance
    wider = _pixels(_create(tiny_sd, batch_size=4, scheduler="euler_a")
                    .generate([ROWS[0]])[0])  # another batch size
    for what, pixels in (("alone", alone), ("other position", elsewhere), ("batch size 4", wider)):
        assert_close_pixels(pixels, first[2], what)  # (2): within the tolerance
    other_seed = _pixels(backend.generate([{**ROWS[0], "seed": 999}])[0])
    assert np.abs(other_seed.astype(int) - alone).mean() > 100 * MEAN_LEVELS  # another image is far away


def test_img2img_follows_the_init_images(backend):
    red, blue = Image.new("RGB", (32, 32), (220, 30, 30)), Image.new("RGB", (32, 32), (30, 30, 220))
    rows = [_row("a cat", 1, strength=0.5), _row("a cat", 1, strength=0.5), _row("a dog", 2, strength=0.5)]
    images = backend.generate(rows, init_images=[red, blue, red])
    assert len(images) == 3 and all(im.size == (32, 32) for im in images)
    # Same prompt and seed, different guide → different output (the random VAE does not keep colours, so no more).
    assert not np.array_equal(_pixels(images[0]), _pixels(images[1]))
    text_only = backend.generate([rows[0]])[0]
    assert not np.array_equal(_pixels(images[0]), _pixels(text_only))
    again = backend.generate([rows[2], rows[0]], init_images=[red, red])  # another batch position: tolerance
    assert_close_pixels(_pixels(again[1]), _pixels(images[0]), "img2img at another position")


def test_rows_say_what_to_make_and_share_calls_only_with_equal_settings(backend):
    row = _row("a cat", 5)
    mixed = backend.generate([{**row, "steps": 1}, row])  # two settings in one batch: two pipeline calls
    assert np.array_equal(_pixels(mixed[0]), _pixels(backend.generate([{**row, "steps": 1}])[0]))
    assert np.array_equal(_pixels(mixed[1]), _pixels(backend.generate([row])[0]))
    assert not np.array_equal(_pixels(mixed[0]), _pixels(mixed[1]))
    wide = backend.generate([{**row, "width": 48, "height": 40}])[0]
    assert wide.size == (48, 40)


@pytest.fixture(scope="module")
def default_image(backend) -> Image.Image:
    return backend.generate([ROWS[0]])[0]  # the saved model's scheduler is DDIM


@pytest.mark.parametrize("name", SCHEDULERS.names())
def test_every_scheduler_runs_and_changes_the_sampler(name, tiny_sd, backend, default_image):
    chosen = _create(tiny_sd, scheduler=name)
    expected = SCHEDULERS.get(name)(backend.text2image.scheduler.config)  # built from the model's own config
    assert type(chosen.text2image.scheduler) is type(expected)
    assert chosen.text2image.scheduler.config == expected.config
    assert chosen.sampler() == {"scheduler": type(expected).__name__, "source": f"backend.settings.scheduler={name}"}
    image = chosen.generate([ROWS[0]])[0]
    assert image.size == (32, 32)
    assert np.array_equal(_pixels(image), _pixels(default_image)) == (name == "ddim")


def test_channels_last_and_compile_are_applied(tiny_sd):
    chosen = _create(tiny_sd, channels_last=True, compile=True)
    assert chosen.text2image.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(chosen.text2image.unet, torch._dynamo.eval_frame.OptimizedModule)


def test_half_precision_on_cpu_falls_back_to_fp32_with_a_warning(tiny_sd):
    with pytest.warns(UserWarning, match="fp16"):
        chosen = _create(tiny_sd, dtype="fp16")
    assert chosen.dtype == torch.float32 and chosen.text2image.unet.dtype == torch.float32


@pytest.mark.parametrize("settings, named", [
    ({"scheduler": "warp-drive"}, "'warp-drive'"),
    ({"dtype": "fp8"}, "'fp8'"),
    ({"attention": "flash"}, "'flash'"),
    ({"attention": "xformers"}, "xformers"),
    ({"model": "/no/such/model/dir"}, "'/no/such/model/dir'"),
    ({"model": "no-such-org/no-such-model"}, "'no-such-org/no-such-model'"),
    ({"temperature": 3}, "'backend.settings.temperature'"),
    ({"steps": 4}, "'backend.settings.steps'"),  # what to make lives in the rows (generator.steps)
    ({"device": "tpu"}, "'tpu'"),
])
def test_bad_settings_give_one_line_naming_the_value(tiny_sd, settings, named):
    with pytest.raises(FFRError) as err:
        _create(**{"model": tiny_sd, **settings}).generate([ROWS[0]])
    message = str(err.value)
    assert named in message and "\n" not in message


def test_bad_rows_give_one_clear_error(backend):
    with pytest.raises(FFRError, match="prompt"):
        backend.generate([{"id": "x", "seed": 1}])
    with pytest.raises(FFRError, match="init image"):
        backend.generate([ROWS[0], ROWS[1]], init_images=[Image.new("RGB", (32, 32))])
    with pytest.raises(FFRError, match="steps"):
        backend.generate([_row("a", 1, steps=1, strength=0.4)], init_images=[Image.new("RGB", (32, 32))])
    with pytest.raises(FFRError, match="width 30"):
        backend.generate([_row("a", 1, width=30)])
    with pytest.raises(FFRError, match="has no 'guidance_scale'"):
        backend.generate([{k: v for k, v in ROWS[0].items() if k != "guidance_scale"}])
    with pytest.raises(FFRError, match="has no 'strength'"):
        backend.generate([ROWS[0]], init_images=[Image.new("RGB", (32, 32))])


def test_s3_model_is_synced_once_per_node_and_gives_the_same_pixels(tiny_sd, backend, s3_bucket, tmp_path):
    from ffr.storage import filesystem

    fs, _ = filesystem(s3_bucket)
    prefix = f"{s3_bucket}/models/tiny-sd"
    for root, _dirs, files in os.walk(tiny_sd):
        for name in files:
            local = os.path.join(root, name)
            fs.put_file(local, f"{prefix[len('s3://'):]}/{os.path.relpath(local, tiny_sd)}")
    cache = str(tmp_path / "cache")

    # Several actors on one node start together: one copies, the others wait and reuse the same folder.
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(sync_remote(prefix, cache))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    local = results[0]
    assert os.path.exists(os.path.join(local, MARKER)) and os.path.exists(os.path.join(local, "model_index.json"))
    assert not [p for p in os.listdir(cache) if ".partial-" in p]
    stamp = os.stat(os.path.join(local, "unet", "config.json")).st_mtime_ns
    assert resolve_model(prefix, cache) == local  # complete: no second copy
    assert os.stat(os.path.join(local, "unet", "config.json")).st_mtime_ns == stamp

    os.remove(os.path.join(local, MARKER))  # a copy killed before its marker is redone
    assert sync_remote(prefix, cache) == local and os.path.exists(os.path.join(local, MARKER))

    from_s3 = _create(prefix, cache_dir=cache).generate([ROWS[1]])[0]
    assert np.array_equal(_pixels(from_s3), _pixels(backend.generate([ROWS[1]])[0]))

    with pytest.raises(FFRError, match="holds no files"):
        resolve_model(f"{s3_bucket}/models/missing", cache)
