"""Tiny dataset folders in each reader's real layout, written by the tests themselves.

Every image is a small solid-color JPEG/PNG whose color encodes its group (``group_color(y, b)``), so a
test can check that a key really carries the labels the reader gave it. ``FIXTURES`` maps each
registered dataset name to ``builder(tmp_path) -> options`` for ``ffr.datasets.create(name, **options)``;
the registry-walking test in test_datasets_real.py fails for any registered dataset without an entry.

The training helper adds the entries for ``colored-digits`` and ``synthetic`` (their readers live in
ffr/datasets/colored_digits.py and ffr/datasets/synthetic.py) at the bottom of this file.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()

# Group sizes per fixture (y, b) -> count; chosen so bias ratios and the val floor of 10 visibly bite.
# CelebA-HQ: both classes female-majority, as in the real data, so FFR's forced direction has work to do.
CELEBA_COUNTS = {(0, 0): 60, (0, 1): 40, (1, 0): 70, (1, 1): 30}
# UTKFace: (gender, age) → count per age bucket; ages 10 and 60 are dropped by the reader.
UTK_AGES = {0: (22, 35, 50), 1: (1, 3, 5)}  # bias id → ages used
UTK_COUNTS = {(0, 0): 20, (0, 1): 45, (1, 0): 50, (1, 1): 15}
UTK_DROPPED, UTK_MALFORMED = 12, 3
SPUCO_SIZES = {"train": (20, 4), "val": (12, 11), "test": (5, 5)}  # (majority, minority) per group
WATERBIRDS_COUNTS = {
    "train": {(0, 0): 30, (0, 1): 6, (1, 0): 3, (1, 1): 15},
    "val": {(0, 0): 15, (0, 1): 12, (1, 0): 12, (1, 1): 15},
    "test": {(0, 0): 5, (0, 1): 5, (1, 0): 5, (1, 1): 5},
}
# folder: three classes × two biases, explicit splits.
FOLDER_COUNTS = {
    "train": {(0, 0): 20, (0, 1): 5, (1, 0): 4, (1, 1): 18, (2, 0): 16, (2, 1): 6},
    "val": {(0, 0): 12, (0, 1): 11, (1, 0): 11, (1, 1): 12, (2, 0): 12, (2, 1): 11},
    "test": {(0, 0): 3, (0, 1): 3, (1, 0): 3, (1, 1): 3, (2, 0): 3, (2, 1): 3},
}
FOLDER_CLASS_NAMES, FOLDER_BIAS_NAMES = ("cat", "dog", "fox"), ("day", "night")


def group_color(y: int, b: int) -> tuple[int, int, int]:
    """A distinct, JPEG-stable color per (y, b) for up to 4 × 4 groups."""
    return (40 + 60 * int(y), 40 + 60 * int(b), 200 - 30 * int(y) - 20 * int(b))


def nearest_group(image: Image.Image, n_classes: int, n_bias: int) -> tuple[int, int]:
    """The (y, b) whose color is closest to the image's mean color (JPEG shifts colors slightly)."""
    mean = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    pairs = [(y, b) for y in range(n_classes) for b in range(n_bias)]
    return min(pairs, key=lambda p: float(np.sum((mean - np.array(group_color(*p))) ** 2)))


def write_image(path: Path, y: int, b: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), group_color(y, b)).save(buf, format=fmt)
    path.write_bytes(buf.getvalue())


def _scaled(counts: dict, scale: float) -> dict:
    return {g: max(1, int(round(n * scale))) for g, n in counts.items()}


def build_celeba_hq(tmp_path: Path, scale: float = 1.0) -> dict:
    root = tmp_path / "celeba_hq"
    rng = np.random.default_rng(0)
    target, bias = CELEBA_ATTRIBUTES.index("Smiling"), CELEBA_ATTRIBUTES.index("Male")
    rows, i = [], 0
    for (y, b), n in _scaled(CELEBA_COUNTS, scale).items():
        for _ in range(n):
            values = rng.choice([-1, 1], size=len(CELEBA_ATTRIBUTES))
            values[target], values[bias] = (1 if y else -1), (1 if b else -1)
            rows.append(f"{i}.jpg " + " ".join(str(v) for v in values))
            write_image(root / "CelebA-HQ-img" / f"{i}.jpg", y, b)
            i += 1
    text = f"{len(rows)}\n" + " ".join(CELEBA_ATTRIBUTES) + "\n" + "\n".join(rows) + "\n"
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text(text)
    return {"root": str(root)}


def build_utk_face(tmp_path: Path, scale: float = 1.0) -> dict:
    root = tmp_path / "utk_face"
    i = 0
    for (gender, b), n in _scaled(UTK_COUNTS, scale).items():
        for k in range(n):
            age = UTK_AGES[b][k % len(UTK_AGES[b])]
            # the aligned release's double suffix, in a sub-folder as in the in-the-wild release
            write_image(root / f"part{k % 2 + 1}" / f"{age}_{gender}_{k % 5}_2017010{i:08d}.jpg.chip.jpg", gender, b)
            i += 1
    for k in range(max(1, int(UTK_DROPPED * scale))):
        age = (10, 60)[k % 2]
        write_image(root / f"{age}_{k % 2}_1_2017020{k:08d}.jpg", k % 2, 0)
    for k in range(UTK_MALFORMED):
        write_image(root / f"broken_name_{k}.jpg", 0, 0)
    return {"root": str(root)}


def build_spuco_animals(tmp_path: Path, scale: float = 1.0) -> dict:
    root = tmp_path / "spuco_animals"
    layout = (("spuco_birds", ("landbirds", "waterbirds"), ("land", "water"), 0),
              ("spuco_dogs", ("small_dogs", "big_dogs"), ("indoor", "outdoor"), 2))
    for top, classes, backgrounds, offset in layout:
        for split, (major, minor) in SPUCO_SIZES.items():
            for ci, class_dir in enumerate(classes):
                for bi, background_dir in enumerate(backgrounds):
                    n = max(1, int(round((major if ci == bi else minor) * scale)))
                    for k in range(n):
                        write_image(root / top / split / class_dir / background_dir / f"{k:04d}.jpg",
                                    offset + ci, offset + bi)
    return {"root": str(root)}


def build_waterbirds(tmp_path: Path, scale: float = 1.0) -> dict:
    root = tmp_path / "waterbirds"
    rows, i = [], 0
    for split_id, split in enumerate(("train", "val", "test")):
        for (y, b), n in _scaled(WATERBIRDS_COUNTS[split], scale).items():
            for _ in range(n):
                name = f"{y:03d}.Bird_{y}/Bird_{y}_{i:04d}.jpg"
                write_image(root / name, y, b)
                rows.append({"img_id": i, "img_filename": name, "y": y, "split": split_id, "place": b,
                             "place_filename": f"/x/{b}/scene.jpg"})
                i += 1
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return {"root": str(root)}


def build_folder(tmp_path: Path, scale: float = 1.0, fmt: str = "csv", with_split: bool = True) -> dict:
    root = tmp_path / f"folder_{fmt}"
    rows, i = [], 0
    for split in ("train", "val", "test"):
        for (y, b), n in _scaled(FOLDER_COUNTS[split], scale).items():
            for _ in range(n):
                path = f"images/{FOLDER_CLASS_NAMES[y]}/{i:04d}.png"
                write_image(root / path, y, b)
                rows.append({"path": path, "y": y, "b": b, "split": split, "class_name": FOLDER_CLASS_NAMES[y],
                             "bias_name": FOLDER_BIAS_NAMES[b]})
                i += 1
    table = pd.DataFrame(rows)
    if not with_split:
        table = table.drop(columns="split")
    name = f"labels.{fmt}"
    if fmt == "parquet":
        table.to_parquet(root / name, index=False)
    else:
        table.to_csv(root / name, index=False)
    return {"root": str(root), "metadata": name}


def build_synthetic(tmp_path: Path, per_group: int = 10) -> dict:
    """A generation output of the colored-digits recipe (procedural backend, in-process), split 60/20/20."""
    import pipelines

    out = str(tmp_path / "synthetic")
    pipelines.generate({"recipe": "colored-digits", "output": out, "seed": 0, "budget": {"per_group": per_group},
                        "shard_size": 4 * per_group, "runner": "local", "progress": False})
    return {"root": out, "fractions": (0.6, 0.2, 0.2)}


def build_d3s_shift(tmp_path: Path) -> dict:
    """The embedded D3S (digits on 10 procedural backgrounds, in-process) and one identity-mapped split view."""
    import json

    import pipelines
    from ffr.d3s.embedded import generation_config, write_foregrounds
    from ffr.datasets.d3s_splits import write_splits

    fg = write_foregrounds(tmp_path, per_class=1, size=32)
    out = str(tmp_path / "d3s")
    pipelines.generate(generation_config(out, fg, per_group=1, templates=1, size=32, runner="local"))
    mapping = tmp_path / "identity.json"
    mapping.write_text(json.dumps({"names": [str(i) for i in range(10)], "classes": {str(i): i for i in range(10)}}))
    write_splits(out, seed=0, mapping=str(mapping), name="id")
    return {"root": out, "split": "id", "held_out_fraction": 0.5}  # 10 correlated images: keep val non-empty


def build_d3s(tmp_path: Path) -> dict:
    """The embedded D3S (digits on 10 procedural backgrounds, in-process): a train output and a val output."""
    import pipelines
    from ffr.d3s.embedded import generation_config, write_foregrounds

    fg = write_foregrounds(tmp_path, per_class=1, size=32)
    outs = {}
    for name, seed in (("root", 0), ("val_root", 1)):
        outs[name] = str(tmp_path / f"d3s-{name}")
        pipelines.generate(generation_config(outs[name], fg, per_group=1, templates=1, size=32, runner="local",
                                             seed=seed))
    return outs


def build_class_folder(tmp_path: Path, per_class: int = 4) -> dict:
    """An ImageNet-layout folder: root/{wnid}/*.png for three classes (color = class), split 50/25/25."""
    root = tmp_path / "imagenet" / "train"
    for c, wnid in enumerate(("n01440764", "n01443537", "n01484850")):
        (root / wnid).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.new("RGB", (8, 8), group_color(c, 0)).save(root / wnid / f"{wnid}_{k}.png")
    return {"root": str(root), "fractions": (0.5, 0.25, 0.25)}


FIXTURES: dict[str, Callable[[Path], dict]] = {
    "celeba-hq": build_celeba_hq,
    "utk-face": build_utk_face,
    "spuco-animals": build_spuco_animals,
    "waterbirds": build_waterbirds,
    "folder": build_folder,
    # "colored-digits" and "synthetic": added by the training helper (readers in ffr/datasets/).
    "colored-digits": lambda tmp_path: {"bias_ratio": 0.95},  # embedded data: no files
    "synthetic": lambda tmp_path: build_synthetic(tmp_path),
    "d3s-shift": build_d3s_shift,
    "d3s": build_d3s,
    "class-folder": build_class_folder,
}
