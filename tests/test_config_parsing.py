"""Config parsing: YAML 1.2 floats everywhere (files and key=value overrides), and ``--show-config``."""

from __future__ import annotations

import re

import pytest

from ffr.cli import main as ffr_main
from ffr.config import build, load_config, load_yaml, parse_overrides
from ffr.training.config import TrainConfig
from pipelines.config import to_config
from tune.sweep import parse_sweep


@pytest.mark.parametrize("text, value", [
    ("1e-4", 1e-4), ("3E-4", 3e-4), (".5", 0.5), ("-.5", -0.5), ("1.0e-05", 1e-5), ("1e4", 1e4), ("+2.5E+3", 2500.0),
    ("10", 10), ("1_000", 1000), ("-3", -3), ("1e", "1e"), ("e4", "e4"), ("1.2.3", "1.2.3"), ("0.1.0", "0.1.0"),
])
def test_numbers_parse_as_yaml_1_2_numbers(text, value):
    for parsed in (load_yaml(f"x: {text}")["x"], parse_overrides([f"x={text}"])["x"]):
        assert parsed == value and type(parsed) is type(value), (text, parsed)


def test_floats_in_files_and_overrides_reach_every_config_module(tmp_path):
    train = tmp_path / "train.yaml"
    train.write_text("lr: 3e-4\nweight_decay: 1E-5\nstage1: {lr: .5}\n")
    cfg = build(TrainConfig, load_config(train, ["momentum=.9", "stage1.weight_decay=1e-4"]))
    assert (cfg.lr, cfg.weight_decay, cfg.stage1.lr) == (3e-4, 1e-5, .5)
    assert (cfg.momentum, cfg.stage1.weight_decay) == (.9, 1e-4)

    generate = tmp_path / "generate.yaml"
    generate.write_text("recipe: colored-digits\noutput: /tmp/x\nbudget: {per_group: 2, max_factor: 2e0}\n"
                        "filters: {gray_threshold: 5e-1}\n")
    gcfg = to_config(load_config(generate, ["filters.clip_threshold=2.5E1", "ray.num_cpus_per_actor=.5"]))
    assert (gcfg.budget.max_factor, gcfg.filters.gray_threshold, gcfg.filters.clip_threshold,
            gcfg.ray.num_cpus_per_actor) == (2.0, 0.5, 25.0, 0.5)

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("methods: [erm]\ntrain: {lr: 1e-3}\nsearch: {lr: [loguniform, 3e-4, 3E-3]}\n")
    scfg = parse_sweep(load_config(sweep, ["train.weight_decay=1e-5"]))
    assert scfg.search["lr"] == ["loguniform", 3e-4, 3e-3] and scfg.train == {"lr": 1e-3, "weight_decay": 1e-5}


def _rows(out: str) -> dict[str, tuple[str, str, str]]:
    """key → (mark, default, value) from the --show-config table (columns are two or more spaces apart; an
    option's description, when there is one, follows the value)."""
    rows = {}
    for line in out.splitlines()[1:-1]:
        mark, columns = line[0], re.split(r" {2,}", line[2:].strip())
        rows[columns[0]] = (mark, columns[1], columns[2])
    return rows


def test_show_config_lists_every_key_with_default_and_value(capsys):
    assert ffr_main(["train", "--config", "configs/train-colored-digits-ffr.yaml", "--show-config",
                     "stage1.lr=1e-4"]) == 0
    rows = _rows(capsys.readouterr().out)
    # stage1's default is StageOptions(lr=1e-4): setting that value is no change, and nothing else is marked
    assert rows["stage1.lr"] == (" ", "0.0001", "0.0001") and rows["lr"] == (" ", "0.001", "0.001")
    assert rows["stage1.epochs"] == ("*", "null", "4") and rows["stage1.optimizer"] == (" ", "null", "null")
    assert ffr_main(["train", "--show-config"]) == 0  # nothing set: nothing marked
    assert [k for k, (mark, *_) in _rows(capsys.readouterr().out).items() if mark == "*"] == []
    assert rows["backbone"] == ("*", '"resnet50"', '"small-cnn"') and "fault_injection" in rows
    assert len(rows) >= 30  # every field, the nested stage1.* included
    # the chosen dataset's and backbone's own options, with their defaults, in place of the mapping's one row
    assert rows["dataset_options.bias_ratio"] == (" ", "0.95", "0.95") and "dataset_options" not in rows
    assert rows["dataset_options.pre_skew"] == (" ", "0.75", "0.75") and rows["backbone_options.width"][1] == "32"

    assert ffr_main(["generate", "--config", "configs/generate-colored-digits.yaml", "--show-config"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["budget.per_group"] == ("*", "null", "500") and rows["budget.max_factor"] == (" ", "3.0", "3.0")
    assert rows["recipe.name"] == ("*", '""', '"colored-digits"') and "ray.max_actors" in rows

    assert ffr_main(["sweep", "--config", "configs/sweep-colored-digits.yaml", "--show-config",
                     "train.lr=3E-4"]) == 0
    out = capsys.readouterr().out
    sweep, train = out.split("\n\n")
    assert _rows(sweep)["scheduler.grace_period"] == ("*", "1", "2")
    assert _rows(train)["train.lr"] == ("*", "0.001", "0.0003")  # the base training config every trial gets
    assert "train.dataset_options.balanced_val" in _rows(train)


def test_show_config_redacts_secrets(capsys):
    assert ffr_main(["generate", "--show-config", "recipe=colored-digits",
                     "backend.settings={model: x, hub_token: abc123}"]) == 0
    out = capsys.readouterr().out
    assert "abc123" not in out and "<redacted>" in out
