"""D3S's model zoo: timm models with their own preprocessing and CLIP zero-shot heads over the class table, with a
tiny random timm model and a tiny random CLIP, evaluated by ``ffr d3s eval`` through Ray Data."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tiny_diffusers import build_tiny_clip

import pipelines
from ffr import runs
from ffr.cli import main
from ffr.d3s.embedded import CLASS_TABLE, generation_config, write_foregrounds
from ffr.d3s.models import MODEL_FAMILIES, load_classifier, resolve_spec
from ffr.errors import FFRError
from pipelines.recipes.class_table import load_class_table

TIMM = "timm:test_vit:random"  # timm's own 0.4M-parameter test ViT: 160² input, mean/std 0.5 (not ImageNet's)


@pytest.fixture(scope="module")
def d3s_output(tmp_path_factory) -> str:
    """The embedded D3S at its smallest: 10 digits × 10 backgrounds × 1 image, 1 template per background."""
    root = tmp_path_factory.mktemp("d3s-zoo")
    foregrounds = write_foregrounds(root, per_class=1, size=32)
    summary = pipelines.generate(generation_config(str(root / "d3s"), foregrounds, per_group=1, templates=1, size=32,
                                                   runner="local", shard_size=50))
    assert summary["accepted"] == 100
    return str(root / "d3s")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "clip")


def test_ffr_d3s_eval_lists_the_families_it_supports(capsys):
    assert main(["d3s", "eval", "--list-models"]) == 0
    printed = capsys.readouterr().out
    for name in MODEL_FAMILIES.names():
        family = MODEL_FAMILIES.get(name)
        assert f"{name}" in printed and family.syntax in printed
    assert {"torchvision", "timm", "clip", "checkpoint"} <= set(MODEL_FAMILIES.names())


def test_timm_preprocessing_is_the_models_own():
    loaded = load_classifier(TIMM)
    x = loaded.preprocess(Image.new("RGB", (48, 48), (255, 255, 255)))
    assert x.shape == (3, 160, 160)  # its pretrained_cfg's input size, not 224
    assert torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5: its mean/std, not ImageNet's
    assert loaded.n_classes == 1000 and loaded.name == TIMM


def _clip_logits_by_hand(model_dir: str, image: Image.Image, names: tuple[str, ...]) -> torch.Tensor:
    """CLIP zero-shot written out with transformers alone: the reference the loader must match."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(model_dir).eval(), CLIPProcessor.from_pretrained(model_dir)
    with torch.inference_mode():
        inputs = processor(text=[f"a photo of a {n}." for n in names], images=image, return_tensors="pt",
                           padding=True)
        return model(**inputs).logits_per_image[0]


def test_clip_zero_shot_head_is_clip_over_the_class_table(tiny_clip):
    names = load_class_table(CLASS_TABLE).names
    loaded = load_classifier(f"clip:{tiny_clip}", names)
    assert loaded.n_classes == 10
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    with torch.inference_mode():
        ours = loaded.module(loaded.preprocess(image)[None])[0]
    # the image processor's own resize/crop/normalize, as a torchvision transform: equal up to resampling
    assert torch.allclose(ours, _clip_logits_by_hand(tiny_clip, image, names), atol=0.05)
    ensemble = load_classifier(f"clip:{tiny_clip}", names, ("a photo of a {class}.", "a drawing of a {class}."))
    assert not torch.equal(ensemble.module.text, loaded.module.text)  # prompt ensembling changes the head
    with pytest.raises(FFRError, match="has no {class}"):
        load_classifier(f"clip:{tiny_clip}", names, ("a photo",))


@pytest.mark.parametrize("spec, expected", [
    ("timm:no_such_net_42", "'no_such_net_42'"),
    ("timm:", "names no model"),
    ("clip:/no/such/clip", "'/no/such/clip'"),
])
def test_bad_model_specs_fail_in_one_line(spec, expected):
    with pytest.raises(FFRError) as err:
        load_classifier(spec, ("zero", "one"))
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("spec, resolved", [
    ("timm:vit_small_patch16_224:random", "timm:vit_small_patch16_224:random"),  # a keyword, not a file
    ("timm:resnet50", "timm:resnet50"),
    ("timm:resnet50:w/r50.pth", "timm:resnet50:/base/w/r50.pth"),
    ("resnet50:random", "resnet50:random"),
    ("resnet50:IMAGENET1K_V2", "resnet50:IMAGENET1K_V2"),
    ("resnet50:w/r50.pth", "resnet50:/base/w/r50.pth"),
    ("checkpoint:runs/a/best.pt", "checkpoint:/base/runs/a/best.pt"),
    ("clip:openai/clip-vit-base-patch32", "clip:openai/clip-vit-base-patch32"),  # a hub id, not a folder here
])
def test_model_specs_resolve_only_their_paths_on_the_driver(spec, resolved):
    assert resolve_spec(spec, "/base") == resolved


def test_ffr_d3s_eval_runs_a_tiny_timm_and_a_tiny_clip_zero_shot_through_ray_data(d3s_output, tiny_clip, ray_cluster,
                                                                                  tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["d3s", "eval", "--data", d3s_output, "--model", TIMM, "--model", f"clip:{tiny_clip}",
            "--class-table", CLASS_TABLE, "--out", str(out), "--batch-size", "16"]
    assert main(argv) == 0  # Ray Data over an actor pool (no --local)
    timing = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(timing) == {TIMM, f"clip:{tiny_clip}"} and all(t["images"] == 100 for t in timing.values())
    pred = pd.read_parquet(out / "predictions.parquet")
    clip_name = "clip:clip"
    assert set(pred["model"]) == {TIMM, clip_name} and len(pred) == 200
    by_model = {m: part for m, part in pred.groupby("model")}
    assert all(max(t) < 1000 for t in by_model[TIMM]["top5"])
    assert all(len(t) == 5 and max(t) < 10 for t in by_model[clip_name]["top5"])  # a head over the 10 digits
    # The actor's CLIP predictions are CLIP's: recompute one image's top class by hand.
    from ffr.shards import ShardReader

    reader = ShardReader(d3s_output)
    row = reader.metadata.iloc[0]
    image = Image.open(io.BytesIO(reader.image_bytes(row["image_key"]))).convert("RGB")
    expected = int(_clip_logits_by_hand(tiny_clip, image, load_class_table(CLASS_TABLE).names).argmax())
    assert by_model[clip_name].set_index("id").loc[row["id"], "top5"][0] == expected
    assert (out / "summary.md").read_text().count("\n") == 4  # header, rule, one row per model


def test_ffr_d3s_eval_reads_an_ffr_train_run_directly(d3s_output, tmp_path, capsys):
    """``ffr train``'s output is a ``checkpoint:`` model as it is: train a small CNN on the D3S output's correlated
    view (10 digit classes, the class table's), then evaluate the run directory on every background."""
    from ffr.backbones import Preprocessing
    from ffr.datasets.d3s_splits import write_splits
    from ffr.training.loop import load_state

    mapping = tmp_path / "identity.json"
    mapping.write_text(json.dumps({"names": [str(i) for i in range(10)], "classes": {str(i): i for i in range(10)}}))
    write_splits(d3s_output, seed=0, mapping=str(mapping), name="digits-ckpt")
    assert main(["train", "dataset=d3s-shift", f"dataset_options={{root: {d3s_output}, split: digits-ckpt}}",
                 "variant=none", "backbone=small-cnn", "backbone_options={width: 4}", "pretrained=null",
                 "image_size=16", "epochs=1", "batch_size=64", "executor=local",
                 f"storage_path={tmp_path / 'runs'}"]) == 0
    run_dir = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"]

    # The checkpoint describes itself: the model, its classes and the preprocessing it was trained with.
    loaded = load_classifier(f"checkpoint:{run_dir}", load_class_table(CLASS_TABLE).names)
    assert loaded.n_classes == 10 and loaded.name == run_dir.rsplit("/", 1)[-1]
    best = runs.run_checkpoint(run_dir)
    trained = load_state(best)["model"]
    assert all(torch.equal(v, trained[k]) for k, v in loaded.module.state_dict().items())
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert torch.equal(loaded.preprocess(image), Preprocessing(16).transform()(image))  # small-cnn's, at 16 px

    out = tmp_path / "eval"
    assert main(["d3s", "eval", "--data", d3s_output, "--model", f"checkpoint:{run_dir}", "--class-table",
                 CLASS_TABLE, "--out", str(out), "--local"]) == 0
    pred = pd.read_parquet(out / "predictions.parquet")
    assert len(pred) == 100 and set(pred["model"]) == {loaded.name}
    assert all(0 <= c < 10 for top in pred["top5"] for c in top)
    assert (out / "per_background.csv").exists()

    # A checkpoint file works too; so does one written before checkpoints described themselves (the run's config
    # names the backbone, the head gives the class count, the preprocessing was ImageNet's at image_size).
    state = torch.load(f"{best}/model.pt", weights_only=True)
    old = {k: v for k, v in state.items()
           if k not in ("backbone", "backbone_options", "num_classes", "class_names", "preprocessing")}
    torch.save(old, tmp_path / "old.pt")
    legacy = load_classifier(f"checkpoint:{tmp_path / 'old.pt'}")
    assert legacy.n_classes == 10 and torch.equal(legacy.preprocess(image), loaded.preprocess(image))
    with pytest.raises(FFRError, match="predicts 10 classes .* the class table has 2"):
        load_classifier(f"checkpoint:{best}", ("zero", "one"))
    with pytest.raises(FFRError, match="neither a checkpoint file"):
        load_classifier(f"checkpoint:{tmp_path / 'runs'}")


def test_the_embedded_d3s_older_checkpoint_format_still_loads(tmp_path):
    from ffr.backbones import create_backbone

    model = create_backbone("small-cnn", 10, width=4)
    torch.save({"arch": "ffr/small-cnn", "arch_options": {"width": 4}, "num_classes": 10,
                "state_dict": model.state_dict(),
                "preprocess": {"resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.25] * 3}}, tmp_path / "plain.pt")
    loaded = load_classifier(f"checkpoint:{tmp_path / 'plain.pt'}", load_class_table(CLASS_TABLE).names)
    assert loaded.name == "plain" and loaded.n_classes == 10
    x = loaded.preprocess(Image.new("RGB", (32, 32), (255, 255, 255)))
    assert torch.allclose(x, torch.full_like(x, 2.0))  # (1 - 0.5) / 0.25: its own mean and std
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.module.state_dict().items())
