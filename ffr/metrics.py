"""Group-robustness metrics; names say which weighting they use.

All functions take predictions, targets and group ids as torch tensors or numpy arrays. Groups with no
examples are ignored (not counted as 0 or 1): worst-group accuracy is over non-empty groups only.
"""

from __future__ import annotations

import numpy as np


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def group_accuracies(preds, targets, groups) -> dict[int, float]:
    """Accuracy per non-empty group id."""
    p, t, g = _np(preds), _np(targets), _np(groups)
    correct = p == t
    return {int(gid): float(correct[g == gid].mean()) for gid in np.unique(g)}


def group_counts_of(groups) -> dict[int, int]:
    ids, counts = np.unique(_np(groups), return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts)}


def worst_group_accuracy(preds, targets, groups) -> float:
    """Minimum accuracy over non-empty groups (WGA) — the model-selection metric."""
    accs = group_accuracies(preds, targets, groups)
    return min(accs.values()) if accs else float("nan")


def mean_group_accuracy(preds, targets, groups) -> float:
    """Unweighted mean of per-group accuracies (each non-empty group counts once)."""
    accs = group_accuracies(preds, targets, groups)
    return float(np.mean(list(accs.values()))) if accs else float("nan")


def overall_accuracy(preds, targets) -> float:
    """Plain accuracy over examples (weighted by the evaluated set's own group sizes)."""
    p, t = _np(preds), _np(targets)
    return float((p == t).mean()) if len(p) else float("nan")


def worst_class_accuracy(preds, targets) -> float:
    """Minimum accuracy over the classes present: what a validation set without group labels can select on
    (SubpopBench's "attributes unknown" model selection)."""
    p, t = _np(preds), _np(targets)
    correct = p == t
    return min(float(correct[t == c].mean()) for c in np.unique(t)) if len(t) else float("nan")


def train_weighted_accuracy(preds, targets, groups, train_group_counts: dict[int, int]) -> float:
    """Per-group accuracy weighted by the *training* group proportions (WILDS' "average accuracy")."""
    accs = group_accuracies(preds, targets, groups)
    weights = {g: train_group_counts.get(g, 0) for g in accs}
    total = sum(weights.values())
    if total == 0:
        return float("nan")
    return float(sum(accs[g] * w for g, w in weights.items()) / total)


def summarize(preds, targets, groups, train_group_counts: dict[int, int] | None = None) -> dict[str, float]:
    """All metrics in one dict, with per-group accuracies as ``acc_group_{g}``."""
    out = {
        "worst_group_acc": worst_group_accuracy(preds, targets, groups),
        "mean_group_acc": mean_group_accuracy(preds, targets, groups),
        "overall_acc": overall_accuracy(preds, targets),
        "worst_class_acc": worst_class_accuracy(preds, targets),
    }
    if train_group_counts:
        out["train_weighted_acc"] = train_weighted_accuracy(preds, targets, groups, train_group_counts)
    out.update({f"acc_group_{g}": a for g, a in group_accuracies(preds, targets, groups).items()})
    return out
