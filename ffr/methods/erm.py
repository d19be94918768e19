from ffr.methods.base import Method
from ffr.methods.registry import METHODS


@METHODS.register("erm")
class ERM(Method):
    """Empirical risk minimization: mean cross-entropy over shuffled batches (class-only rows of a mixed
    stream count like any other: the loss never looks at groups)."""

    name = "erm"
    mixes_class_only = True
