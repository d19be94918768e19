"""Issue 11's four bad inputs, tried as a user would through the CLI: each is exit 2, one line, no traceback.

1. a mistyped bucket is refused and NOT created (generate and train);
2. a bad backend fails before Ray and before anything is written; a model that fails inside a Ray actor
   comes back as the actor's one line, and the corrected rerun works without deleting anything;
3. a corrupt JPEG in a folder dataset: one line naming the file (bad_images: fail, read mid-training in a
   Ray Train worker), or skipped and counted (bad_images: skip);
4. a mistyped init_checkpoint fails before Ray starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from ffr import runs
from ffr.cli import main
from ffr.errors import FFRError, user_error
from ffr.storage import filesystem

REPO = Path(__file__).resolve().parents[1]
GEN_CONFIG = str(REPO / "configs" / "generate-colored-digits.yaml")
SMALL_GEN = ["budget.per_group=4", "shard_size=16", "generator.height=32", "generator.width=32",
             "progress=false", "contact_sheet_size=1"]
TINY_TRAIN = {"backbone": "small-cnn", "backbone_options": {"width": 4}, "pretrained": None, "image_size": 16,
              "epochs": 1, "batch_size": 16, "num_workers": 1, "max_failures": 0, "controller_failure_limit": 1,
              "mlflow": {"enabled": False}}


def _one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _write_yaml(path: Path, data: dict) -> str:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return str(path)


def _no_ray(monkeypatch) -> None:
    """Fail the test if the code under test reaches ensure_ray (it must refuse before Ray starts)."""
    import ffr.ray_session

    def refuse() -> None:
        raise AssertionError("Ray was started before the input was validated")

    monkeypatch.setattr(ffr.ray_session, "ensure_ray", refuse)


# -- 1. a typo in the bucket name --------------------------------------------------------------------------

def test_generate_refuses_a_missing_bucket_and_does_not_create_it(s3_endpoint, capsys):
    bucket = "typo-bucket-generate"
    rc = main(["generate", "--config", GEN_CONFIG, f"output=s3://{bucket}/run", "runner=local", *SMALL_GEN])
    _one_line_error(capsys, rc, f"bucket {bucket!r} does not exist")
    fs, _ = filesystem(f"s3://{bucket}")
    fs.invalidate_cache()
    assert not fs.exists(bucket)


def test_train_refuses_a_missing_bucket_before_ray(s3_endpoint, tmp_path, capsys, monkeypatch):
    bucket = "typo-bucket-train"
    _no_ray(monkeypatch)
    config = _write_yaml(tmp_path / "train.yaml", {**TINY_TRAIN, "storage_path": f"s3://{bucket}/runs"})
    rc = main(["train", "--config", config])
    _one_line_error(capsys, rc, f"bucket {bucket!r} does not exist")
    fs, _ = filesystem(f"s3://{bucket}")
    fs.invalidate_cache()
    assert not fs.exists(bucket)


def test_folders_inside_an_existing_bucket_are_fine(s3_bucket):
    from ffr.runs import write_json

    write_json(f"{s3_bucket}/a/b/c/x.json", {"ok": 1})
    assert runs.read_json(f"{s3_bucket}/a/b/c/x.json") == {"ok": 1}


# -- 2. a bad backend / a model that fails inside Ray ------------------------------------------------------

def test_unknown_backend_fails_before_anything_is_written_and_the_fix_just_works(tmp_path, capsys, monkeypatch):
    out = tmp_path / "gen"
    rc = main(["generate", "--config", GEN_CONFIG, f"output={out}", "backend.name=procedurall", *SMALL_GEN])
    _one_line_error(capsys, rc, "procedurall")
    assert not out.exists()  # no manifest recorded the bad value
    rc = main(["generate", "--config", GEN_CONFIG, f"output={out}", "runner=local", *SMALL_GEN])
    assert rc == 0, capsys.readouterr().err


def test_missing_model_directory_fails_before_ray(tmp_path, capsys, monkeypatch):
    _no_ray(monkeypatch)
    missing = tmp_path / "no-such-model"
    rc = main(["generate", "--config", GEN_CONFIG, f"output={tmp_path / 'gen'}", "backend.name=diffusers",
               f"backend.settings.model={missing}", *SMALL_GEN])
    _one_line_error(capsys, rc, str(missing), "does not exist")
    assert not (tmp_path / "gen").exists()


def test_missing_s3_model_prefix_fails_before_ray(s3_bucket, tmp_path, capsys, monkeypatch):
    _no_ray(monkeypatch)
    rc = main(["generate", "--config", GEN_CONFIG, f"output={tmp_path / 'gen'}", "backend.name=diffusers",
               f"backend.settings.model={s3_bucket}/models/typo", *SMALL_GEN])
    _one_line_error(capsys, rc, f"{s3_bucket}/models/typo", "holds no files")


@pytest.mark.slow
def test_model_failing_inside_a_ray_actor_is_one_line_and_the_fixed_rerun_works(ray_cluster, tmp_path, capsys):
    empty_model = tmp_path / "empty-model"  # exists (so the driver's check passes) but is no model
    empty_model.mkdir()
    out = tmp_path / "gen"
    rc = main(["generate", "--config", GEN_CONFIG, f"output={out}", "backend.name=diffusers",
               f"backend.settings.model={empty_model}", "backend.settings.device=cpu", *SMALL_GEN])
    _one_line_error(capsys, rc, "cannot load diffusers model")
    assert (out / "manifest" / "manifest.json").exists()  # written before the actors ran
    rc = main(["generate", "--config", GEN_CONFIG, f"output={out}", *SMALL_GEN])  # same output, nothing deleted
    assert rc == 0, capsys.readouterr().err
    from ffr.shards import read_metadata

    assert read_metadata(str(out))["id"].is_unique


def test_user_error_unwraps_a_ray_task_and_leaves_bugs_alone(ray_cluster):
    import ray

    @ray.remote
    def bad(kind: str) -> None:
        if kind == "user":
            raise FFRError("value 'x' is wrong; expected 'y'")
        raise KeyError("a bug")

    with pytest.raises(Exception) as user:
        ray.get(bad.remote("user"))
    found = user_error(user.value)
    assert type(found) is FFRError and str(found) == "value 'x' is wrong; expected 'y'"
    assert len(str(user.value).splitlines()) > 1  # what the CLI printed before: the remote traceback
    with pytest.raises(Exception) as bug:
        ray.get(bad.remote("bug"))
    assert user_error(bug.value) is None


# -- 3. a corrupt JPEG in a folder dataset -----------------------------------------------------------------

def _jpeg_folder(root: Path) -> tuple[dict, str]:
    """2 classes × 2 biases of solid-color JPEGs with explicit splits; returns (options, a train key)."""
    rows = []
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        for y in (0, 1):
            for b in (0, 1):
                for i in range(n):
                    key = f"img/{split}-{y}{b}-{i}.jpg"
                    (root / "img").mkdir(parents=True, exist_ok=True)
                    Image.new("RGB", (16, 16), (200 * y, 200 * b, 60 + 10 * i)).save(root / key, "JPEG")
                    rows.append({"path": key, "y": y, "b": b, "split": split})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return {"root": str(root), "metadata": "labels.csv"}, "img/train-01-2.jpg"


@pytest.mark.slow
def test_corrupt_jpeg_fails_in_one_line_or_is_skipped_and_counted(ray_cluster, tmp_path, capsys):
    options, bad_key = _jpeg_folder(tmp_path / "data")
    (tmp_path / "data" / bad_key).write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    base = {**TINY_TRAIN, "dataset": "folder", "dataset_options": options, "storage_path": str(tmp_path / "runs"),
            "executor": "ray-train"}
    config = _write_yaml(tmp_path / "fail.yaml", base)
    rc = main(["train", "--config", config])  # default bad_images: fail; the image is read in a Train worker
    _one_line_error(capsys, rc, bad_key, "cannot be decoded")

    # skip: recorded the same under either executor; the in-process one spares a second Ray Train start-up
    config = _write_yaml(tmp_path / "skip.yaml", {**base, "bad_images": "skip", "executor": "local"})
    rc = main(["train", "--config", config])
    out = capsys.readouterr().out
    assert rc == 0
    run_dir = json.loads(out.strip().splitlines()[-1])["run_dir"]
    result = runs.read_result(run_dir)
    assert result["bad_images"] == "skip" and result["bad_images_skipped"] == 1
    splits = pd.read_parquet(Path(run_dir) / runs.SPLITS)
    assert bad_key not in set(splits["key"]) and len(splits) == 4 * 12 - 1


# -- 4. a mistyped init_checkpoint -------------------------------------------------------------------------

def test_mistyped_init_checkpoint_fails_before_ray(tmp_path, capsys, monkeypatch):
    _no_ray(monkeypatch)
    typo = str(tmp_path / "runs" / "stage1-typo")
    config = _write_yaml(tmp_path / "train.yaml", {**TINY_TRAIN, "storage_path": str(tmp_path / "runs"),
                                                   "init_checkpoint": typo})
    rc = main(["train", "--config", config])
    _one_line_error(capsys, rc, typo, "init_checkpoint")


# -- the sweep: a trial that fails on a user error inside Ray ----------------------------------------------

@pytest.mark.slow
def test_sweep_trial_failing_on_a_user_error_is_named_by_its_one_line(ray_cluster, tmp_path, capsys):
    # the base config is valid (checked before Ray); the sampled bias ratio is not, and only a trial sees it
    config = _write_yaml(tmp_path / "sweep.yaml", {
        "name": "bad-trial", "storage_path": str(tmp_path / "sweeps"), "train": TINY_TRAIN, "methods": ["erm"],
        "seeds": [0], "search": {"dataset_options.bias_ratio": ["choice", [1.5]]}, "search_method_hparams": False,
        "scheduler": {"type": "fifo"}})
    rc = main(["sweep", "--config", config])
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert rc == 1, captured.err  # the sweep ran and ended; a failed trial is exit 1 (tune/command.py)
    assert "1 of 1 trials failed" in last and "1.5" in last and "Traceback" not in last, last
    table = pd.read_csv(tmp_path / "sweeps" / "bad-trial" / "sweep_results.csv")
    assert table["status"].tolist() == ["error"] and len(str(table["error"][0]).splitlines()) == 1
