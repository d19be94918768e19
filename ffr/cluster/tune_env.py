"""Keep credentials out of Ray Tune trials' runtime envs (Ray glue; imports Ray only when called).

Ray Tune 2.60 copies ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SECURITY_TOKEN`` and
``AWS_SESSION_TOKEN`` from the driver's environment into every trial actor's runtime env
(``ray/tune/execution/class_cache.py``: ``ENV_VARS_TO_PROPAGATE``, read by ``_ActorClassCache.get``). A runtime
env is part of Ray's state: it shows in ``ray list actors/tasks --detail``, the dashboard and the head's
``runtime_env_agent.log``. Trials do not need the copy: they run on nodes that get S3 access from their
instance role or their own credentials file, the same way the driver does.
"""

from __future__ import annotations

from ffr.secrets import is_secret_name


def keep_credentials_out_of_trials() -> frozenset[str]:
    """Remove credential names from Tune's propagation list; returns the names still propagated.

    Idempotent. Ray is pinned exactly (pyproject.toml), and tests/test_secrets.py fails if the list moves.
    """
    from ray.tune.execution import class_cache

    kept = frozenset(name for name in class_cache.ENV_VARS_TO_PROPAGATE if not is_secret_name(name))
    class_cache.ENV_VARS_TO_PROPAGATE = kept
    return kept
