"""DFR (Kirichenko et al. 2023): retrain only the last layer on group-balanced validation data, as FFR ran it.

Runs on top of a trained model's penultimate features, as the FFR code does (``train_dfr_*.py``, ``utils.py``):
every feature vector is L2-normalised (FFR's ``F.normalize(out, dim=1)``), then standardized; an L1-penalised
logistic regression (liblinear) is fit. C is tuned on a group-balanced subsample of one random half of the
validation set (standardized by its own statistics, as FFR's tuning step) by worst-group accuracy on the other
half; then ``n_refits`` models are fit on balanced subsamples of the whole validation set, standardized by the
*training* features' statistics, and their coefficients averaged.

The penalty is L1 whatever scikit-learn version is installed (:func:`l1_logistic_regression`): scikit-learn 1.8
deprecated ``penalty`` for ``l1_ratio``, and before 1.8 ``l1_ratio`` alone is ignored, which silently gives L2.
``pyproject.toml`` pins the range the tests ran against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field as Constraint

from ffr import options
from ffr.errors import FFRError
from ffr.methods.base import FeatureFit, Features, Method, searchable
from ffr.methods.registry import METHODS
from ffr.metrics import worst_group_accuracy

C_GRID = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003)  # the grid of the DFR and FFR code


def l1_logistic_regression(c: float, seed: int):
    """An L1-penalised logistic regression with the liblinear solver (FFR's ``penalty="l1"``), spelled the way the
    installed scikit-learn reads it: ``l1_ratio=1`` from 1.8 on (``penalty`` is deprecated there and removed in
    1.10), ``penalty="l1"`` before (where ``l1_ratio`` alone is ignored and the fit is L2)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    penalty = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return LogisticRegression(C=c, solver="liblinear", max_iter=10000, random_state=seed, **penalty)


def normalize_features(x: np.ndarray, norm: str) -> np.ndarray:
    """``l2``: each row scaled to unit Euclidean length (FFR's features); ``none``: as they are."""
    x = np.asarray(x, np.float64)
    if norm == "none":
        return x
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # F.normalize's eps


def _standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn StandardScaler's statistics: mean and population std, a constant feature scaled by 1."""
    std = x.std(0)
    return x.mean(0), np.where(std > 0, std, 1.0)


@dataclass
class LinearHead:
    """An averaged last layer plus the normalization and standardization it expects; ``predict`` works on raw
    features (as the backbone gives them)."""

    coef: np.ndarray  # (n_classes or 1, d)
    intercept: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    classes: np.ndarray
    best_c: float
    feature_norm: str = "l2"

    def decision(self, features: np.ndarray) -> np.ndarray:
        z = (normalize_features(features, self.feature_norm) - self.mean) / self.std
        return z @ self.coef.T + self.intercept

    def predict(self, features: np.ndarray) -> np.ndarray:
        scores = self.decision(features)
        if scores.shape[1] == 1:  # binary: sklearn keeps one row of coefficients
            return self.classes[(scores[:, 0] > 0).astype(int)]
        return self.classes[scores.argmax(1)]


def _balanced_subsample(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    present = np.unique(groups)
    smallest = min(int(np.sum(groups == g)) for g in present)
    return np.concatenate([rng.choice(np.flatnonzero(groups == g), smallest, replace=False) for g in present])


@METHODS.register("dfr")
class DeepFeatureReweighting(Method):
    """Last-layer retraining. As a training loss it is ERM (the base model DFR sits on is ERM-trained)."""

    name = "dfr"

    class Options(options.Options):
        n_refits: int = searchable(20, ("choice", [20]), ge=1,
                                   description="balanced-subsample fits averaged into the final head")
        c_grid: tuple[Annotated[float, Constraint(gt=0)], ...] = searchable(
            C_GRID, ("choice", [C_GRID]), min_length=1, description="inverse L1 strengths C tried, by WGA")
        feature_norm: Literal["l2", "none"] = searchable(
            "l2", ("choice", ["l2"]), description="l2: unit-length features before standardizing (FFR's DFR); "
                                                  "none: raw features")

    def fit_on_features(self, features: Mapping[str, Features], rng: np.random.Generator) -> FeatureFit:
        """A new last layer fit on the validation features (standardized like the training features)."""
        val = features["val"]
        head = self.fit_last_layer(val.x, val.y, val.groups, rng, scaler_features=features["train"].x)
        return FeatureFit(head.predict, {"best_c": head.best_c, "n_refits": self.options.n_refits,
                                         "feature_norm": head.feature_norm})

    @staticmethod
    def _fit(x, y, c, seed):
        # sklearn is imported in l1_logistic_regression, not at the top: with scipy it adds ~1.7 s to the start of
        # every process that imports the methods (each Ray Train worker and evaluation task); only DFR uses it.
        return l1_logistic_regression(c, seed).fit(x, y)

    def fit_last_layer(self, val_features: np.ndarray, val_targets: np.ndarray, val_groups: np.ndarray,
                       rng: np.random.Generator, scaler_features: np.ndarray | None = None) -> LinearHead:
        norm = self.options.feature_norm
        x, y, g = normalize_features(val_features, norm), np.asarray(val_targets), np.asarray(val_groups)
        if len(np.unique(y)) < 2:
            raise FFRError("dfr needs validation examples of at least two classes")
        ref = x if scaler_features is None else normalize_features(scaler_features, norm)
        mean, std = _standardizer(ref)
        z = (x - mean) / std

        # Tune C: fit on a balanced subsample of one random half, select by WGA on the other half; FFR standardizes
        # this step by the statistics of the subsample it fits on.
        order = rng.permutation(len(y))
        fit_half, eval_half = order[: len(y) // 2], order[len(y) // 2:]
        fit_idx = fit_half[_balanced_subsample(g[fit_half], rng)]
        tune_mean, tune_std = _standardizer(x[fit_idx])
        best_c, best_wga = None, -1.0
        for c in self.options.c_grid:
            if len(np.unique(y[fit_idx])) < 2:
                break
            model = self._fit((x[fit_idx] - tune_mean) / tune_std, y[fit_idx], c, int(rng.integers(2**31)))
            wga = worst_group_accuracy(model.predict((x[eval_half] - tune_mean) / tune_std), y[eval_half],
                                       g[eval_half])
            if wga > best_wga:
                best_c, best_wga = c, wga
        best_c = best_c if best_c is not None else max(self.options.c_grid)

        # Final: average n_refits fits on balanced subsamples of the whole validation set.
        coefs, intercepts, classes = [], [], None
        for _ in range(self.options.n_refits):
            idx = _balanced_subsample(g, rng)
            model = self._fit(z[idx], y[idx], best_c, int(rng.integers(2**31)))
            coefs.append(model.coef_)
            intercepts.append(model.intercept_)
            classes = model.classes_
        return LinearHead(np.mean(coefs, 0), np.mean(intercepts, 0), mean, std, classes, float(best_c), norm)
