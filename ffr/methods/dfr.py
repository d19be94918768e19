"""DFR (Kirichenko et al. 2023): retrain only the last layer on group-balanced validation data.

Runs on top of a trained model's features: L1 logistic regression on standardized features; C is
tuned on one half of a group-balanced validation set by worst-group accuracy on the other half, then
``n_refits`` models are fit on balanced subsamples of the whole validation set and averaged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field as Constraint

from ffr import options
from ffr.errors import FFRError
from ffr.methods.base import FeatureFit, Features, Method, searchable
from ffr.methods.registry import METHODS
from ffr.metrics import worst_group_accuracy

C_GRID = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003)  # the grid of the DFR and FFR code


@dataclass
class LinearHead:
    """An averaged last layer plus the standardization it expects; ``predict`` works on raw features."""

    coef: np.ndarray  # (n_classes or 1, d)
    intercept: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    classes: np.ndarray
    best_c: float

    def decision(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.std
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

    def fit_on_features(self, features: Mapping[str, Features], rng: np.random.Generator) -> FeatureFit:
        """A new last layer fit on the validation features (standardized like the training features)."""
        val = features["val"]
        head = self.fit_last_layer(val.x, val.y, val.groups, rng, scaler_features=features["train"].x)
        return FeatureFit(head.predict, {"best_c": head.best_c, "n_refits": self.options.n_refits})

    @staticmethod
    def _fit(x, y, c, seed):
        # Imported here, not at the top: sklearn (with scipy) adds ~1.7 s to the start of every process that
        # imports the methods (each Ray Train worker and evaluation task), and only DFR's last step uses it.
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(l1_ratio=1.0, C=c, solver="liblinear", max_iter=10000, random_state=seed)  # L1
        return model.fit(x, y)

    def fit_last_layer(self, val_features: np.ndarray, val_targets: np.ndarray, val_groups: np.ndarray,
                       rng: np.random.Generator, scaler_features: np.ndarray | None = None) -> LinearHead:
        x, y, g = np.asarray(val_features, np.float64), np.asarray(val_targets), np.asarray(val_groups)
        if len(np.unique(y)) < 2:
            raise FFRError("dfr needs validation examples of at least two classes")
        ref = x if scaler_features is None else np.asarray(scaler_features, np.float64)
        mean, std = ref.mean(0), ref.std(0) + 1e-8
        z = (x - mean) / std

        # Tune C: fit on a balanced subsample of one random half, select by WGA on the other half.
        order = rng.permutation(len(y))
        fit_half, eval_half = order[: len(y) // 2], order[len(y) // 2:]
        fit_idx = fit_half[_balanced_subsample(g[fit_half], rng)]
        best_c, best_wga = None, -1.0
        for c in self.options.c_grid:
            if len(np.unique(y[fit_idx])) < 2:
                break
            model = self._fit(z[fit_idx], y[fit_idx], c, int(rng.integers(2**31)))
            wga = worst_group_accuracy(model.predict(z[eval_half]), y[eval_half], g[eval_half])
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
        return LinearHead(np.mean(coefs, 0), np.mean(intercepts, 0), mean, std, classes, float(best_c))
