"""The embedded, offline D3S: printed digits (foregrounds) on 10 procedural backgrounds, CPU only.

It runs the path a full-scale rebuild runs — recipe ``d3s-background`` (class table ``data/digit_classes.tsv``,
foregrounds from an ImageNet-layout folder, background templates generated once by the run's own backend) →
manifest → Ray Data job (``compositing`` backend, the CPU stand-in for Stable Diffusion) → shards → split
views → per-background evaluation — and gives a classifier to evaluate: a small CNN trained on the same
digits on *plain* backgrounds (the "ImageNet" of this world). Its per-background accuracy drop is the D3S
finding in miniature. Folders written here:

    foregrounds/digit{i}/*.png      ImageNet train layout: a digit on its flat backdrop
    plain/{train,val}/digit{i}/*.png the foreground pasted (D3S's guide rule: 0.4 of the side) on a plain color
    d3s/                            the generation output;  d3s/splits/, eval/ follow
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ffr.errors import FFRError
from pipelines.guides import FG_SCALE, center_square, paste_box
from pipelines.recipes.class_table import load_class_table

CLASS_TABLE = "data/digit_classes.tsv"
IMAGE_SIZE = 48
BACKDROP_RGB = (110, 110, 110)  # the foregrounds' flat backdrop
INK_RGB = (245, 245, 245)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _digit(digit: int, seed: int, size: int) -> Image.Image:
    from pipelines.backends import create

    row = {"seed": seed, "width": size, "height": size, "glyph": str(digit), "b": 0,
           "background_rgb": list(BACKDROP_RGB), "ink_rgb": list(INK_RGB)}
    return create("procedural", {"max_rotation": 12.0}).render(row)


def write_foregrounds(root: str | Path, per_class: int = 8, size: int = IMAGE_SIZE, seed: int = 0) -> str:
    """``root/foregrounds/{wnid}/{k}.png`` for the 10 digit classes (ImageNet train layout)."""
    table = load_class_table(CLASS_TABLE)
    out = Path(root) / "foregrounds"
    for c, wnid in enumerate(table.wnids):
        (out / wnid).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            _digit(c, seed * 100_003 + c * 1000 + k, size).save(out / wnid / f"{k:03d}.png")
    return str(out)


def write_plain_set(root: str | Path, foregrounds: str, split: str, per_class: int, size: int = IMAGE_SIZE,
                    seed: int = 0) -> str:
    """Foregrounds pasted like D3S's guides (0.4 of the side, seeded position) on plain random colors."""
    table = load_class_table(CLASS_TABLE)
    out = Path(root) / "plain" / split
    rng = np.random.default_rng([seed, 6, len(split)])
    for wnid in table.wnids:
        files = sorted((Path(foregrounds) / wnid).glob("*.png"))
        (out / wnid).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            color = tuple(int(v) for v in rng.integers(0, 256, size=3))
            canvas = Image.new("RGB", (size, size), color)
            x, y, side = paste_box(int(rng.integers(2**31)), size, FG_SCALE)
            fg = Image.open(files[int(rng.integers(len(files)))]).convert("RGB")
            canvas.paste(center_square(fg, side), (x, y))
            canvas.save(out / wnid / f"{k:04d}.png")
    return str(out)


def _load_folder(folder: str, wnids: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for c, wnid in enumerate(wnids):
        for path in sorted((Path(folder) / wnid).glob("*.png")):
            a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
            xs.append((a - MEAN) / STD)
            ys.append(c)
    if not xs:
        raise FFRError(f"no training images under {folder!r}")
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float(), torch.tensor(ys)


def train_plain_classifier(train_folder: str, out_path: str | Path, epochs: int = 12, seed: int = 0,
                           size: int = IMAGE_SIZE) -> str:
    """A small CNN trained on plain-background digits, saved as a self-describing checkpoint: architecture,
    class count and its preprocessing travel with the weights (what ``ffr d3s eval`` reads)."""
    from ffr.backbones import Preprocessing, create_backbone, describe

    torch.manual_seed(seed)
    table = load_class_table(CLASS_TABLE)
    x, y = _load_folder(train_folder, table.wnids)
    model = create_backbone("small-cnn", len(table), width=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is many times faster than several on a busy machine
    try:
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(32):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    # the format `ffr train` writes: the weights beside the backbone, its options, the classes and preprocessing
    ckpt = {"model": model.state_dict(),
            **describe("small-cnn", {"width": 16}, table.names, Preprocessing(size, MEAN, STD))}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, out_path)
    return str(out_path)


def generation_config(out: str, foregrounds: str, per_group: int, templates: int = 3, size: int = IMAGE_SIZE,
                      runner: str = "ray", seed: int = 0, shard_size: int = 100) -> dict[str, Any]:
    """The d3s-background recipe on the digit class table, compositing backend, generated templates."""
    return {"recipe": {"name": "d3s-background",
                       "options": {"class_table": CLASS_TABLE, "foreground_root": foregrounds,
                                   "background_templates": templates}},
            "output": out, "seed": seed, "budget": {"per_group": per_group}, "shard_size": shard_size,
            "batch_size": 32, "image_format": "png", "generator": {"height": size, "width": size},
            "backend": {"name": "compositing"}, "runner": runner, "progress": False,
            "ray": {"min_actors": 1, "max_actors": 2}, "contact_sheet_size": 8, "contact_sheet_groups": 20}


def run_demo(out: str | Path, per_group: int = 8, epochs: int = 12, seed: int = 0, runner: str = "ray",
             plain_per_class: int = 80) -> dict:
    """Everything, end to end; returns the evaluation summary (also written under ``out/eval``)."""
    import pipelines
    from ffr.d3s.evaluate import EvalConfig, evaluate
    from ffr.datasets.d3s_splits import write_splits

    out = Path(out).resolve()
    fg = write_foregrounds(out, seed=seed)
    plain_train = write_plain_set(out, fg, "train", per_class=plain_per_class, seed=seed)
    plain_val = write_plain_set(out, fg, "val", per_class=20, seed=seed + 1)
    ckpt = train_plain_classifier(plain_train, out / "models" / "small-cnn-plain.pt", epochs=epochs, seed=seed)
    data = str(out / "d3s")
    summary = pipelines.generate(generation_config(data, fg, per_group, runner=runner, seed=seed))
    mapping = out / "digit_superclasses.json"  # each digit its own super-class: 10 on 10 backgrounds
    mapping.write_text(json.dumps({"names": list(load_class_table(CLASS_TABLE).names),
                                   "classes": {str(i): i for i in range(10)}}))
    splits = write_splits(data, seed=seed, mapping=str(mapping), name="digits")
    result = evaluate(EvalConfig(data=data, models=[f"checkpoint:{ckpt}"], output=str(out / "eval"),
                                 reference=plain_val, class_table=CLASS_TABLE, local=runner == "local"))
    return {"generation": {k: summary[k] for k in ("accepted", "rows_done")}, "splits": splits["rows"],
            "evaluation": result}
