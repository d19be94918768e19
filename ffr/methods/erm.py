from ffr.methods.base import Method
from ffr.methods.registry import METHODS


@METHODS.register("erm")
class ERM(Method):
    """Empirical risk minimization: mean cross-entropy over shuffled batches."""

    name = "erm"
