"""The manifest: one Parquet row per image to generate, split into shards; written once per output root.

A row holds everything needed to regenerate its image bit-identically: a unique ``id``, the recipe,
class/bias indices and names, group, prompt, negative prompt, a ``seed`` derived from (run seed, id) by a
stable hash, the generator settings and the guide references (img2img). Rows are interleaved across
groups (k-th image of every group, then the (k+1)-th...) so any prefix of shards — a run stopped early —
is still balanced. Layout under the output root::

    manifest/shard-00000.parquet ...   the rows of each shard
    manifest/manifest.json            written last: n_rows, n_shards, fingerprint (resume safety check)
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ffr.balance import synthetic_counts
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.shards import shard_name
from ffr.storage import filesystem, join, write_atomic
from pipelines.config import BudgetConfig, GeneratorConfig
from pipelines.recipes.base import Recipe

MANIFEST_DIR = "manifest"
SEED_BITS = 63
GUIDE_COLUMNS = ("guide_foreground", "guide_background")


def row_seed(run_seed: int, sample_id: str) -> int:
    """A 63-bit seed from (run seed, id); stable across processes and Python versions (unlike hash())."""
    digest = hashlib.blake2b(f"{int(run_seed)}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def sample_id(group: int, k: int) -> str:
    """'g0003-000012' — the 12th image of group 3. No dots: WebDataset splits keys at the first dot."""
    return f"g{group:04d}-{k:06d}"


def _parse_group_key(key: Any, spec: GroupSpec, where: str) -> tuple[int, int]:
    parts = key if isinstance(key, (list, tuple)) else str(key).replace("/", ",").split(",")
    try:
        y, b = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise FFRError(f"{where} key {key!r} is not a group 'y,b' (e.g. '0,1')") from None
    if not (0 <= y < spec.n_classes and 0 <= b < spec.n_bias):
        raise FFRError(f"{where} key {key!r} is outside {spec.n_classes} classes × {spec.n_bias} biases")
    return y, b


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FFRError(f"{where} = {value!r}; expected a non-negative integer")
    return value


def group_budgets(spec: GroupSpec, budget: BudgetConfig) -> dict[tuple[int, int], int]:
    """Images per (y, b): an explicit number (per group or one for all) or FFR's synthetic_counts rule."""
    if (budget.per_group is None) == (budget.real_counts is None):
        raise FFRError("config section 'budget' needs exactly one of 'per_group' (images per group) or "
                       "'real_counts' (the real set's {'y,b': n}, with 'mode')")
    groups = [(y, b) for y in range(spec.n_classes) for b in range(spec.n_bias)]
    if budget.real_counts is not None:
        if not isinstance(budget.real_counts, dict) or not budget.real_counts:
            raise FFRError(f"budget.real_counts = {budget.real_counts!r}; expected a mapping {{'y,b': count}}")
        real = {_parse_group_key(k, spec, "budget.real_counts"): _count(v, f"budget.real_counts[{k!r}]")
                for k, v in budget.real_counts.items()}
        return {g: synthetic_counts(real, budget.mode).get(g, 0) for g in groups}
    if isinstance(budget.per_group, dict):
        explicit = {_parse_group_key(k, spec, "budget.per_group"): _count(v, f"budget.per_group[{k!r}]")
                    for k, v in budget.per_group.items()}
        return {g: explicit.get(g, 0) for g in groups}
    n = _count(budget.per_group, "budget.per_group")
    return {g: n for g in groups}


def build_manifest(recipe: Recipe, budgets: dict[tuple[int, int], int], run_seed: int, shard_size: int,
                   generator: GeneratorConfig | None = None) -> pd.DataFrame:
    """All rows of a run, interleaved across groups, with a ``shard`` column."""
    spec = recipe.spec()
    settings = recipe.generator_settings()
    overrides = {k: v for k, v in vars(generator or GeneratorConfig()).items() if v is not None}
    negative = overrides.pop("negative_prompt", None)
    settings.update(overrides)
    if settings["mode"] == "img2img" and not getattr(recipe, "guided", False):
        raise FFRError(f"generator.mode 'img2img' needs guide images, and recipe {recipe.name!r} has none "
                       "configured (d3s-*: set recipe.options.foreground_root and background_root)")
    budgets = recipe.assign_budgets(budgets, run_seed)
    order = sorted(((k, g) for g, n in budgets.items() for k in range(n)), key=lambda t: (t[0], t[1]))
    rows = []
    for k, (y, b) in order:
        g = spec.group_id(y, b)
        sid = sample_id(g, k)
        seed = row_seed(run_seed, sid)
        fields = recipe.row(y, b, np.random.default_rng([seed, 1]))  # prompt choices: a stream of their own
        row = {"id": sid, "recipe": recipe.name, "y": y, "b": b, "group": g,
               "class_name": spec.class_names[y], "bias_name": spec.bias_names[b], "group_name": spec.group_name(g),
               "prompt": fields.pop("prompt"), "negative_prompt": fields.pop("negative_prompt", "") or "",
               "seed": seed, **settings, "guide_foreground": "", "guide_background": "", **fields}
        if negative is not None:
            row["negative_prompt"] = negative
        rows.append(row)
    if not rows:
        raise FFRError("the budget asks for 0 images in every group; expected at least one image")
    df = pd.DataFrame(rows)
    df["shard"] = np.arange(len(df)) // shard_size
    return df


def fingerprint(manifest: pd.DataFrame, extra: dict[str, Any]) -> str:
    """What a finished shard depends on: every manifest row plus the backend/filter/format settings."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(manifest.astype(str), index=False).values.tobytes())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def read_manifest_info(root: str) -> dict | None:
    fs, base = filesystem(root)
    path = join(base, MANIFEST_DIR, "manifest.json")
    return json.loads(fs.cat_file(path)) if fs.exists(path) else None


def write_manifest(root: str, manifest: pd.DataFrame, print_: str) -> dict:
    """Write the manifest shards (once). A rerun must bring the same fingerprint, else nothing is touched."""
    info = read_manifest_info(root)
    n_shards = int(manifest["shard"].max()) + 1
    if info is not None:
        if info["fingerprint"] != print_:
            raise FFRError(f"output {root!r} already holds a different run (its manifest or generator settings "
                           "differ from this config); choose a new output or remove the old one")
        return info
    fs, base = filesystem(root)
    fs.makedirs(join(base, MANIFEST_DIR), exist_ok=True)
    for shard, part in manifest.groupby("shard", sort=True):
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False), sink)
        write_atomic(fs, join(base, MANIFEST_DIR, f"{shard_name(int(shard))}.parquet"), sink.getvalue())
    info = {"n_rows": int(len(manifest)), "n_shards": n_shards, "fingerprint": print_,
            "recipe": str(manifest["recipe"].iloc[0])}
    write_atomic(fs, join(base, MANIFEST_DIR, "manifest.json"), json.dumps(info, indent=2).encode())
    return info


def read_manifest_shard(root: str, shard: int) -> list[dict]:
    """The rows of one shard, as plain Python dicts (lists instead of numpy arrays)."""
    fs, base = filesystem(root)
    with fs.open(join(base, MANIFEST_DIR, f"{shard_name(shard)}.parquet"), "rb") as f:
        return pq.read_table(f).to_pylist()


def read_manifest(root: str) -> pd.DataFrame:
    info = read_manifest_info(root)
    if info is None:
        raise FFRError(f"{root!r} has no complete manifest ({MANIFEST_DIR}/manifest.json is missing)")
    return pd.concat([pd.DataFrame(read_manifest_shard(root, i)) for i in range(info["n_shards"])], ignore_index=True)
