"""The GPU check's CPU smoke mode: every section runs on tiny random models (sd15 and SDXL ladders, a few-step
family, the Ray Data generation job against a bare loop, Ray Train against a plain loop, ``ffr d3s eval``), and
it writes the JSON, the Markdown table and the docs block. The real numbers need a GPU: ``make gpu-check``."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_smoke_runs_every_section_and_fills_the_docs_block(ray_cluster, tmp_path):
    gpu_check = _gpu_check()
    docs = tmp_path / "cluster.md"
    shutil.copy("docs/cluster.md", docs)
    before = docs.read_text()
    record = gpu_check.main(["--smoke", "--out", str(tmp_path / "out"), "--docs", str(docs),
                             "--work-dir", str(tmp_path / "work")])
    assert list(record["sections"]) == list(gpu_check.SECTIONS)
    for name, section in record["sections"].items():
        assert not section.get("skipped"), name
        measured = [r for r in section["rows"] if not r.get("skipped")]
        assert measured and all(r["images_per_s"] > 0 for r in measured), (name, section)
    skipped = {r["configuration"]: r["skipped"] for s in record["sections"].values() for r in s["rows"]
               if r.get("skipped")}
    assert skipped == {"fp16": "half precision needs CUDA"} or set(skipped.values()) <= {"half precision needs CUDA"}
    for name in ("ray-data", "ray-train", "d3s-eval"):  # each compares the Ray path with a plain loop
        assert record["sections"][name]["rows"][-1]["ratio"] > 0
    saved = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert saved["smoke"] is True and saved["device"] == "cpu"
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| section | configuration | images/s | ratio | peak GiB |" in table and "| d3s-eval |" in table
    after = docs.read_text()
    assert table in after
    begin, end = after.index(gpu_check.BEGIN), after.index(gpu_check.END)
    assert after[:begin] == before[:before.index(gpu_check.BEGIN)]  # the rest of the page is untouched
    assert after[end:] == before[before.index(gpu_check.END):]
