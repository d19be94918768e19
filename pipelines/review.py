"""What people look at before training: a contact sheet PNG per group and ``summary.json``.

Contact sheets read back the first accepted images of each group from the finished shards (the same
bytes training will read), so a sheet shows what is on storage, not what a worker meant to write.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile
from collections import Counter, defaultdict
from typing import Any

from PIL import Image, ImageDraw

from ffr.groups import GroupSpec
from ffr.shards import SHARD_DIR, complete_shards, read_metadata, read_stats, shard_name
from ffr.storage import ensure_dir, filesystem, join, write_atomic

SHEET_DIR = "contact_sheets"
TILE = 128


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def _read_members(root: str, shard: int, keys: set[str]) -> dict[str, bytes]:
    fs, base = filesystem(root)
    out: dict[str, bytes] = {}
    with fs.open(join(base, SHARD_DIR, f"{shard_name(shard)}.tar"), "rb") as f, tarfile.open(fileobj=f) as tar:
        for info in tar:
            if info.name in keys:
                out[info.name] = tar.extractfile(info).read()
                if len(out) == len(keys):
                    break
    return out


def contact_sheets(root: str, spec: GroupSpec, per_group: int = 16, max_groups: int = 200) -> list[str]:
    """Write one grid PNG per group (the first ``max_groups`` with accepted images); returns their paths."""
    meta = read_metadata(root, accepted_only=True).sort_values("id")
    meta = meta[meta["group"].isin(sorted(meta["group"].unique())[:max_groups])]
    picked = meta.groupby("group", sort=True).head(per_group)
    images: dict[str, bytes] = {}
    for shard, part in picked.groupby("shard"):
        images.update(_read_members(root, int(shard), set(part["image_key"])))
    fs, base = filesystem(root)
    ensure_dir(fs, join(base, SHEET_DIR))
    written = []
    for g, part in picked.groupby("group", sort=True):
        cols = math.ceil(math.sqrt(len(part)))
        rows = math.ceil(len(part) / cols)
        sheet = Image.new("RGB", (cols * TILE, rows * TILE + 20), (255, 255, 255))
        for i, key in enumerate(part["image_key"]):
            tile = Image.open(io.BytesIO(images[key])).convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST)
            sheet.paste(tile, ((i % cols) * TILE, 20 + (i // cols) * TILE))
        ImageDraw.Draw(sheet).text((4, 4), spec.group_name(int(g)), fill=(0, 0, 0))
        name = f"group-{int(g):04d}-{_slug(spec.group_name(int(g)))}.png"
        buf = io.BytesIO()
        sheet.save(buf, format="PNG")
        with fs.open(join(base, SHEET_DIR, name), "wb") as f:
            f.write(buf.getvalue())
        written.append(join(root, SHEET_DIR, name))
    return written


def summarize(root: str, spec: GroupSpec, info: dict[str, Any], targets: dict[int, int], run_stats: list[dict],
              seconds: float, skipped: int) -> dict[str, Any]:
    """Totals over every complete shard (also ones from earlier, resumed or extended runs) plus this run's speed.

    ``complete``: every planned shard is done and every group has at least its target of accepted images.
    """
    rejects: Counter = Counter()
    per_group: Counter = Counter()
    n_rows = n_accepted = 0
    samplers: list[dict] = []
    done = complete_shards(root)
    for shard in done:
        st = read_stats(root, shard)
        if st.get("sampler") and st["sampler"] not in samplers:
            samplers.append(st["sampler"])
        n_rows += st["n_rows"]
        n_accepted += st["n_accepted"]
        rejects.update(st.get("rejects", {}))
        per_group.update({int(g): n for g, n in st.get("accepted_per_group", {}).items()})
    generated = sum(s["n_rows"] for s in run_stats)
    by_name: dict[str, int] = defaultdict(int)
    target_by_name: dict[str, int] = {}
    for g in (spec.group_id(y, b) for y, b in spec.pairs()):  # the dataset's groups (SpuCo: 8 of 16 pairs)
        by_name[spec.group_name(g)] = int(per_group.get(g, 0))
        target_by_name[spec.group_name(g)] = int(targets.get(g, 0))
    short = {name: target - by_name[name] for name, target in target_by_name.items() if by_name[name] < target}
    return {
        "output": root, "complete": n_rows == info["n_rows"] and not short,
        "manifest_rows": info["n_rows"], "rows_done": n_rows, "accepted": n_accepted,
        "rejects_by_reason": dict(rejects), "accepted_per_group": dict(by_name), "target_per_group": target_by_name,
        "short_per_group": short, "rounds": len(info["rounds"]),
        "shards_done": len(done), "shards_run": len(run_stats), "shards_skipped": skipped,
        "images_generated_this_run": generated, "seconds": round(seconds, 3),
        "images_per_s": round(generated / seconds, 2) if seconds > 0 else 0.0,
        # the scheduler(s) that sampled the images: the model's own, or a study's explicit backend setting
        "sampler": samplers[0] if len(samplers) == 1 else (samplers or None),
    }


def write_json(root: str, name: str, obj: Any) -> None:
    fs, base = filesystem(root)
    write_atomic(fs, join(base, name), json.dumps(obj, indent=2, default=str).encode())
