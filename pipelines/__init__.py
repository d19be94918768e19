"""Generation: recipes → manifest → generator backends (Ray Data actor pool) → WebDataset + Parquet shards.

``pipelines.generate(config) -> summary`` is the Python API; ``ffr generate`` is the CLI over it.
"""

from pipelines.api import generate

__all__ = ["generate"]
