"""FFR's published split pickles (data/*.pkl of From-Fake-to-Real) as a dataset option: written here in FFR's
format — a dict of absolute cluster paths, numpy label arrays and real_gen flags, pickled by numpy 1 — and read
against the fixture datasets, with the foreign prefixes remapped onto the user's root."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import build_celeba_hq, build_spuco_animals, build_utk_face

from ffr import datasets
from ffr.cli import main
from ffr.errors import FFRError

FOREIGN = "/usr4/cs505/mqraitem/ivc-ml/datasets"


def write_ffr_pickle(path: Path, filenames: list[str], targets, biases, real_gen=None) -> None:
    """A split as FFR's datasets/celeba.py dumps it, from its numpy-1 environment (numpy.core module paths)."""
    data = {"filenames": filenames, "targets": np.asarray(targets, dtype=np.int64),
            "biases": np.asarray(biases, dtype=np.int64),
            "real_gen": np.zeros(len(filenames), dtype=np.int64) if real_gen is None else np.asarray(real_gen)}
    raw = pickle.dumps(data, protocol=2).replace(b"numpy._core", b"numpy.core")
    assert b"numpy.core.multiarray" in raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def _celeba_splits(tmp_path: Path) -> tuple[dict, dict[str, list[int]]]:
    options = build_celeba_hq(tmp_path)
    labels = {}
    for line in (Path(options["root"]) / "CelebAMask-HQ-attribute-anno.txt").read_text().splitlines()[2:]:
        name, *values = line.split()
        labels[name] = (int(values[31] == "1"), int(values[20] == "1"))  # Smiling, Male
    names = sorted(labels, key=lambda n: int(n.split(".")[0]))
    parts = {"train": names[:120], "valid": names[120:160], "test": names[160:]}
    for split, members in parts.items():
        write_ffr_pickle(tmp_path / "data" / f"celeba_Smiling_{split}_0.99.pkl",
                         [f"{FOREIGN}/celeba-hq/CelebA-HQ-img/{n}" for n in members],
                         [labels[n][0] for n in members], [labels[n][1] for n in members])
    return options, parts


def test_celeba_hq_reads_ffrs_split_pickles_with_foreign_absolute_paths(tmp_path):
    options, parts = _celeba_splits(tmp_path)
    template = str(tmp_path / "data" / "celeba_Smiling_{split}_{bias_ratio}.pkl")
    splits = datasets.create("celeba-hq", **options, bias_ratio=0.99, split_file=template)
    for ours, theirs in (("train", "train"), ("val", "valid"), ("test", "test")):
        table = splits[ours].table
        assert sorted(table["key"]) == sorted(f"CelebA-HQ-img/{n}" for n in parts[theirs])  # as published
    image = splits["train"].load_image(splits["train"].table["key"].iloc[0])  # remapped onto the root
    assert image.size == (8, 8)
    # used as published: the bias ratio only picks the file, nothing is downsampled again
    assert len(splits["train"]) == 120 and len(splits["val"]) == 40


def test_utk_face_and_spuco_animals_read_them_too(tmp_path):
    utk = build_utk_face(tmp_path)
    files = sorted(p for p in Path(utk["root"]).rglob("*.chip.jpg"))
    genders = [int(p.name.split("_")[1]) for p in files]
    ages = [int(int(p.name.split("_")[0]) <= 5) for p in files]
    for split, sl in (("train", slice(0, 80)), ("valid", slice(80, 100)), ("test", slice(100, None))):
        write_ffr_pickle(tmp_path / "data" / f"utk_face_{split}_0.99.pkl",
                         [f"{FOREIGN}/UTKFace/{p.parent.name}/{p.name}" for p in files[sl]], genders[sl], ages[sl])
    splits = datasets.create("utk-face", **utk, bias_ratio=0.99,
                             split_file=str(tmp_path / "data" / "utk_face_{split}_{bias_ratio}.pkl"))
    assert len(splits["train"]) == 80 and splits["test"].table["key"].iloc[0].startswith("part")

    spuco = build_spuco_animals(tmp_path)
    root = Path(spuco["root"])
    mapping = {}
    for split, spelling in (("train", "train"), ("val", "val"), ("test", "test")):
        paths = sorted(root.glob(f"spuco_*/{split}/*/*/*.jpg"))
        ys = [{"landbirds": 0, "waterbirds": 1, "small_dogs": 2, "big_dogs": 3}[p.parent.parent.name] for p in paths]
        bs = [{"land": 0, "water": 1, "indoor": 2, "outdoor": 3}[p.parent.name] for p in paths]
        path = tmp_path / "data" / f"spuco_animals_{spelling}_0.0.pkl"
        write_ffr_pickle(path, [f"/projectnb/ivc-ml/spuco/{p.relative_to(root)}" for p in paths], ys, bs)
        mapping[split] = str(path)
    splits = datasets.create("spuco-animals", **spuco, split_file=mapping)
    assert set(splits["test"].table["y"]) == {0, 1, 2, 3}
    assert len(splits["val"]) == len(list(root.glob("spuco_*/val/*/*/*.jpg")))


def test_missing_or_unsafe_split_files_are_one_line(tmp_path, capsys):
    options, _ = _celeba_splits(tmp_path)
    template = str(tmp_path / "data" / "celeba_Smiling_{split}_{bias_ratio}.pkl")
    with pytest.raises(FFRError, match=r"celeba_Smiling_train_0\.95\.pkl' does not exist"):
        datasets.create("celeba-hq", **options, bias_ratio=0.95, split_file=template)  # no 0.95 files here
    assert main(["train", "dataset=celeba-hq", f"dataset_options={{root: {options['root']}, bias_ratio: 0.97, "
                 f"split_file: '{template}'}}", "executor=local", "pretrained=null",
                 f"storage_path={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "celeba_Smiling_train_0.97.pkl" in err and "does not exist" in err

    evil = tmp_path / "data" / "celeba_Smiling_test_0.99.pkl"
    evil.write_bytes(pickle.dumps({"filenames": [], "targets": [], "biases": [], "x": Path("/")}))
    with pytest.raises(FFRError, match="holds a pathlib.*object; expected FFR's split format"):
        datasets.create("celeba-hq", **options, bias_ratio=0.99, split_file=template)

    write_ffr_pickle(evil, [f"{FOREIGN}/celeba-hq/CelebA-HQ-img/nope.jpg"], [0], [0])
    with pytest.raises(FFRError, match="'/usr4/.*/nope.jpg' matches no file under the dataset root"):
        datasets.create("celeba-hq", **options, bias_ratio=0.99, split_file=template)
