"""One place per setting (issue 10): backend settings say how to run, the generator section and the recipe say
what to make, the run has one batch_size; every recipe and backend declares its options as an ffr.options model."""

from __future__ import annotations

import json

import pytest
import yaml

from ffr.cli import main as ffr_main
from ffr.errors import FFRError
from ffr.options import Options
from pipelines import generate
from pipelines.api import plan
from pipelines.backends import BACKENDS
from pipelines.manifest import MANIFEST_DIR
from pipelines.recipes import RECIPES, create
from pipelines.worker import ShardWorker, WorkerSettings

DIGITS = {"recipe": {"name": "colored-digits"}, "budget": {"per_group": 2}, "runner": "local", "progress": False,
          "shard_size": 4, "contact_sheet_size": 2}


@pytest.mark.parametrize("registry", [RECIPES, BACKENDS], ids=["recipes", "backends"])
def test_every_recipe_and_backend_declares_its_options(registry):
    for name in registry.names():
        entry = registry.get(name)
        assert issubclass(entry.Options, Options), name
        with pytest.raises(FFRError) as err:  # one line naming the first bad key under its config path
            registry.options(name, {"no_such_option": 1}, "x")
        assert "option 'x." in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, expected", [
    (["backend.settings={steps: 4}"], "'backend.settings.steps' is not accepted there: it is what to make, not how "
                                      "to run; set generator.steps instead"),
    (["backend.settings={width: 64}"], "set generator.width instead"),
    (["backend.settings={batch_size: 16}"], "'backend.settings.batch_size' is not accepted there: it is the run's one "
                                            "batch size; set batch_size (top level) instead"),
    (["recipe.options={guidance_scale: 2.0}"], "'recipe.options.guidance_scale' is not accepted there"),
    (["backend.settings={max_rotation: -1}"], "option 'backend.settings.max_rotation' of generator backend "
                                              "'procedural' = -1"),
    (["recipe.name=d3s-time", "recipe.options={assignment: random}"], "option 'recipe.options.assignment'"),
    (["recipe.name=d3s-time", "recipe.options={background_templates: true}"],
     "option 'recipe.options.background_templates'"),
    (["recipe.name=custom", "recipe.options={classes: [a], attributes: [b]}"],
     "option 'recipe.options.templates' of recipe 'custom' is required"),
    (["recipe.name=custom", "recipe.options={classes: [a], attributes: [b], templates: ['{class}'], "
      "negative_prompt: blurry}", "generator.negative_prompt=dark", "backend.name=procedural"],
     "'generator.negative_prompt' and 'recipe.options.negative_prompt' are both set"),
])
def test_a_setting_in_the_wrong_place_is_refused_before_anything_is_written(overrides, expected, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**DIGITS, "output": str(tmp_path / "out")}))
    assert ffr_main(["generate", "--config", str(config), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_the_one_batch_size_reaches_the_backend(tmp_path):
    worker = ShardWorker(WorkerSettings(output=str(tmp_path), backend="procedural", batch_size=5))
    assert worker.backend.batch_size == 5


def test_group_names_come_from_the_dataset_definitions():
    from ffr.datasets import celeba_hq, spuco_animals, utk_face

    for recipe, reader in (("ffr-celeba", celeba_hq), ("ffr-utkface", utk_face), ("ffr-spuco-animals", spuco_animals)):
        spec = create(recipe).spec()
        assert (spec.class_names, spec.bias_names) == (reader.CLASS_NAMES, reader.BIAS_NAMES)
    celeba = plan({"recipe": "ffr-celeba", "output": "x", "budget": {"per_group": 1}})
    assert list(celeba.group_name) == ["not Smiling/Female", "not Smiling/Male", "Smiling/Female", "Smiling/Male"]


def test_an_output_recorded_before_the_settings_moved_still_resumes(tmp_path):
    """Outputs written before issue 10 recorded backend.settings.{steps, batch_size...}, which never changed an
    image (rows carried what to make) or moved: a rerun with the corrected config is not refused."""
    out = str(tmp_path / "out")
    assert generate({**DIGITS, "output": out})["complete"]
    info_path = tmp_path / "out" / MANIFEST_DIR / "manifest.json"
    info = json.loads(info_path.read_text())
    info["identity"].update({"backend.settings.steps": 4, "backend.settings.guidance_scale": 0.0,
                             "backend.settings.batch_size": 16})
    info_path.write_text(json.dumps(info))
    summary = generate({**DIGITS, "output": out})
    assert summary["complete"] and summary["shards_run"] == 0 and summary["shards_skipped"] == 2
    info["identity"]["seed"] = 5  # a real difference is still refused
    info_path.write_text(json.dumps(info))
    with pytest.raises(FFRError, match="seed: 5 → 0"):
        generate({**DIGITS, "output": out})


def test_show_config_lists_the_chosen_recipe_and_backend_options(capsys):
    assert ffr_main(["generate", "--config", "configs/generate-custom.yaml", "--show-config"]) == 0
    rows = {line[2:].split()[0]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows["backend.settings.dtype"].split()[1:] == ['"fp16"', '"fp16"']
    assert rows["backend.settings.model"].startswith("*") and "(required)" in rows["backend.settings.model"]
    assert rows["recipe.options.gray_threshold"].startswith(" ") and "recipe.options.templates" in rows
    assert "backend.settings" not in rows and "recipe.options" not in rows  # the mappings, one row per option
    assert ffr_main(["generate", "--show-config", "recipe=colored-digits"]) == 0
    rows = {line[2:].split()[0]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert "backend.settings.max_rotation" in rows and "backend.settings.noise" in rows  # the recipe's backend
