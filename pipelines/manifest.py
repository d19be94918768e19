"""The manifest: one Parquet row per image to generate, split into shards; written once per output root.

A row holds everything needed to regenerate its image bit-identically: a unique ``id``, the recipe,
class/bias indices and names, group, prompt, negative prompt, a ``seed`` derived from (run seed, id) by a
stable hash, the generator settings and the guide references (img2img). Rows are interleaved across
groups (k-th image of every group, then the (k+1)-th...) so any prefix of shards — a run stopped early —
is still balanced. The manifest grows in rounds (pipelines/budget.py): each round appends shards with new
indices and the next ids of each group; earlier shards are never rewritten. Layout under the output root::

    manifest/shard-00000.parquet ...   the rows of each shard
    manifest/manifest.json            written after each round's shards: n_rows, n_shards, rounds, targets
                                      and planned rows per group, and the config record (``identity``)
                                      that a rerun must match (pipelines.config.run_identity)
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

from ffr.errors import FFRError
from ffr.options import group_key
from ffr.shards import shard_name
from ffr.storage import ensure_dir, filesystem, join, write_atomic
from pipelines.config import MUTABLE_KEYS, GeneratorConfig, identity_diff, legacy_identity
from pipelines.recipes.base import Recipe

MANIFEST_DIR = "manifest"
FORMAT = 2  # 2: rounds of rows (budgets of accepted images) and the config record that guards an output
SEED_BITS = 63
GUIDE_COLUMNS = ("guide_foreground", "guide_background")


def row_seed(run_seed: int, sample_id: str) -> int:
    """A 63-bit seed from (run seed, id); stable across processes and Python versions (unlike hash())."""
    digest = hashlib.blake2b(f"{int(run_seed)}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def sample_id(group: int, k: int) -> str:
    """'g0003-000012' — the 12th image of group 3. No dots: WebDataset splits keys at the first dot."""
    return f"g{group:04d}-{k:06d}"


def effective_generator(recipe: Recipe, generator: GeneratorConfig | None = None) -> tuple[dict[str, Any], str | None]:
    """(the recipe's generator settings with the config's non-None overrides, the config's negative prompt)."""
    overrides = {k: v for k, v in vars(generator or GeneratorConfig()).items() if v is not None}
    negative = overrides.pop("negative_prompt", None)
    return {**recipe.generator_settings(), **overrides}, negative


def group_adapters(value: Any, spec) -> dict[int, str] | None:
    """``generator.adapter`` as {group id: adapter names} when it is a mapping by group (None otherwise); every
    group needs a key of its own or a ``default`` one."""
    if not isinstance(value, dict):
        if value is not None and not isinstance(value, str):
            raise FFRError(f"config key 'generator.adapter' = {value!r}; expected adapter names or a mapping "
                           "{\"y,b\": names, default: names}")
        return None
    default = value.get("default")
    by_group = {spec.group_id(*group_key(k, "generator.adapter key", spec.n_classes, spec.n_bias)): v
                for k, v in value.items() if k != "default"}
    out = {}
    for g in range(spec.n_groups):
        chosen = by_group.get(g, default)
        if not isinstance(chosen, str):
            raise FFRError(f"generator.adapter names no adapter for group {spec.group_name(g)!r} "
                           f"({','.join(map(str, spec.decode(g)[:2]))}); expected a key for it or a 'default' key "
                           "('' for the base model)")
        out[g] = chosen
    return out


def check_generator(recipe: Recipe, generator: GeneratorConfig | None) -> tuple[dict[str, Any], str | None]:
    """:func:`effective_generator`, refusing img2img for a recipe without guide images."""
    settings, negative = effective_generator(recipe, generator)
    group_adapters(settings.get("adapter"), recipe.spec())
    options = getattr(recipe, "options", None)
    if negative is not None and "negative_prompt" in getattr(options, "model_fields_set", ()):
        raise FFRError("config keys 'generator.negative_prompt' and 'recipe.options.negative_prompt' are both set; "
                       "expected one of them (the recipe's is its default, the generator's replaces it)")
    if settings["mode"] == "img2img" and not getattr(recipe, "guided", False):
        raise FFRError(f"generator.mode 'img2img' needs guide images, and recipe {recipe.name!r} has none "
                       "configured (d3s-*: set recipe.options.foreground_root and background_root)")
    return settings, negative


def build_manifest(recipe: Recipe, budgets: dict[tuple[int, int], int], run_seed: int, shard_size: int,
                   generator: GeneratorConfig | None = None, start: dict[int, int] | None = None,
                   first_shard: int = 0) -> pd.DataFrame:
    """Rows for ``budgets[(y, b)]`` more images per group, interleaved across groups, with a ``shard`` column.

    Group g's rows continue at k = ``start[g]`` (0 for a new output), so an extra round appends the next ids;
    shards are numbered from ``first_shard``. Empty budgets give an empty frame.
    """
    spec = recipe.spec()
    settings, negative = check_generator(recipe, generator)
    per_group = group_adapters(settings.get("adapter"), spec)
    if per_group is not None:
        del settings["adapter"]
    start = start or {}
    # (position within this round, group): the i-th new image of every group, then the (i+1)-th...
    order = sorted((i, y, b) for (y, b), n in budgets.items() for i in range(n))
    rows = []
    for i, y, b in order:
        g = spec.group_id(y, b)
        sid = sample_id(g, start.get(g, 0) + i)
        seed = row_seed(run_seed, sid)
        fields = recipe.row(y, b, np.random.default_rng([seed, 1]))  # prompt choices: a stream of their own
        row = {"id": sid, "recipe": recipe.name, "y": y, "b": b, "group": g,
               "class_name": spec.class_names[y], "bias_name": spec.bias_names[b], "group_name": spec.group_name(g),
               "prompt": fields.pop("prompt"), "negative_prompt": fields.pop("negative_prompt", "") or "",
               "seed": seed, **settings, "guide_foreground": "", "guide_background": "", **fields}
        if negative is not None:
            row["negative_prompt"] = negative
        if per_group is not None:
            row["adapter"] = per_group[g]
        rows.append(row)
    df = pd.DataFrame(rows)
    df["shard"] = first_shard + np.arange(len(df), dtype=np.int64) // shard_size
    return df


def read_manifest_info(root: str) -> dict | None:
    fs, base = filesystem(root)
    path = join(base, MANIFEST_DIR, "manifest.json")
    if not fs.exists(path):
        return None
    info = json.loads(fs.cat_file(path))
    if "identity" in info:
        info["identity"] = legacy_identity(info["identity"])
    return info


def new_info(recipe: str, identity: dict[str, Any]) -> dict[str, Any]:
    """The manifest record of an output before its first round: nothing planned yet."""
    return {"format": FORMAT, "recipe": recipe, "identity": identity, "n_rows": 0, "n_shards": 0, "targets": {},
            "planned": {}, "rounds": []}


def check_compatible(root: str, info: dict[str, Any], identity: dict[str, Any], targets: dict[int, int],
                     names: dict[int, str]) -> None:
    """Refuse, in one line and before anything is written, a config that would change existing images."""
    if info.get("format") != FORMAT:
        raise FFRError(f"output {root!r} was written by an older ffr (no config record in its manifest); "
                       "generate into a new output")
    diff = identity_diff(info["identity"], identity)
    if diff:
        mutable = ", ".join(k + ".*" if k == "ray" else k for k in MUTABLE_KEYS[2:])
        raise FFRError(f"output {root!r} holds a run with other settings ({'; '.join(diff)}); only budget.* "
                       f"(a larger budget extends the output) and {mutable} may change — "
                       "choose a new output for other settings")
    for g, old in sorted((int(k), v) for k, v in info["targets"].items()):
        if targets.get(g, 0) < old:
            raise FFRError(f"output {root!r} targets {old} accepted images for group {names.get(g, g)!r} and this "
                           f"budget asks for {targets.get(g, 0)}; an output only grows (variants draw their own "
                           "counts from it), so keep the budget or choose a new output")


def append_round(root: str, info: dict[str, Any], manifest: pd.DataFrame) -> dict[str, Any]:
    """Write one round's manifest shards, then the updated manifest.json (last, atomically); returns it.

    Shards of earlier rounds are never rewritten: a round only adds shard files with new indices.
    """
    fs, base = filesystem(root)
    ensure_dir(fs, join(base, MANIFEST_DIR))
    for shard, part in manifest.groupby("shard", sort=True):
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False), sink)
        write_atomic(fs, join(base, MANIFEST_DIR, f"{shard_name(int(shard))}.parquet"), sink.getvalue())
    planned = {int(k): v for k, v in info["planned"].items()}
    for g, n in manifest.groupby("group").size().items():
        planned[int(g)] = planned.get(int(g), 0) + int(n)
    n_shards = int(manifest["shard"].max()) + 1
    info = {**info, "n_rows": info["n_rows"] + len(manifest), "n_shards": n_shards,
            "planned": {str(g): n for g, n in sorted(planned.items())},
            "rounds": [*info["rounds"], {"first_shard": info["n_shards"], "n_shards": n_shards - info["n_shards"],
                                         "n_rows": int(len(manifest))}]}
    write_info(root, info)
    return info


def write_info(root: str, info: dict[str, Any]) -> None:
    fs, base = filesystem(root)
    ensure_dir(fs, join(base, MANIFEST_DIR))
    write_atomic(fs, join(base, MANIFEST_DIR, "manifest.json"), json.dumps(info, indent=2).encode())


def read_manifest_shard(root: str, shard: int) -> list[dict]:
    """The rows of one shard, as plain Python dicts (lists instead of numpy arrays)."""
    fs, base = filesystem(root)
    with fs.open(join(base, MANIFEST_DIR, f"{shard_name(shard)}.parquet"), "rb") as f:
        return pq.read_table(f).to_pylist()

