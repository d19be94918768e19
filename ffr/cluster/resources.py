"""Custom Ray resources that steer GPU work to the node type built for it (cluster.yaml's ``generate_gpu`` and
``train_gpu``).

Ray's autoscaler packs a pending ``{GPU: 1}`` demand onto whichever node type it scores best, which for 8
generation actors is 2 four-GPU training nodes rather than 8 spot generation nodes. A custom resource that only
one node type declares removes that choice. The cluster says which names it declares through the environment
every Ray process inherits (cluster.yaml exports ``FFR_CLUSTER_RESOURCES=generate_gpu,train_gpu`` before
``ray start``); where it declares none (a laptop, the local test cluster, an on-prem box) nothing extra is
requested, so GPU work still schedules there. An explicit ``ray.resources`` in a generation config wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ffr.errors import FFRError

# Work kind → the custom resource a node type declares (one unit per GPU) to receive that work.
RESOURCE_FOR = {"generate": "generate_gpu", "train": "train_gpu"}
ENV_VAR = "FFR_CLUSTER_RESOURCES"


def declared(environ: Mapping[str, str] | None = None) -> set[str]:
    """The custom resource names this cluster declares (``$FFR_CLUSTER_RESOURCES``, comma-separated)."""
    environ = os.environ if environ is None else environ
    return {name.strip() for name in environ.get(ENV_VAR, "").split(",") if name.strip()}


def custom_resources(kind: str, gpus: float, explicit: Mapping[str, float] | None = None,
                     environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """Extra resources one actor/worker of ``kind`` requests: ``explicit`` if given, else one unit of the kind's
    resource per GPU when the work uses GPUs and the cluster declares that resource, else none."""
    if kind not in RESOURCE_FOR:
        raise FFRError(f"work kind {kind!r} is unknown; expected one of {sorted(RESOURCE_FOR)}")
    if explicit is not None:
        if not isinstance(explicit, Mapping) or not all(isinstance(v, int | float) and v >= 0
                                                        for v in explicit.values()):
            raise FFRError(f"ray.resources = {explicit!r}; expected a mapping of resource name: amount >= 0")
        return {str(k): float(v) for k, v in explicit.items() if v}
    name = RESOURCE_FOR[kind]
    return {name: float(gpus)} if gpus and name in declared(environ) else {}
