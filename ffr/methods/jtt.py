import numpy as np

from ffr.errors import FFRError
from ffr.methods.base import HParam, Method
from ffr.methods.registry import METHODS


@METHODS.register("jtt")
class JustTrainTwice(Method):
    """JTT (Liu et al. 2021): up-weight the error set of a short ERM identification run by λ.

    The up-weighting is done by sampling, as in the paper (the error set is repeated λ times): each
    error-set example is drawn with weight λ, and an epoch has N + (λ - 1)|E| draws.
    """

    name = "jtt"
    hparams = (
        HParam("upweight", 6.0, ("choice", [4.0, 6.0, 20.0, 50.0, 100.0])),
        HParam("identification_epochs", 1, ("choice", [1, 2, 5])),
    )

    def _check(self) -> None:
        if self.config["upweight"] < 1:
            raise FFRError(f"jtt upweight {self.config['upweight']!r} must be >= 1")
        if int(self.config["identification_epochs"]) < 1:
            raise FFRError(f"jtt identification_epochs {self.config['identification_epochs']!r} must be >= 1")
        self.error_set: np.ndarray | None = None

    def set_error_set(self, misclassified: np.ndarray) -> None:
        """Boolean mask over the training set: True where the identification model was wrong."""
        self.error_set = np.asarray(misclassified, dtype=bool)

    def _require_error_set(self, n: int) -> np.ndarray:
        if self.error_set is None:
            raise FFRError("method 'jtt' needs the error set of its identification run; call set_error_set()")
        if len(self.error_set) != n:
            raise FFRError(f"jtt error set has {len(self.error_set)} entries but the training set has {n}")
        return self.error_set

    def sampling_weights(self, train_groups):
        err = self._require_error_set(len(train_groups))
        return np.where(err, float(self.config["upweight"]), 1.0)

    def draws_per_epoch(self, n_examples):
        err = self._require_error_set(n_examples)
        return int(round(n_examples + (self.config["upweight"] - 1) * err.sum()))

    def state_dict(self):
        return {} if self.error_set is None else {"error_set": self.error_set}

    def load_state_dict(self, state):
        if "error_set" in state:
            self.error_set = np.asarray(state["error_set"], dtype=bool)
