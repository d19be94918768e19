"""The generator as a study axis: every image's record names its generator, a training run's result carries the
generator of its synthetic images, and ``ffr report`` keeps runs on two generators' outputs apart (two settings,
not two seeds of one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report import DIGITS_GROUPS, make_run

import pipelines
from ffr.cli import main
from ffr.shards import read_metadata
from ffr.training import run_experiment
from ffr.training.data import load_experiment_data

STYLES = ("optdigits", "print")


def _generate(root: Path, style: str, per_group: int = 300) -> dict:
    return pipelines.generate({"recipe": "colored-digits", "output": str(root), "budget": {"per_group": per_group},
                               "backend": {"name": "procedural", "settings": {"style": style}}, "runner": "local",
                               "shard_size": 600, "batch_size": 200, "progress": False, "contact_sheet_size": 2})


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generators")
    for style in STYLES:
        _generate(root / style, style)
    return {style: root / style for style in STYLES}


def test_every_record_and_the_summary_name_the_generator(outputs):
    for style, root in outputs.items():
        meta = read_metadata(str(root))
        assert set(meta["generator"]) == {f"procedural style={style}"}
        assert json.loads((root / "summary.json").read_text())["generator"] == f"procedural style={style}"


def test_a_run_result_carries_its_generator_and_the_report_groups_by_it(outputs, tmp_path, capsys):
    base = {"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.95}, "variant": "ffr",
            "method": "erm", "stage1": {"epochs": 1}, "backbone": "small-cnn", "backbone_options": {"width": 8},
            "pretrained": None, "image_size": 32, "batch_size": 256, "epochs": 1, "executor": "local",
            "cache_in_memory": True, "storage_path": str(tmp_path / "runs"), "mlflow": {"enabled": False}}
    from ffr.training.config import parse

    data = load_experiment_data(parse({**base, "synthetic_root": str(outputs["print"])}))
    assert data.generator == "procedural style=print"
    results = {style: run_experiment({**base, "synthetic_root": str(root)}) for style, root in outputs.items()}
    assert {s: r["generator"] for s, r in results.items()} == {s: f"procedural style={s}" for s in STYLES}

    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    for style in STYLES:  # one paper-table row per generator, named by it
        assert f"erm / FFR [generator=procedural style={style}]" in printed
        assert f"FFR, stage 1 only [generator=procedural style={style}]" in printed
    csv = (tmp_path / "report" / "report.csv").read_text()
    assert "generator" in csv.splitlines()[0] and "procedural style=print" in csv


def test_outputs_written_before_the_record_are_named_from_their_identity(outputs, tmp_path):
    """An output without the ``generator`` column (written by an older ffr) is named from manifest.json."""
    import shutil

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = tmp_path / "old"
    shutil.copytree(outputs["print"], old)
    for part in (old / "shards").glob("*.parquet"):
        table = pq.read_table(part).to_pandas()
        pq.write_table(pa.Table.from_pandas(table.drop(columns=["generator"]), preserve_index=False), part)
    assert "generator" not in pd.read_parquet(next((old / "shards").glob("*.parquet"))).columns
    from ffr.datasets import create

    assert set(create("synthetic", root=str(old))["train"].table["generator"]) == {"procedural"}


def test_report_seeds_of_one_generator_average_and_two_generators_stay_apart(tmp_path, capsys):
    runs = tmp_path / "runs"
    for generator, wga in (("diffusers:sd15 steps=50", 0.8), ("diffusers:sdxl-turbo steps=1", 0.6)):
        for seed in (0, 1):
            run = make_run(runs, f"{generator[10:14]}-s{seed}", dataset="colored-digits", variant="ffr",
                           method="erm", stage=2, seed=seed, val_wga=[wga], group_names=DIGITS_GROUPS,
                           test_groups={0: wga + 0.01 * seed, 1: 0.9, 2: 0.9, 3: 0.9})
            result = json.loads((run / "ffr_result.json").read_text())
            (run / "ffr_result.json").write_text(json.dumps({**result, "generator": generator}))
    assert main(["report", str(runs)]) == 0
    printed = capsys.readouterr().out
    rows = {line.split("]")[0] + "]": line.split("]")[1].strip() for line in printed.splitlines()
            if line.startswith("erm / FFR [")}
    assert rows == {"erm / FFR [generator=diffusers:sd15 steps=50]": "80.5 ± 0.7 (n=2)",
                    "erm / FFR [generator=diffusers:sdxl-turbo steps=1]": "60.5 ± 0.7 (n=2)"}
