"""The (B, G) diagnostic: does the model see whether an image is real or synthetic (G), next to its bias (B)?

FFR's argument (Qraitem et al.): mixing real and synthetic images to rebalance groups teaches a shortcut on the
pair (B, G) — in USB's minority groups almost every image is synthetic, so "synthetic" predicts the minority
class — and pretraining on synthetic images alone avoids it. Two measurements make the shortcut visible, on the
checkpoint a run selected (its test checkpoint):

- **accuracy per (class, bias, source)**: real test images per (y, b), and *held-out* synthetic images per
  (y, b) — synthetic images that no variant of this seed trains on (:func:`heldout_synthetic`). A model that
  keys on (B, G) is right on synthetic minority images and wrong on real ones, or the other way round;
- **a real-vs-synthetic linear probe** on the frozen penultimate features (:func:`real_vs_synthetic_probe`):
  logistic regression on as many real as synthetic images of every (y, b) group, scored on a held-out half
  of them. 50 % means the features carry no G; near 100 % means G is there for the head to use.

Written into the result file under ``bg_diagnostic`` (``ffr.runs.DIAGNOSTIC``), logged to MLflow
(``ffr.tracking``) and tabled by ``ffr report``. Ray-free.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ffr.balance import SYNTHETIC_MODES, synthetic_counts
from ffr.datasets.base import GroupedSplit
from ffr.datasets.synthetic import select_per_group
from ffr.errors import FFRError
from ffr.groups import SOURCE_NAMES, group_counts
from ffr.metrics import group_accuracies, summarize

PROBE_FOLDS = 2  # fit on one half of the balanced pool, score on the other


def _synthetic_keys(split: GroupedSplit) -> set[str]:
    """Keys of a training table's synthetic rows (a mixed table's keys are 'part\\0key')."""
    rows = split.table[split.table["source"] == 1]
    return {str(k).partition("\0")[2] if "\0" in str(k) else str(k) for k in rows["key"]}


def heldout_synthetic(synthetic: GroupedSplit, real_train: GroupedSplit, trained_on: list[GroupedSplit], seed: int,
                      per_group: int) -> GroupedSplit:
    """Up to ``per_group`` synthetic images per (y, b) that no variant of this data seed trains on: neither
    this experiment's training sets nor the selections USB, ASB and FFR make (the same selection rule, so every
    variant of a seed is diagnosed on one held-out set). Chosen by the seed; may be empty for a group whose
    images the variants use up (generate more than their budgets to have some)."""
    used = set().union(*(_synthetic_keys(split) for split in trained_on)) if trained_on else set()
    real_counts = group_counts(real_train.y, real_train.b)
    taken = np.zeros(len(synthetic), dtype=bool)
    for mode in SYNTHETIC_MODES:
        try:
            taken[select_per_group(synthetic.y, synthetic.b, synthetic_counts(real_counts, mode), seed)] = True
        except FFRError:  # a budget this output cannot meet: that variant cannot train on it
            continue
    taken |= synthetic.table["key"].astype(str).isin(used).to_numpy()
    free = np.flatnonzero(~taken)
    rng = np.random.default_rng([seed, 5])
    chosen = []
    for y, b in sorted(set(zip(synthetic.y[free].tolist(), synthetic.b[free].tolist()))):
        members = free[(synthetic.y[free] == y) & (synthetic.b[free] == b)]
        chosen.append(np.sort(rng.choice(members, min(per_group, len(members)), replace=False)))
    picked = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    return synthetic.subset(picked, "heldout")


def real_vs_synthetic_probe(real_x: np.ndarray, real_groups: np.ndarray, synthetic_x: np.ndarray,
                            synthetic_groups: np.ndarray, seed: int) -> dict | None:
    """Logistic regression that predicts real (0) vs synthetic (1) from frozen features. Per (y, b) group it
    takes as many real as synthetic images (the fewer of the two), halves each, fits on one half and scores
    on the other, so neither the group mix nor the source mix gives the answer away. None without 2 of each
    source in some group."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng([seed, 6])
    fit_idx: list[tuple[int, int]] = []  # (source, row) pairs
    test_idx: list[tuple[int, int]] = []
    for g in sorted(set(real_groups.tolist()) & set(synthetic_groups.tolist())):
        pools = [np.flatnonzero(real_groups == g), np.flatnonzero(synthetic_groups == g)]
        m = min(len(p) for p in pools)
        if m < 2:
            continue
        for source, pool in enumerate(pools):
            picked = rng.permutation(pool)[:m]
            half = m // PROBE_FOLDS
            fit_idx += [(source, int(i)) for i in picked[:half]]
            test_idx += [(source, int(i)) for i in picked[half:2 * half]]
    if not fit_idx or not test_idx:
        return None
    features = (real_x, synthetic_x)

    def stack(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([features[s][i] for s, i in pairs]).astype(np.float64),
                np.asarray([s for s, _ in pairs], dtype=np.int64))

    x_fit, s_fit = stack(fit_idx)
    x_test, s_test = stack(test_idx)
    scaler = StandardScaler().fit(x_fit)
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(x_fit), s_fit)
    correct = probe.predict(scaler.transform(x_test)) == s_test
    return {"accuracy": float(correct.mean()), "chance": 0.5, "n_fit": len(fit_idx), "n_test": len(test_idx),
            **{f"{SOURCE_NAMES[s]}_accuracy": float(correct[s_test == s].mean()) for s in (0, 1)}}


def bg_diagnostic(features: Callable[[GroupedSplit], np.ndarray], predict: Callable[[np.ndarray], np.ndarray],
                  test: GroupedSplit, heldout: GroupedSplit, train_counts: dict[int, int], seed: int) -> dict:
    """The diagnostic of one checkpoint: ``features(split)`` gives its penultimate features, ``predict`` its
    classes from them (the model's head, or a method's head fitted on features)."""
    spec = test.spec
    real_x, synthetic_x = features(test), features(heldout)
    real_groups, synthetic_groups = test.groups(), heldout.groups(spec)
    synthetic = summarize(predict(synthetic_x), heldout.y, synthetic_groups, train_counts)
    real_acc = group_accuracies(predict(real_x), test.y, real_groups)
    accuracy, sizes = {}, {}
    for source, accs, groups in (("real", real_acc, real_groups),
                                 ("synthetic", group_accuracies(predict(synthetic_x), heldout.y, synthetic_groups),
                                  synthetic_groups)):
        for g, acc in accs.items():
            name = f"{spec.group_name(g)}/{source}"
            accuracy[name], sizes[name] = acc, int((groups == g).sum())
    return {"synthetic": synthetic, "accuracy": accuracy, "sizes": sizes,
            "probe": real_vs_synthetic_probe(real_x, real_groups, synthetic_x, synthetic_groups, seed)}
