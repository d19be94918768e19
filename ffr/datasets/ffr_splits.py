"""FFR's published splits: the ``data/*.pkl`` files of mqraitem/From-Fake-to-Real, read as a dataset option.

Each pickle is one split of one dataset at one bias ratio (``celeba_Smiling_train_0.99.pkl``,
``utk_face_valid_0.99.pkl``, ``spuco_animals_test_0.0.pkl``, ...): a dict with ``filenames`` (absolute paths on
the authors' cluster, e.g. ``/usr4/cs505/mqraitem/ivc-ml/datasets/celeba-hq/CelebA-HQ-img/123.jpg``),
``targets`` and ``biases`` (numpy arrays, the same label ids as ffr's readers) and ``real_gen`` (0 real,
1 generated). With bias ratios 0.99 and 0.999 a CelebA-HQ training split keeps 54/79 and 6/8 minority images:
only FFR's own files make numbers comparable with the paper's.

``split_file`` (an option of ``celeba-hq``, ``utk-face`` and ``spuco-animals``) names them: a template with
``{split}`` (FFR spells the validation split ``valid`` for CelebA and UTK-Face and ``val`` for SpuCo; both are
tried) and optionally ``{bias_ratio}`` (the ``bias_ratio`` option, as FFR writes it: ``0.99``), or a mapping
``{train: ..., val: ..., test: ...}`` of paths (local or ``s3://``; ``{bias_ratio}`` works there too: FFR's test
split is the same file at every ratio). Each foreign path is remapped onto the
user's dataset root by the longest tail of it that names a file there (``.../celeba-hq/CelebA-HQ-img/123.jpg``
→ ``CelebA-HQ-img/123.jpg``), from one listing of the root. The splits are used as they are: FFR already
downsampled them, so the bias ratio is not applied again.

Pickles can run code when loaded; these are read with an unpickler that builds nothing but numpy arrays
and plain containers.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ffr.errors import FFRError
from ffr.storage import filesystem

SPELLINGS = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}  # FFR's file names per split
_NUMPY = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers; refuses every other class (a pickle can run code)."""

    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(io.BytesIO(data))
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "numpy" and name in _NUMPY:
            if int(np.__version__.split(".")[0]) >= 2:  # FFR wrote them with numpy 1 (numpy.core)
                module = module.replace("numpy.core", "numpy._core")
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles store an array's bytes
            return super().find_class(module, name)
        raise FFRError(f"split file {self.where!r} holds a {module}.{name} object; expected FFR's split format "
                       "(a dict of filenames, targets, biases and real_gen)")


def read_split_file(path: str) -> dict[str, Any]:
    """One FFR split pickle as a dict; one line for a file that is missing, unreadable or not in the format."""
    fs, inner = filesystem(path)
    if not fs.exists(inner):
        raise FFRError(f"split file {path!r} does not exist; expected one of FFR's data/*.pkl files")
    try:
        data = _ArraysOnly(fs.cat_file(inner), path).load()
    except FFRError:
        raise
    except Exception as e:  # a truncated or foreign file: pickle raises several types
        raise FFRError(f"split file {path!r} cannot be read as a pickle ({type(e).__name__})") from None
    keys = ("filenames", "targets", "biases")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise FFRError(f"split file {path!r} is not in FFR's split format; expected a dict with {', '.join(keys)}"
                       " and real_gen")
    n = len(data["filenames"])
    for key in ("targets", "biases", "real_gen"):
        if key in data and len(data[key]) != n:
            raise FFRError(f"split file {path!r}: {key} has {len(data[key])} entries for {n} filenames")
    return data


def split_paths(split_file: str | Mapping[str, str], bias_ratio: float | None) -> dict[str, list[str]]:
    """split → the candidate paths of its file (the first that exists is read)."""
    ratio = "None" if bias_ratio is None else str(float(bias_ratio))
    if isinstance(split_file, Mapping):
        missing = [s for s in SPELLINGS if s not in split_file]
        if missing or set(split_file) - set(SPELLINGS):
            raise FFRError(f"option 'dataset_options.split_file' = {dict(split_file)!r}; expected the keys train, val "
                           "and test (or one path template with {split})")
        return {split: [str(split_file[split]).replace("{bias_ratio}", ratio)] for split in SPELLINGS}
    if "{split}" not in split_file:
        raise FFRError(f"option 'dataset_options.split_file' = {split_file!r} has no {{split}}; expected a template "
                       "such as data/celeba_Smiling_{split}_{bias_ratio}.pkl, or a mapping train/val/test → path")
    return {split: [split_file.replace("{split}", spelling).replace("{bias_ratio}", ratio) for spelling in spellings]
            for split, spellings in SPELLINGS.items()}


def remap(paths: list[str], present: set[str], where: str) -> list[str]:
    """Foreign absolute paths → keys under the dataset root: the longest tail of each that names a file there.
    Every path must land; the first that does not is named (with how many did not)."""
    keys, missing = [], []
    for path in paths:
        parts = [p for p in str(path).replace("\\", "/").split("/") if p]
        key = next(("/".join(parts[i:]) for i in range(len(parts)) if "/".join(parts[i:]) in present), None)
        (keys if key is not None else missing).append(key if key is not None else path)
    if missing:
        more = f" ({len(missing)} of {len(paths)} files)" if len(missing) > 1 else ""
        raise FFRError(f"{where}: {missing[0]!r} matches no file under the dataset root{more}; expected the "
                       "dataset's own folder layout under root")
    return keys


def ffr_split_table(root, split_file: str | Mapping[str, str], bias_ratio: float | None) -> pd.DataFrame:
    """Rows (key, y, b, split) of the three FFR split files, keys remapped onto ``root`` (a DatasetRoot)."""
    present = set(root.list_files(suffixes=None))
    frames = []
    for split, candidates in split_paths(split_file, bias_ratio).items():
        path = next((c for c in candidates if filesystem(c)[0].exists(filesystem(c)[1])), candidates[0])
        if len(candidates) > 1 and not filesystem(path)[0].exists(filesystem(path)[1]):
            raise FFRError(f"{root.dataset}: split file for {split!r} does not exist: tried "
                           f"{' and '.join(map(repr, candidates))}")
        data = read_split_file(path)
        real_gen = np.asarray(data.get("real_gen", np.zeros(len(data["filenames"]))))
        if (real_gen != 0).any():
            raise FFRError(f"split file {path!r} lists {int((real_gen != 0).sum())} generated images; expected a "
                           "split of real images (real_gen 0)")
        keys = remap(list(data["filenames"]), present, f"{root.dataset}: split file {path!r}")
        frames.append(pd.DataFrame({"key": keys, "y": np.asarray(data["targets"], dtype=np.int64),
                                    "b": np.asarray(data["biases"], dtype=np.int64), "split": split}))
    return pd.concat(frames, ignore_index=True)
