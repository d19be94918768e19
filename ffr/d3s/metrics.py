"""Accuracy tables from D3S predictions (plain pandas): per background, per (class, background), per model.

Input: the ``predictions.parquet`` contract — id, model, y (true class index), background, top5 (indices,
best first), top5_scores. A row is top-1 correct when ``top5[0] == y`` and top-5 correct when ``y`` is in
``top5`` (models with fewer than 5 classes list all of theirs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def correctness(pred: pd.DataFrame) -> pd.DataFrame:
    top5 = pred["top5"].tolist()
    y = pred["y"].to_numpy()
    out = pred[["model", "y", "background"]].copy()
    out["top1"] = np.fromiter((len(t) > 0 and t[0] == t_y for t, t_y in zip(top5, y)), bool, len(y))
    out["top5"] = np.fromiter((t_y in set(t) for t, t_y in zip(top5, y)), bool, len(y))
    return out


def _table(c: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = c.groupby(keys, sort=True)
    return pd.DataFrame({"n": g.size(), "top1": g["top1"].mean(), "top5": g["top5"].mean()}).reset_index()


def per_background(pred: pd.DataFrame) -> pd.DataFrame:
    """model, background, n, top1, top5."""
    return _table(correctness(pred), ["model", "background"])


def per_class_background(pred: pd.DataFrame) -> pd.DataFrame:
    """model, y, background, n, top1, top5 — D3S's (class × background) accuracy tensor, with counts."""
    return _table(correctness(pred), ["model", "y", "background"])


def overall(pred: pd.DataFrame) -> pd.DataFrame:
    """model, n, top1, top5."""
    return _table(correctness(pred), ["model"])


def summary(pred: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model: overall top-1/top-5, reference top-1 and the drop, worst background, and the top-1
    of every background as its own column."""
    table = overall(pred).rename(columns={"n": "n_images"})
    bg = per_background(pred)
    wide = bg.pivot(index="model", columns="background", values="top1").add_prefix("top1/")
    worst = bg.loc[bg.groupby("model")["top1"].idxmin(), ["model", "background", "top1"]]
    worst = worst.rename(columns={"background": "worst_background", "top1": "worst_top1"})
    table = table.merge(worst, on="model")
    if reference is not None:
        ref = overall(reference).rename(columns={"n": "reference_n", "top1": "reference_top1",
                                                 "top5": "reference_top5"})
        table = table.merge(ref, on="model", how="left")
        table["drop_top1"] = table["reference_top1"] - table["top1"]
    return table.merge(wide, left_on="model", right_index=True)


def drop_per_background(pred: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """model, background, top1, reference_top1, drop_top1 (reference − background), and the same for top-5."""
    bg = per_background(pred)
    ref = overall(reference)[["model", "top1", "top5"]].rename(columns={"top1": "reference_top1",
                                                                       "top5": "reference_top5"})
    out = bg.merge(ref, on="model")
    out["drop_top1"] = out["reference_top1"] - out["top1"]
    out["drop_top5"] = out["reference_top5"] - out["top5"]
    return out
