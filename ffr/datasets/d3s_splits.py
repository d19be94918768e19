"""Correlated / anti-correlated shift splits of a D3S output (D3S's spurious-correlation experiment).

Classes map to super-classes through a mapping file (default: ImageNet-9 of "Noise or Signal", shipped as
``ffr/datasets/data/imagenet9.json``: {names, classes: {class index: super-class index}}); classes outside every
super-class are left out. Each super-class gets one background (``assignment[s]`` = its background index): given
explicitly (D3S's committed ``label_permutation.pth`` is ``2,8,4,9,1,6,7,3,0``), or drawn from a seed — by ffr's
own generator (``draw: ffr``, the default) or by D3S's ``np.random.seed(seed); np.random.choice(10, 9,
replace=False)`` (``draw: d3s``; its seed 0 gives D3S's committed permutation):

- ``correlated`` keeps only images of (super-class, its assigned background);
- ``anti-correlated`` keeps images whose background is neither the super-class's assigned one nor an unused
  one (with 9 super-classes on 10 backgrounds, one background is assigned to nobody and is left out of both).

A split is a Parquet *view*: one row per image (id, shard, image_key, class index, super-class, background),
pointing into the shards; no image is copied. Views live under ``<output>/splits/<name>/`` with
``split.json`` (seed, mapping, assignment) beside them. Plain pandas, no Ray. The format lives in the data layer
(writer and reader in one module): ``ffr d3s splits`` writes it, the ``d3s-shift`` reader and D3S evaluation read it.
"""

from __future__ import annotations

import io
import json
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from ffr.errors import FFRError
from ffr.shards import read_groups, read_metadata
from ffr.storage import filesystem, join, write_atomic

SPLIT_NAMES = ("correlated", "anti-correlated")
IMAGENET9 = "imagenet9"
DRAWS = ("ffr", "d3s")
D3S_ASSIGNMENT = (2, 8, 4, 9, 1, 6, 7, 3, 0)  # D3S's label_permutation.pth (= draw d3s, seed 0)
VIEW_COLUMNS = ("id", "shard", "image_key", "class_index", "superclass", "superclass_name", "b", "bias_name")


def load_mapping(source: str = IMAGENET9) -> dict[str, Any]:
    """{names: [...], classes: {int class index: int super-class}} from 'imagenet9' or a JSON path/URI."""
    if source == IMAGENET9:
        raw = json.loads(resources.files("ffr.datasets").joinpath("data", "imagenet9.json").read_text())
    else:
        fs, inner = filesystem(source)
        if not fs.exists(inner):
            raise FFRError(f"super-class mapping {source!r} does not exist; expected JSON "
                           "{'names': [...], 'classes': {class index: super-class index}}")
        try:
            raw = json.loads(fs.cat_file(inner))
        except json.JSONDecodeError as e:
            raise FFRError(f"super-class mapping {source!r} is not valid JSON: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("names"), list) or not isinstance(raw.get("classes"), dict):
        raise FFRError(f"super-class mapping {source!r} must hold 'names' (a list) and 'classes' (a mapping)")
    names = [str(n) for n in raw["names"]]
    classes = {int(k): int(v) for k, v in raw["classes"].items()}
    bad = [v for v in classes.values() if not 0 <= v < len(names)]
    if bad:
        raise FFRError(f"super-class mapping {source!r} maps to super-class {bad[0]}; expected 0..{len(names) - 1}")
    return {"names": names, "classes": classes, "source": source}


def assign_backgrounds(n_superclasses: int, n_backgrounds: int, seed: int, draw: str = "ffr") -> np.ndarray:
    """Background index assigned to each super-class, drawn from ``seed``: ffr's generator (the first entries of
    a seeded permutation) or D3S's (legacy NumPy global seeding, as ``create_background_permutation.py``)."""
    if n_superclasses > n_backgrounds:
        raise FFRError(f"{n_superclasses} super-classes need as many backgrounds, but there are {n_backgrounds}")
    if draw == "d3s":
        return np.random.RandomState(int(seed)).choice(n_backgrounds, size=n_superclasses, replace=False)
    if draw != "ffr":
        raise FFRError(f"draw {draw!r} is unknown; expected one of {', '.join(DRAWS)}")
    return np.random.default_rng([int(seed), 4]).permutation(n_backgrounds)[:n_superclasses]


def parse_assignment(value: str | list[int] | tuple[int, ...], n_superclasses: int, n_backgrounds: int
                     ) -> np.ndarray:
    """An explicit assignment ("2,8,4,..." or a list): one distinct background index per super-class."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    try:
        assigned = np.asarray([int(v) for v in items], dtype=np.int64)
    except (TypeError, ValueError):
        raise FFRError(f"assignment {value!r}: expected {n_superclasses} comma-separated background indices") from None
    if len(assigned) != n_superclasses:
        raise FFRError(f"assignment {value!r} has {len(assigned)} entries; the mapping has {n_superclasses} "
                       "super-classes (one background index each)")
    bad = [int(a) for a in assigned if not 0 <= a < n_backgrounds]
    if bad:
        raise FFRError(f"assignment {value!r} names background {bad[0]}; expected indices 0..{n_backgrounds - 1}")
    if len(set(assigned.tolist())) != len(assigned):
        raise FFRError(f"assignment {value!r} repeats a background; expected distinct indices")
    return assigned


def held_out(ids, seed: int, fraction: float) -> np.ndarray:
    """Which of ``ids`` fall in the held-out share ``fraction`` (seeded): a pure function of (seed, id), so the
    same image is held out whichever subset or order it is read in (a training reader and a later frozen-feature
    experiment agree without sharing a file)."""
    import hashlib

    def unit(i: str) -> float:
        digest = hashlib.blake2b(f"{int(seed)}:{i}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    return np.fromiter((unit(str(i)) < fraction for i in ids), dtype=bool, count=len(ids))


def _class_index(meta: pd.DataFrame) -> pd.Series:
    """The class table index of each row (D3S rows carry it; other outputs use y)."""
    return meta["class_index"] if "class_index" in meta.columns else meta["y"]


def build_views(meta: pd.DataFrame, bias_names: list[str], mapping: dict[str, Any], seed: int,
                assignment: str | list[int] | None = None, draw: str = "ffr"
                ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The two views over accepted shard rows, and their record (assignment by name and by index)."""
    if assignment is not None:
        assigned = parse_assignment(assignment, len(mapping["names"]), len(bias_names))
    else:
        assigned = assign_backgrounds(len(mapping["names"]), len(bias_names), seed, draw)
    unused = sorted(set(range(len(bias_names))) - set(int(a) for a in assigned))
    cls = _class_index(meta).astype(np.int64)
    sup = cls.map(mapping["classes"])
    kept = meta[sup.notna()].copy()
    kept["class_index"] = cls[sup.notna()].to_numpy()
    kept["superclass"] = sup[sup.notna()].astype(np.int64).to_numpy()
    kept["superclass_name"] = [mapping["names"][s] for s in kept["superclass"]]
    kept["b"] = kept["b"].astype(np.int64)
    kept["bias_name"] = [bias_names[b] for b in kept["b"]]
    own = assigned[kept["superclass"].to_numpy()]
    b = kept["b"].to_numpy()
    views = {"correlated": kept[b == own], "anti-correlated": kept[(b != own) & ~np.isin(b, unused)]}
    views = {k: v.loc[:, list(VIEW_COLUMNS)].sort_values("id").reset_index(drop=True) for k, v in views.items()}
    record = {"seed": None if assignment is not None else int(seed),
              "draw": "explicit" if assignment is not None else draw, "assignment": [int(a) for a in assigned],
              "mapping": mapping["source"], "superclasses": mapping["names"],
              "assigned_background": {mapping["names"][s]: bias_names[int(a)] for s, a in enumerate(assigned)},
              "unused_backgrounds": [bias_names[u] for u in unused],
              "rows": {k: int(len(v)) for k, v in views.items()}}
    return views, record


def split_dir(root: str, name: str) -> str:
    return join(root, "splits", name)


def default_name(mapping: str, seed: int, assignment: str | list[int] | None = None, draw: str = "ffr") -> str:
    """``imagenet9-seed0``; ``imagenet9-d3s-seed0`` for D3S's draw; ``imagenet9-2-8-4-9-1-6-7-3-0`` for an
    explicit assignment."""
    prefix = "imagenet9" if mapping == IMAGENET9 else "custom"
    if assignment is not None:
        items = assignment.split(",") if isinstance(assignment, str) else assignment
        return f"{prefix}-{'-'.join(str(int(str(v).strip())) for v in items)}"
    return f"{prefix}-{'d3s-' if draw == 'd3s' else ''}seed{seed}"


def write_splits(root: str, seed: int = 0, mapping: str = IMAGENET9, name: str | None = None,
                 review: str | None = None, assignment: str | list[int] | None = None,
                 draw: str = "ffr") -> dict[str, Any]:
    """Build and write both views for the output ``root``; returns the record (also ``split.json``).
    ``assignment`` (one background index per super-class) replaces the seeded ``draw``."""
    meta = read_metadata(root)
    if review == "accepted":
        from ffr.datasets.reviewed import accepted_ids  # the review export; imported only when asked

        meta = meta[meta["id"].astype(str).isin(accepted_ids(root))]
    elif review is not None:
        raise FFRError(f"review = {review!r}; expected 'accepted' or null")
    views, record = build_views(meta, list(read_groups(root).bias_names), load_mapping(mapping), seed, assignment,
                                draw)
    if not len(views["correlated"]):
        raise FFRError(f"no image of {root!r} falls in a super-class of mapping {mapping!r}; expected class "
                       "indices the mapping names (ImageNet-9 covers 370 ImageNet classes)")
    if assignment is None and draw not in DRAWS:
        raise FFRError(f"draw {draw!r} is unknown; expected one of {', '.join(DRAWS)}")
    name = name or default_name(mapping, seed, assignment, draw)
    record.update(name=name, review=review)
    fs, base = filesystem(split_dir(root, name))
    fs.makedirs(base, exist_ok=True)
    for split, view in views.items():
        sink = io.BytesIO()
        view.to_parquet(sink, index=False)
        write_atomic(fs, join(base, f"{split}.parquet"), sink.getvalue())
    write_atomic(fs, join(base, "split.json"), json.dumps(record, indent=2).encode())
    return record


def read_view(root: str, name: str, split: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One view and its record."""
    if split not in SPLIT_NAMES:
        raise FFRError(f"split {split!r}; expected one of {SPLIT_NAMES}")
    fs, base = filesystem(split_dir(root, name))
    if not fs.exists(join(base, "split.json")):
        raise FFRError(f"{root!r} has no split view {name!r} (run 'ffr d3s splits' first)")
    with fs.open(join(base, f"{split}.parquet"), "rb") as f:
        view = pd.read_parquet(f)
    return view, json.loads(fs.cat_file(join(base, "split.json")))
