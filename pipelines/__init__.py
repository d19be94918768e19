"""Generation: recipes → manifest → generator backends (Ray Data actor pool) → WebDataset + Parquet shards.

``pipelines.generate(config) -> summary`` is the Python API; ``ffr generate`` is the CLI over it.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """``generate`` on first use: importing a module of this package (``ffr generate --help`` imports
    ``pipelines.command``) must not load pandas and the recipes."""
    if name == "generate":
        from pipelines.api import generate

        return generate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["generate"]
