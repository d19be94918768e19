"""The one way every entry point gets a Ray cluster (Ray glue; core modules never import this)."""

from __future__ import annotations

import ray


def ensure_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (e.g. under ``ray job submit``), else start a local one."""
    if not ray.is_initialized():
        ray.init()
