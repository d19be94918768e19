import numpy as np

from ffr import options
from ffr.errors import FFRError
from ffr.methods.base import Method, PreliminaryRun, searchable
from ffr.methods.registry import METHODS


@METHODS.register("jtt")
class JustTrainTwice(Method):
    """JTT (Liu et al. 2021): up-weight the error set of a short ERM identification run by λ.

    The identification run is this method's preliminary run: ERM for ``identification_epochs`` with the main
    run's data, init and optimiser; its final model's mistakes on the training set are the error set. The
    up-weighting is done by sampling, as in the paper (the error set is repeated λ times): each error-set
    example is drawn with weight λ, and an epoch has N + (λ - 1)|E| draws.
    """

    name = "jtt"

    class Options(options.Options):
        upweight: float = searchable(6.0, ("choice", [4.0, 6.0, 20.0, 50.0, 100.0]), ge=1,
                                     description="λ: how many times each error-set example is drawn")
        identification_epochs: int = searchable(1, ("choice", [1, 2, 5]), ge=1,
                                                description="epochs of the ERM identification run")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.error_set: np.ndarray | None = None

    def preliminary_run(self) -> PreliminaryRun:
        return PreliminaryRun("identification", "jtt-identification", self.options.identification_epochs)

    def preliminary_result(self, predictions, targets, groups) -> dict:
        errors = np.asarray(predictions) != np.asarray(targets)
        return {"n_errors": int(errors.sum()), "n_train": len(errors), "error_set": errors.astype(int).tolist()}

    def preliminary_summary(self, result: dict) -> str:
        return f"JTT identification: {result['n_errors']} of {result['n_train']} training examples wrong"

    def use_preliminary(self, result: dict) -> None:
        self.set_error_set(np.asarray(result["error_set"], dtype=bool))

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
        return np.where(err, float(self.options.upweight), 1.0)

    def draws_per_epoch(self, n_examples):
        err = self._require_error_set(n_examples)
        return int(round(n_examples + (self.options.upweight - 1) * err.sum()))

    def state_dict(self):
        return {} if self.error_set is None else {"error_set": self.error_set}

    def load_state_dict(self, state):
        if "error_set" in state:
            self.error_set = np.asarray(state["error_set"], dtype=bool)
