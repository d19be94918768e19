"""D3S's img2img guide: a class foreground pasted on a background template (d3s/utils.py ``paste_on_bg``).

The recipe picks the two files when it builds the manifest (so the guide references are recorded per
row); the worker builds the guide image from them with :func:`make_guide`. The foreground is
center-cropped to a square and scaled to ``fg_scale`` × side (D3S: 0.4), the background is center-cropped
and scaled to the side, and the paste position is drawn from the row's seed, so a guide is a pure
function of (files, seed, size). Folders may be local or ``s3://``.
"""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from ffr.errors import FFRError
from ffr.storage import filesystem, join

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp", ".bmp")
FG_SCALE = 0.4
_WNID = re.compile(r"^n\d{8}$")


def _listing(folder: str, what: str, dirs: bool = False) -> list[str]:
    """Names inside ``folder`` (sub-folders only if ``dirs``); storage errors become one FFRError line."""
    fs, inner = filesystem(folder)
    try:
        if not fs.isdir(inner):
            raise FFRError(f"{what} folder {folder!r} does not exist")
        paths = fs.ls(inner, detail=False)
        if dirs:
            paths = [p for p in paths if fs.isdir(p)]
    except FFRError:
        raise
    except Exception as e:  # credentials, permissions, unreachable endpoint: the user's storage setup
        raise FFRError(f"cannot list {what} folder {folder!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in paths)


def list_images(folder: str, what: str) -> list[str]:
    """Sorted image files directly inside ``folder`` (as full paths/URIs); FFRError if none."""
    names = _listing(folder, what)
    files = [join(folder, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    if not files:
        raise FFRError(f"{what} folder {folder!r} holds no images (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return files


def class_folders(root: str, n_classes: int, wnids_file: str | None = None) -> dict[int, str]:
    """Map ImageNet class index → folder under an ImageNet-layout ``root`` (``root/{wnid or index}/*.JPEG``).

    Folders named by class index (``0``, ``017``) map directly. Folders named by WordNet id map through
    ``wnids_file`` (one wnid per line, in class-index order) or, when all ``n_classes`` are present, by
    sorted order (torchvision's ImageFolder convention, which is the ImageNet class order).
    """
    names = _listing(root, "foreground (ImageNet layout root/{wnid}/*.JPEG)", dirs=True)
    if not names:
        raise FFRError(f"foreground folder {root!r} has no class sub-folders")
    if wnids_file:
        fs_w, inner_w = filesystem(wnids_file)
        if not fs_w.exists(inner_w):
            raise FFRError(f"wnids file {wnids_file!r} does not exist")
        order = [w.strip() for w in fs_w.cat_file(inner_w).decode().splitlines() if w.strip()]
        index = {w: i for i, w in enumerate(order)}
        return {index[n]: join(root, n) for n in names if n in index}
    if all(n.isdigit() for n in names):
        return {int(n): join(root, n) for n in names}
    if all(_WNID.match(n) for n in names):
        if len(names) != n_classes:
            raise FFRError(f"foreground folder {root!r} has {len(names)} wnid folders, not all {n_classes}; "
                           "pass recipe.options.wnids_file (one wnid per line, in class-index order)")
        return dict(enumerate(join(root, n) for n in names))
    raise FFRError(f"foreground folder {root!r} mixes folder names (e.g. {names[0]!r}); "
                   "expected class indices (0..999) or WordNet ids (n01440764)")


def _open(path: str) -> Image.Image:
    fs, inner = filesystem(path)
    try:
        data = fs.cat_file(inner)
    except FileNotFoundError:
        raise FFRError(f"guide image {path!r} does not exist") from None
    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as e:  # PIL raises several types for corrupt files
        raise FFRError(f"guide image {path!r} is not a readable image: {e}") from None


def center_square(image: Image.Image, side: int) -> Image.Image:
    w, h = image.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return image.crop((left, top, left + s, top + s)).resize((side, side), Image.Resampling.BICUBIC)


def make_guide(foreground: str, background: str, seed: int, size: int, fg_scale: float = FG_SCALE) -> Image.Image:
    """The guide image for one row: foreground pasted at a seeded random position on the background."""
    bg = center_square(_open(background), size)
    fg_side = max(1, int(round(fg_scale * size)))
    fg = center_square(_open(foreground), fg_side)
    rng = np.random.default_rng([int(seed), 7])  # its own stream: the backend uses the seed for noise
    x, y = (int(v) for v in rng.integers(0, size - fg_side + 1, size=2))
    bg.paste(fg, (x, y))
    return bg

