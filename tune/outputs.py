"""What a sweep or a study leaves beside its runs: its result table as CSV and its config (secrets redacted) as JSON,
on local disk or s3://."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ffr.config import redact, to_dict
from ffr.storage import ensure_dir, filesystem, join


def write_outcome(folder: str, table: pd.DataFrame, table_file: str, config: Any, config_file: str) -> None:
    fs, inner = filesystem(folder)
    ensure_dir(fs, inner)
    with fs.open(join(inner, table_file), "w") as f:
        table.to_csv(f, index=False)
    with fs.open(join(inner, config_file), "w") as f:
        f.write(json.dumps(redact(to_dict(config)), indent=2, default=str))
