"""The real-world dataset readers on tiny fixture folders in their real layouts (local and moto S3)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dataset_fixtures import (
    CELEBA_COUNTS,
    FIXTURES,
    FOLDER_BIAS_NAMES,
    FOLDER_CLASS_NAMES,
    FOLDER_COUNTS,
    SPUCO_SIZES,
    UTK_COUNTS,
    UTK_MALFORMED,
    WATERBIRDS_COUNTS,
    build_celeba_hq,
    build_folder,
    build_spuco_animals,
    build_utk_face,
    build_waterbirds,
    nearest_group,
)

import ffr.datasets as datasets
from ffr.balance import VAL_FLOOR, keep_counts
from ffr.datasets.base import SPLITS, save_splits
from ffr.errors import FFRError
from ffr.groups import group_counts
from ffr.storage import filesystem

REAL_READERS = ("celeba-hq", "utk-face", "spuco-animals", "waterbirds", "folder")


def create(name: str, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # utk-face warns about the fixture's deliberately malformed names
        return datasets.create(name, **options)


def counts(split) -> dict[tuple[int, int], int]:
    return group_counts(split.y, split.b)


def one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# --- every registered dataset -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", datasets.DATASETS.names())
def test_every_registered_dataset_yields_three_consistent_splits(name, tmp_path):
    if name not in FIXTURES:
        pytest.fail(f"dataset {name!r} is registered but tests/dataset_fixtures.py has no FIXTURES entry for it")
    splits = create(name, **FIXTURES[name](tmp_path))
    assert set(splits) == set(SPLITS)
    spec = splits["train"].spec
    assert len(spec.group_names()) == spec.n_groups
    for split_name, split in splits.items():
        assert split.spec == spec, f"{split_name} has a different GroupSpec"
        assert len(split) > 0
        assert set(np.unique(split.source)) <= {0, 1}
        groups = split.groups()
        assert groups.min() >= 0 and groups.max() < spec.n_groups
        keys = split.table["key"].astype(str)
        assert not keys.str.startswith("/").any() and not keys.str.contains("://").any(), "keys must be relative"
        image = split.load_image(keys.iloc[0])
        assert image.size[0] > 0


@pytest.mark.parametrize("name", datasets.DATASETS.names())
def test_every_dataset_declares_its_options_and_names_a_bad_key(name, tmp_path):
    from ffr.options import NoOptions, Options

    declared = datasets.DATASETS.get(name).Options
    assert issubclass(declared, Options) and declared is not NoOptions and "seed" in declared.model_fields
    options = FIXTURES[name](tmp_path)
    assert isinstance(datasets.DATASETS.options(name, options, "dataset_options"), declared)
    with pytest.raises(FFRError, match=rf"^unknown option 'dataset_options.colour' of dataset '{name}'; expected"):
        datasets.create(name, colour="red", **options)
    with pytest.raises(FFRError, match=rf"^option 'dataset_options.seed' of dataset '{name}' = -1: .*greater than"):
        datasets.create(name, **{**options, "seed": -1})


# --- group counts, names, labels carried by the right files ---------------------------------------------


def _all_counts(splits) -> dict[tuple[int, int], int]:
    total: dict[tuple[int, int], int] = {}
    for split in splits.values():
        for g, n in counts(split).items():
            total[g] = total.get(g, 0) + n
    return total


def _labels_match_images(split, sample: int = 12) -> None:
    rng = np.random.default_rng(0)
    for i in rng.choice(len(split), min(sample, len(split)), replace=False):
        row = split.table.iloc[int(i)]
        image = split.load_image(row["key"])
        assert nearest_group(image, split.spec.n_classes, split.spec.n_bias) == (row["y"], row["b"]), row["key"]


def test_celeba_hq_groups_names_and_opposed_bias(tmp_path):
    options = build_celeba_hq(tmp_path)
    natural = create("celeba-hq", oppose_bias=False, **options)
    assert natural["train"].spec.class_names == ("not Smiling", "Smiling")
    assert natural["train"].spec.bias_names == ("Female", "Male")
    assert _all_counts(natural) == CELEBA_COUNTS
    assert [len(natural[s]) for s in SPLITS] == [160, 20, 20]  # 80/10/10
    _labels_match_images(natural["train"])
    # FFR's forced direction: both classes are female-majority in the data; after it, not-smiling is male-majority
    opposed = create("celeba-hq", **options)
    train = counts(opposed["train"])
    assert train[(0, 1)] > train[(0, 0)] and train[(1, 0)] > train[(1, 1)]
    assert counts(opposed["test"]) == counts(natural["test"])


def test_celeba_hq_other_attributes_and_unknown_name(tmp_path):
    options = build_celeba_hq(tmp_path)
    splits = create("celeba-hq", target="Eyeglasses", bias="Young", oppose_bias=False, **options)
    assert splits["test"].spec.class_names == ("not Eyeglasses", "Eyeglasses")
    assert splits["test"].spec.bias_names == ("not Young", "Young")
    with pytest.raises(FFRError) as e:
        create("celeba-hq", target="Smiley", **options)
    one_line_error(e, "'Smiley'", "Smiling", "Male", "Young")


def test_utk_face_groups_drop_ages_and_count_malformed_names(tmp_path):
    options = build_utk_face(tmp_path)
    with pytest.warns(UserWarning, match=f"skipped {UTK_MALFORMED} images"):
        splits = datasets.create("utk-face", oppose_bias=False, **options)
    assert splits["train"].spec.class_names == ("Male", "Female")
    assert splits["train"].spec.bias_names == ("old", "young")
    assert _all_counts(splits) == UTK_COUNTS  # ages 10 and 60 dropped, malformed names skipped
    _labels_match_images(splits["train"])
    train = counts(create("utk-face", **options)["train"])
    assert train[(0, 1)] > train[(0, 0)] and train[(1, 0)] > train[(1, 1)]  # male–young, female–old majorities


def test_utk_face_without_any_parsable_name_is_an_error(tmp_path):
    root = tmp_path / "utk"
    for name in ("a.jpg", "b_c.jpg", "1_2_3.jpg"):  # gender 2 is not 0/1
        build_path = root / name
        build_path.parent.mkdir(parents=True, exist_ok=True)
        build_path.write_bytes(b"")
    with pytest.raises(FFRError) as e:
        create("utk-face", root=str(root))
    one_line_error(e, "none of the 3 image names", "age_gender_race_date")


def test_spuco_animals_native_splits_and_eight_groups(tmp_path):
    splits = create("spuco-animals", **build_spuco_animals(tmp_path))
    spec = splits["train"].spec
    assert spec.class_names == ("landbird", "waterbird", "small_dog", "big_dog")
    assert spec.bias_names == ("land", "water", "indoors", "outdoors")
    for split_name, (major, minor) in SPUCO_SIZES.items():
        c = counts(splits[split_name])
        assert len(c) == 8 and set(c) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)}
        assert all(n == (major if g[0] % 2 == g[1] % 2 else minor) for g, n in c.items())
    _labels_match_images(splits["val"])


def test_waterbirds_metadata_splits(tmp_path):
    splits = create("waterbirds", **build_waterbirds(tmp_path))
    assert splits["train"].spec.group_names() == ["landbird/land", "landbird/water", "waterbird/land",
                                                  "waterbird/water"]
    for split_name, expected in WATERBIRDS_COUNTS.items():
        assert counts(splits[split_name]) == expected
    _labels_match_images(splits["train"])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_folder_with_csv_or_parquet_and_names_from_columns(tmp_path, fmt):
    splits = create("folder", **build_folder(tmp_path, fmt=fmt))
    assert splits["train"].spec.class_names == FOLDER_CLASS_NAMES
    assert splits["train"].spec.bias_names == FOLDER_BIAS_NAMES
    for split_name, expected in FOLDER_COUNTS.items():
        assert counts(splits[split_name]) == expected
    _labels_match_images(splits["test"])


def test_folder_names_from_options_and_seeded_split_without_split_column(tmp_path):
    options = build_folder(tmp_path, with_split=False)
    splits = create("folder", class_names=["a", "b", "c"], bias_names=["x", "y"], seed=3, **options)
    assert splits["val"].spec.group_names()[:2] == ["a/x", "a/y"]
    total = sum(sum(c.values()) for c in FOLDER_COUNTS.values())
    assert [len(splits[s]) for s in SPLITS] == [round(0.8 * total), round(0.1 * total),
                                                 total - round(0.8 * total) - round(0.1 * total)]


# --- reproducibility and saved splits ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["celeba-hq", "utk-face"])
def test_split_is_reproducible_from_the_seed_and_round_trips(name, tmp_path):
    options = FIXTURES[name](tmp_path)
    a = create(name, bias_ratio=0.95, seed=7, **options)
    b = create(name, bias_ratio=0.95, seed=7, **options)
    c = create(name, bias_ratio=0.95, seed=8, **options)
    for s in SPLITS:
        pd.testing.assert_frame_equal(a[s].table, b[s].table)
    assert set(a["train"].table["key"]) != set(c["train"].table["key"])
    path = tmp_path / "run" / "splits.parquet"
    path.parent.mkdir()
    save_splits(a, str(path))
    saved = pd.read_parquet(path)
    assert not saved["key"].str.contains(str(tmp_path)).any(), "saved keys must be relative to the root"
    for s in SPLITS:
        rows = saved[saved["split"] == s].drop(columns="split").reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, a[s].table, check_dtype=False)
        image = a[s].load_image(rows["key"].iloc[0])  # a saved key resolves against the root again
        assert image.size == (8, 8)


# --- bias ratio: train (floor 0) and val (floor 10), never test ---------------------------------------------


@pytest.mark.parametrize("name", REAL_READERS)
def test_bias_ratio_downsamples_train_and_val_not_test(name, tmp_path):
    options = FIXTURES[name](tmp_path)
    ratio = 0.97
    before = create(name, seed=1, **options)
    after = create(name, bias_ratio=ratio, seed=1, **options)
    assert counts(after["train"]) == keep_counts(counts(before["train"]), ratio, floor=0)
    assert counts(after["val"]) == keep_counts(counts(before["val"]), ratio, floor=VAL_FLOOR)
    pd.testing.assert_frame_equal(after["test"].table, before["test"].table)
    assert len(after["train"]) < len(before["train"])
    assert set(after["train"].table["key"]) <= set(before["train"].table["key"])


def test_val_floor_of_ten_is_visible(tmp_path):
    splits = create("spuco-animals", bias_ratio=0.99, **build_spuco_animals(tmp_path))
    minority = {g: n for g, n in counts(splits["val"]).items() if g[0] % 2 != g[1] % 2}
    assert set(minority.values()) == {VAL_FLOOR}  # ceil(12 * 0.01 / 0.99) = 1, raised to the floor
    train_minority = {g: n for g, n in counts(splits["train"]).items() if g[0] % 2 != g[1] % 2}
    assert set(train_minority.values()) == {1}


def test_bad_options_fail_before_reading(tmp_path):
    with pytest.raises(FFRError) as e:
        create("waterbirds", root=str(tmp_path / "nowhere"), bias_ratio=1.5)
    one_line_error(e, "1.5")
    with pytest.raises(FFRError) as e:
        create("waterbirds", root=str(tmp_path / "nowhere"), seed=-1)
    one_line_error(e, "-1")


# --- S3 roots on the moto server ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_READERS)
def test_s3_root_gives_the_same_splits_as_local(name, tmp_path, s3_bucket):
    options = FIXTURES[name](tmp_path, scale=0.4)  # fewer objects to upload: moto is slow per request
    local_root = options["root"]
    s3_root = f"{s3_bucket}/data/{Path(local_root).name}"
    fs, inner = filesystem(s3_root)
    fs.put(local_root + "/", inner, recursive=True)
    local = create(name, bias_ratio=0.97, seed=2, **options)
    remote = create(name, bias_ratio=0.97, seed=2, **{**options, "root": s3_root})
    for s in SPLITS:
        pd.testing.assert_frame_equal(remote[s].table, local[s].table)
    _labels_match_images(remote["val"], sample=3)
    # the loader is a plain picklable object, so it works in DataLoader and Ray workers too
    loader = pickle.loads(pickle.dumps(remote["test"].load_image))
    assert loader(remote["test"].table["key"].iloc[0]).size == (8, 8)


def test_s3_missing_root_and_corrupt_image(tmp_path, s3_bucket):
    with pytest.raises(FFRError) as e:
        create("waterbirds", root=f"{s3_bucket}/absent")
    one_line_error(e, f"{s3_bucket}/absent", "does not exist")
    options = build_waterbirds(tmp_path, scale=0.5)
    table = pd.read_csv(Path(options["root"]) / "metadata.csv")
    bad = table["img_filename"].iloc[0]
    (Path(options["root"]) / bad).write_bytes(b"not a jpeg at all")
    s3_root = f"{s3_bucket}/wb"
    fs, inner = filesystem(s3_root)
    fs.put(options["root"] + "/", inner, recursive=True)
    with pytest.raises(FFRError) as e:
        create("waterbirds", root=s3_root, verify=True)
    one_line_error(e, f"{s3_root}/{bad}", "corrupt")


# --- missing and corrupt files: one clear line naming the path --------------------------------------------


def test_missing_root(tmp_path):
    for name in REAL_READERS:
        with pytest.raises(FFRError) as e:
            create(name, root=str(tmp_path / "nope"))
        one_line_error(e, str(tmp_path / "nope"), "does not exist")


def test_missing_metadata_files(tmp_path):
    celeba = build_celeba_hq(tmp_path, scale=0.2)["root"]
    (Path(celeba) / "CelebAMask-HQ-attribute-anno.txt").unlink()
    with pytest.raises(FFRError) as e:
        create("celeba-hq", root=celeba)
    one_line_error(e, "CelebAMask-HQ-attribute-anno.txt", "does not exist")

    waterbirds = build_waterbirds(tmp_path, scale=0.2)["root"]
    (Path(waterbirds) / "metadata.csv").unlink()
    with pytest.raises(FFRError) as e:
        create("waterbirds", root=waterbirds)
    one_line_error(e, f"{waterbirds}/metadata.csv")

    with pytest.raises(FFRError) as e:
        create("folder", root=waterbirds, metadata="labels.csv")
    one_line_error(e, f"{waterbirds}/labels.csv")

    spuco = build_spuco_animals(tmp_path, scale=0.2)["root"]
    for p in sorted((Path(spuco) / "spuco_dogs" / "val" / "big_dogs" / "indoor").iterdir()):
        p.unlink()
    (Path(spuco) / "spuco_dogs" / "val" / "big_dogs" / "indoor").rmdir()
    with pytest.raises(FFRError) as e:
        create("spuco-animals", root=spuco)
    one_line_error(e, "spuco_dogs/val/big_dogs/indoor")


def test_image_listed_in_metadata_but_missing(tmp_path):
    options = build_celeba_hq(tmp_path, scale=0.2)
    (Path(options["root"]) / "CelebA-HQ-img" / "3.jpg").unlink()
    (Path(options["root"]) / "CelebA-HQ-img" / "5.jpg").unlink()
    with pytest.raises(FFRError) as e:
        create("celeba-hq", **options)
    one_line_error(e, "CelebA-HQ-img/3.jpg", "and 1 more")


def test_corrupt_image_detected_on_load_and_by_verify(tmp_path):
    options = build_folder(tmp_path, scale=0.3)
    table = pd.read_csv(Path(options["root"]) / options["metadata"])
    bad = table["path"].iloc[-1]
    (Path(options["root"]) / bad).write_bytes(b"\x89PNG truncated")
    splits = create("folder", **options)  # lazy by default: found when the image is read
    test = splits["test"]
    with pytest.raises(FFRError) as e:
        test.load_image(bad)
    one_line_error(e, bad, "corrupt")
    with pytest.raises(FFRError) as e:
        create("folder", verify=True, **options)
    one_line_error(e, bad, "corrupt")
    (Path(options["root"]) / bad).unlink()  # deleted after the split was built: still one clear line
    with pytest.raises(FFRError) as e:
        test.load_image(bad)
    one_line_error(e, bad, "does not exist")


def test_malformed_metadata_values(tmp_path):
    options = build_celeba_hq(tmp_path, scale=0.2)
    anno = Path(options["root"]) / "CelebAMask-HQ-attribute-anno.txt"
    lines = anno.read_text().splitlines()
    anno.write_text("\n".join(lines[:3] + [lines[3].replace(" -1", " 0", 1)] + lines[4:]) + "\n")
    with pytest.raises(FFRError) as e:
        create("celeba-hq", **options)
    one_line_error(e, "line 4", "1 or -1")

    options = build_folder(tmp_path, scale=0.3)
    labels = Path(options["root"]) / options["metadata"]
    table = pd.read_csv(labels)
    table.loc[2, "split"] = "holdout"
    table.to_csv(labels, index=False)
    with pytest.raises(FFRError) as e:
        create("folder", **options)
    one_line_error(e, "'holdout'", "train/val/test")
    table.loc[2, "split"] = "train"
    table.loc[0, "path"] = "/somewhere/else.png"
    table.to_csv(labels, index=False)
    with pytest.raises(FFRError) as e:
        create("folder", **options)
    one_line_error(e, "/somewhere/else.png", "relative")
    with pytest.raises(FFRError) as e:
        create("folder", class_names=["only-one"], **build_folder(tmp_path / "again", scale=0.3))
    one_line_error(e, "y value 1", "only-one")


def test_relative_local_root_resolves_to_an_absolute_loader(tmp_path, monkeypatch):
    build_waterbirds(tmp_path, scale=0.2)
    monkeypatch.chdir(tmp_path)
    splits = create("waterbirds", root="waterbirds")
    key = splits["train"].table["key"].iloc[0]
    monkeypatch.chdir("/")  # e.g. a Ray worker's own working directory
    assert splits["train"].load_image(key).size == (8, 8)
