"""Budgets count accepted images: rejects are replaced by extra deterministic ids, a larger budget extends an
output without touching finished shards, and a group that cannot reach its target under the cap stops the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ffr.balance import keep_counts
from ffr.balance_command import budget_block
from ffr.cli import main as ffr_main
from ffr.config import load_config, load_yaml
from ffr.errors import FFRError
from ffr.shards import ShardReader, read_metadata
from pipelines import generate
from pipelines.api import plan
from pipelines.budget import extra_rows, group_budgets
from pipelines.config import to_config
from pipelines.recipes import create as create_recipe

# colored-digits at 32 px: the gray rule's colour gap is 78–93 on red backgrounds and 32–42 on green ones, so
# this threshold rejects about half of the green images and none of the red ones (measured over 30 per group).
# colored-digits' color gap (pipelines.filters.color_gap) for the optdigits-style renders: green images span
# about 18-36 (median 26-29), red ones 40-82. So 28 rejects about half of the green images and no red one;
# 37.5 rejects every green image and no red one.
HALF_OF_GREEN = 28.0
ALL_OF_GREEN = 37.5


def _config(output: Path, **extra) -> dict:
    return {"recipe": "colored-digits", "output": str(output), "budget": {"per_group": 5}, "shard_size": 4,
            "batch_size": 4, "runner": "local", "progress": False, "contact_sheet_size": 2, **extra}


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every shard and manifest-shard file: bytes and mtime (manifest.json and summaries change by design)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for folder in ("shards", "manifest") for p in sorted((root / folder).iterdir())
            if p.name != "manifest.json"}


def _ids_per_group(root: Path) -> dict[int, list[str]]:
    meta = read_metadata(str(root), accepted_only=False)
    assert meta["id"].is_unique, meta["id"][meta["id"].duplicated()].tolist()
    return {int(g): sorted(part["id"]) for g, part in meta.groupby("group")}


def test_extra_rows_follow_the_acceptance_rate_and_stop_at_the_cap():
    names = {0: "a", 1: "b", 2: "c"}
    assert extra_rows({0: 10, 1: 10}, {}, {}, 3.0, names) == {0: 10, 1: 10}  # round 0: the targets
    assert extra_rows({0: 10, 1: 10}, {0: 10, 1: 10}, {0: 10, 1: 12}, 3.0, names) == {}
    # b kept 5 of 10 (rate 0.5): 5 missing → 10 rows; c kept none: the most the cap allows (30 - 10)
    assert extra_rows({0: 10, 1: 10, 2: 10}, {0: 10, 1: 10, 2: 10}, {0: 10, 1: 5, 2: 0}, 3.0, names) == \
        {1: 10, 2: 20}
    with pytest.raises(FFRError, match=r"group 'c' has 0 of its 10 accepted images after generating 30 \(the cap "
                                       r"budget.max_factor=3 × 10 = 30\)"):
        extra_rows({2: 10}, {2: 30}, {2: 0}, 3.0, names)


def test_a_larger_budget_extends_the_output_with_new_ids_only(tmp_path):
    root = tmp_path / "out"
    first = generate(_config(root))
    assert first["complete"] and first["rounds"] == 1 and first["shards_run"] == 5
    before = _files(root)

    extended = generate(_config(root, budget={"per_group": 9}))
    assert extended["complete"] and extended["rounds"] == 2 and extended["shards_skipped"] == 5
    assert extended["accepted_per_group"] == extended["target_per_group"] == {n: 9 for n in first["target_per_group"]}
    after = _files(root)
    assert {k: after[k] for k in before} == before  # finished shards: same bytes, same mtimes
    assert sorted(set(after) - set(before)) == sorted(f"{d}/shard-{i:05d}{ext}" for d, ext in
                                                      [("manifest", ".parquet"), ("shards", ".parquet"),
                                                       ("shards", ".stats.json"), ("shards", ".tar")]
                                                      for i in range(5, 9))
    ids = _ids_per_group(root)  # unique, and group g holds exactly its first 9 ids
    assert ids == {g: [f"g{g:04d}-{k:06d}" for k in range(9)] for g in range(4)}

    # the extended output is the same data as a fresh run with the larger budget: same ids, same bytes
    fresh = tmp_path / "fresh"
    generate(_config(fresh, budget={"per_group": 9}, shard_size=16))
    a, b = ShardReader(str(root)), ShardReader(str(fresh))
    assert sorted(a.metadata["id"]) == sorted(b.metadata["id"])
    assert all(a.image_bytes(k) == b.image_bytes(k) for k in a.metadata["image_key"])

    again = generate(_config(root, budget={"per_group": 9}))  # nothing left to do
    assert again["shards_run"] == 0 and again["complete"] and _files(root) == after


@pytest.mark.slow
def test_rejected_images_are_replaced_until_every_group_reaches_its_target(ray_cluster, tmp_path):
    config = _config(tmp_path / "ray", budget={"per_group": 8}, shard_size=8, runner="ray",
                     filters={"gray_threshold": HALF_OF_GREEN}, ray={"min_actors": 1, "max_actors": 1})
    summary = generate(config)
    assert summary["complete"] and summary["rounds"] >= 2, summary
    assert summary["rejects_by_reason"]["grayscale"] >= 4  # the filter did reject, in the green groups only
    assert all(summary["accepted_per_group"][name] >= 8 for name in summary["target_per_group"]), summary
    meta = read_metadata(config["output"], accepted_only=False)
    assert meta["id"].is_unique and set(meta.loc[~meta["accepted"], "group_name"]) <= {"small (0-4)/green",
                                                                                      "large (5-9)/green"}
    red = meta[meta["group_name"].str.endswith("red")]
    assert len(red) == 16 and red["accepted"].all()  # nothing extra where nothing was rejected
    # deterministic: the in-process runner plans the same extra ids and keeps the same images
    local = generate({**config, "output": str(tmp_path / "local"), "runner": "local"})
    other = read_metadata(local["output"], accepted_only=False)
    assert dict(zip(meta["id"], meta["accepted"])) == dict(zip(other["id"], other["accepted"]))
    assert local["rounds"] == summary["rounds"]


def test_a_group_that_cannot_reach_its_target_stops_at_the_cap_with_one_line(tmp_path, capsys):
    root = tmp_path / "out"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(_config(root, filters={"gray_threshold": ALL_OF_GREEN},
                                         budget={"per_group": 4, "max_factor": 1.5})))
    assert ffr_main(["generate", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "small (0-4)/green" in err and "budget.max_factor=1.5 × 4 = 6" in err, err
    summary = json.loads((root / "summary.json").read_text())  # what was generated is kept and summarized
    assert not summary["complete"] and summary["short_per_group"] and summary["rows_done"] == summary["manifest_rows"]
    assert summary["accepted_per_group"]["small (0-4)/red"] == 4


def test_balance_prints_the_budget_block_of_the_shipped_celeba_config(capsys):
    """`ffr balance --budget-block` and `ffr generate` mean the same counts: the config holds the printed block."""
    shipped = load_config("configs/generate-ffr-celeba.yaml")
    full = "0,0=592 0,1=5335 1,0=7797 1,1=866"  # FFR's train split (its test split has 914 and 943 there)
    assert ffr_main(["balance", "--counts", full, "--bias-ratio", "0.99", "--budget-block", "--mode", "all"]) == 0
    printed = load_yaml(capsys.readouterr().out)["budget"]
    assert printed["real_counts"] == shipped["budget"]["real_counts"] and printed["mode"] == shipped["budget"]["mode"]
    cfg = to_config(shipped)
    budgets = group_budgets(create_recipe("ffr-celeba").spec(), cfg.budget)
    assert budgets == {(0, 0): 7743, (0, 1): 4480, (1, 0): 4480, (1, 1): 7718}  # usb's fill, asb/ffr's k
    kept = keep_counts({(0, 0): 592, (0, 1): 5335, (1, 0): 7797, (1, 1): 866}, 0.99)
    assert f"total {sum(budgets.values())}" in budget_block({}, kept, 0.99, "all")


def test_manifest_only_prints_the_first_round(tmp_path, capsys):
    manifest = plan(_config(tmp_path / "x"))
    assert len(manifest) == 20 and manifest["id"].is_unique and manifest["shard"].max() == 4


def test_generate_ends_with_the_output_the_contact_sheets_and_the_cumulative_count(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    root = tmp_path / "out"
    config.write_text(json.dumps(_config(root)))
    assert ffr_main(["generate", "--config", str(config)]) == 0
    assert ffr_main(["generate", "--config", str(config), "budget.per_group=6"]) == 0  # extend: 4 more images
    lines = capsys.readouterr().out.strip().splitlines()
    last = lines[lines.index(next(line for line in lines[1:] if line.startswith("this run:"))):]
    assert last[0].startswith("this run: 4 images in 1 shards") and "5 shards were already complete" in last[0]
    assert last[1].startswith("accepted: 24 images in total over 2 round(s), 0 rejected; every group has its target")
    assert last[2:6] == [f"  {name}  6 / 6" for name in ("small (0-4)/red  ", "small (0-4)/green", "large (5-9)/red  ",
                                                         "large (5-9)/green")]
    assert last[6] == f"output: {root}" and last[7] == "contact sheets (4):"
    sheets = [line.strip() for line in last[8:]]
    assert len(sheets) == 4 and all(Path(p).is_file() for p in sheets)


def test_spuco_shipped_config_plans_exactly_8_groups_of_20000():
    """Birds live on land or water, dogs indoors or outdoors: the budget covers the 8 groups SpuCo Animals has,
    not all 16 (class, background) pairs (320K images, half of them never used)."""
    from ffr.datasets import spuco_animals

    cfg = to_config(load_config("configs/generate-ffr-spuco-animals.yaml"))
    recipe = create_recipe(cfg.recipe.name, cfg.recipe.options)
    budgets = recipe.assign_budgets(group_budgets(recipe.spec(), cfg.budget), cfg.seed)
    assert budgets == {pair: 20000 for pair in spuco_animals.POPULATED_GROUPS} and len(budgets) == 8
    assert sum(budgets.values()) == 160_000
    assert (0, 2) not in budgets and (3, 1) not in budgets  # landbird indoors, big dog on water


@pytest.mark.parametrize("budget, named", [
    ({"per_group": {"0,0": 5, "0,2": 5}}, "'0,2' (landbird/indoors)"),
    ({"real_counts": {"0,0": 10000, "2,1": 500}, "mode": "ffr"}, "'2,1' (small_dog/water)"),
])
def test_a_budget_naming_a_group_the_dataset_lacks_is_one_line(budget, named, tmp_path, capsys):
    import re

    with pytest.raises(FFRError, match=re.escape(f"names group {named}, which this dataset does not have; expected "
                                                 "one of its 8 groups: 0,0 (landbird/land), 0,1 (landbird/water)")):
        group_budgets(create_recipe("ffr-spuco-animals").spec(), to_config(
            {"recipe": "ffr-spuco-animals", "output": str(tmp_path), "budget": budget}).budget)
    config = tmp_path / "c.yaml"
    config.write_text(f"recipe: ffr-spuco-animals\noutput: {tmp_path / 'out'}\nbudget: {json.dumps(budget)}\n")
    assert ffr_main(["generate", "--config", str(config), "--manifest-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not have" in err and not (tmp_path / "out").exists()
