"""The one way every entry point gets a Ray cluster (Ray glue; core modules never import this)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray


def ensure_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (e.g. under ``ray job submit``), else start a local one."""
    if not ray.is_initialized():
        ray.init()


@contextlib.contextmanager
def quiet_tune_console() -> Iterator[None]:
    """Ray Tune without its own console output, for commands that print their own lines (``ffr sweep``, ``ffr
    demo``). Ray 2.60's new output engine prints a configuration box, the results path and a TensorBoard hint
    even at ``verbose=0``; its legacy engine (``RAY_AIR_NEW_OUTPUT=0``) prints nothing at ``verbose=0``. Also
    quiets the closing "Wrote the latest version of all result files" INFO line. Restored afterwards."""
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    logger = logging.getLogger("ray.tune")
    level = logger.level
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved
