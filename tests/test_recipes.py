"""Recipes → manifest (no Ray, no model): group counts, ids, seeds, prompts, guides, budgets, clear errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from ffr.balance import synthetic_counts
from ffr.cli import main as ffr_main
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from pipelines.api import plan
from pipelines.guides import make_guide
from pipelines.manifest import row_seed
from pipelines.recipes import RECIPES, create


def _image_folders(root, names, n=2, size=(40, 30)):
    rng = np.random.default_rng(0)
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")
    return str(root)


BACKGROUNDS = ["grass", "road", "forest", "water", "sand", "indoors", "snow", "rain", "night", "cave"]


@pytest.fixture()
def d3s_folders(tmp_path):
    fg = _image_folders(tmp_path / "imagenet", ["7", "388"])
    bg = _image_folders(tmp_path / "backgrounds", BACKGROUNDS, size=(50, 60))
    return fg, bg


def _options(name: str, folders) -> dict:
    if name == "d3s-background":
        return {"classes": [7, 388], "foreground_root": folders[0], "background_root": folders[1]}
    if name.startswith("d3s-") and name != "d3s-background-templates":
        return {"classes": [7, 388]}
    if name == "custom":
        return {"classes": ["cat", "dog", "fox"], "attributes": ["day", "night"],
                "templates": ["a photo of {class} at {attribute}"], "class_phrases": {"dog": ["a beagle", "a pug"]}}
    return {}


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_builds_a_balanced_manifest(name, d3s_folders):
    recipe = create(name, _options(name, d3s_folders))
    spec = recipe.spec()
    per_group = 3
    df = plan({"recipe": {"name": name, "options": _options(name, d3s_folders)}, "output": "unused",
               "budget": {"per_group": per_group}, "shard_size": 5, "seed": 1})
    groups = [spec.group_id(y, b) for y, b in spec.pairs()]  # the dataset's groups (SpuCo: 8 of 16 pairs)
    assert len(df) == len(groups) * per_group
    assert Counter(df["group"]) == {g: per_group for g in groups}
    assert df["id"].is_unique and df["seed"].is_unique
    assert (df["group"] == df["y"] * spec.n_bias + df["b"]).all()
    assert list(df["class_name"]) == [spec.class_names[y] for y in df["y"]]
    assert list(df["bias_name"]) == [spec.bias_names[b] for b in df["b"]]
    assert list(df["seed"]) == [row_seed(1, i) for i in df["id"]]
    assert df["prompt"].str.len().min() > 5 and not df["prompt"].str.contains(r"\bin in\b").any()
    assert list(df["shard"]) == [i // 5 for i in range(len(df))]
    # interleaved: the first n_groups rows cover every group once, so a partial run stays balanced
    assert set(df["group"][: len(groups)]) == set(groups)
    # the same config gives the same manifest; another run seed gives other seeds
    again = plan({"recipe": {"name": name, "options": _options(name, d3s_folders)}, "output": "unused",
                  "budget": {"per_group": per_group}, "shard_size": 5, "seed": 1})
    pd.testing.assert_frame_equal(df, again)
    if name == "d3s-background":
        assert (df["mode"] == "img2img").all() and (df["strength"] == 0.9).all() and (df["guidance_scale"] == 5).all()
        assert all(f"/imagenet/{[7, 388][y]}/" in p for y, p in zip(df["y"], df["guide_foreground"]))
        assert all(f"/backgrounds/{BACKGROUNDS[b]}/" in p for b, p in zip(df["b"], df["guide_background"]))


def test_spuco_animals_prompts_use_each_class_breeds():
    """The seed's bug: every class was prompted with waterbird breeds. Each class now uses its own list."""
    recipe = create("ffr-spuco-animals")
    df = plan({"recipe": "ffr-spuco-animals", "output": "unused", "budget": {"per_group": 30}})
    for y, name in enumerate(recipe.spec().class_names):
        breeds = recipe.breeds[name]
        prompts = df.loc[df["y"] == y, "prompt"]
        assert all(any(f"a photo of {breed} " in p for breed in breeds) for p in prompts), name
    assert df.loc[df["bias_name"] == "indoors", "prompt"].str.contains("indoors|in the|on the|under the").all()


def test_face_and_d3s_prompts_follow_the_papers():
    celeba = plan({"recipe": "ffr-celeba", "output": "x", "budget": {"per_group": 4}})
    assert set(celeba.loc[(celeba.y == 1) & (celeba.b == 1), "prompt"]) == {"a headshot of Male celebrity Smiling"}
    assert set(celeba.loc[(celeba.y == 0) & (celeba.b == 0), "prompt"]) <= {
        "a headshot of Female celebrity with serious face", "a headshot of Female celebrity with straight face"}
    utk = plan({"recipe": "ffr-utkface", "output": "x", "budget": {"per_group": 8}})
    assert utk.loc[utk.b == 0, "prompt"].str.match(r"a headshot of a human (Male|Female) in their \w+ties$").all()
    assert utk.loc[(utk.y == 1) & (utk.b == 1), "prompt"].str.startswith("a headshot of a human Female ").all()
    time = plan({"recipe": {"name": "d3s-time", "options": {"classes": [1], "definitions": False}}, "output": "x",
                 "budget": {"per_group": 1}})
    assert set(time["prompt"]) >= {"an old color photo of a goldfish, from the 1800s",
                                   "a futuristic color photo of a goldfish, from the 2200s"}


def test_ffr_recipes_use_the_real_readers_group_indices():
    """Synthetic and real rows are mixed by (y, b): each FFR recipe's spec must equal its real dataset's."""
    from ffr import colored_digits
    from ffr.datasets import spuco_animals, utk_face

    assert create("ffr-utkface").spec() == GroupSpec(utk_face.CLASS_NAMES, utk_face.BIAS_NAMES)
    assert create("ffr-spuco-animals").spec() == GroupSpec(spuco_animals.CLASS_NAMES, spuco_animals.BIAS_NAMES,
                                                           populated=spuco_animals.POPULATED_GROUPS)
    assert len(create("ffr-spuco-animals").spec().pairs()) == 8  # of 16 (class, background) pairs
    assert create("ffr-celeba").spec() == GroupSpec(("not Smiling", "Smiling"), ("Female", "Male"))  # celeba_hq
    assert create("colored-digits").spec() == colored_digits.SPEC


def test_d3s_prompt_carries_the_class_definition_and_background():
    df = plan({"recipe": {"name": "d3s-background", "options": {"classes": [1, 134]}}, "output": "x",
               "budget": {"per_group": 1}})
    prompts = dict(zip(zip(df["class_index"], df["bias_name"]), df["prompt"]))
    assert prompts[(1, "grass")] == ("a photo of a goldfish, small golden or orange-red freshwater fishes of Eurasia "
                                     "used as pond or aquarium fishes, on grass")
    assert prompts[(134, "cave")].startswith("a photo of a crane, large long-necked wading bird")  # D3S's gloss fixed
    assert prompts[(134, "cave")].endswith(", in a cave")
    assert set(df["wnid"]) == {"n01443537", "n02012849"}
    bare = plan({"recipe": {"name": "d3s-background", "options": {"classes": [1], "definitions": False}},
                 "output": "x", "budget": {"per_group": 1}})
    assert bare["prompt"].iloc[0] == "a photo of a goldfish, on grass"


def test_d3s_class_table_is_imagenet_in_wnid_order():
    from pipelines.recipes.class_table import load_class_table

    table = load_class_table()
    assert len(table) == 1000 and list(table.wnids) == sorted(table.wnids)
    assert (table.wnids[0], table.names[0]) == ("n01440764", "tench") and all(table.definitions)


def test_d3s_stratified_cells_are_equal_and_uniform_draws_backgrounds_per_image():
    options = {"classes": list(range(20))}
    strat = plan({"recipe": {"name": "d3s-background", "options": options}, "output": "x",
                  "budget": {"per_group": 7}, "seed": 3})
    assert set(Counter(zip(strat["y"], strat["b"])).values()) == {7} and len(strat) == 20 * 10 * 7
    uni = plan({"recipe": {"name": "d3s-background", "options": {**options, "assignment": "uniform"}},
                "output": "x", "budget": {"per_group": 7}, "seed": 3})
    cells = Counter(zip(uni["y"], uni["b"]))
    assert Counter(uni["y"]) == Counter(strat["y"])  # each class keeps its 70 images
    assert len(set(cells.values())) > 3  # backgrounds drawn per image: unequal cells
    assert uni["id"].is_unique


def test_budgets_from_real_counts_follow_ffr_rule():
    real = {(0, 0): 100, (0, 1): 10, (1, 0): 7, (1, 1): 90}
    df = plan({"recipe": "colored-digits", "output": "x",
               "budget": {"real_counts": {f"{y},{b}": n for (y, b), n in real.items()}, "mode": "usb"}})
    want = synthetic_counts(real, "usb")
    assert dict(Counter(zip(df.y, df.b))) == {g: n for g, n in want.items() if n}
    explicit = plan({"recipe": "colored-digits", "output": "x", "budget": {"per_group": {"0,1": 4, "1,0": 2}}})
    assert dict(Counter(zip(explicit.y, explicit.b))) == {(0, 1): 4, (1, 0): 2}


def test_guide_is_seeded_and_pastes_the_foreground(d3s_folders):
    fg, bg = d3s_folders
    args = (f"{fg}/7/0.JPEG", f"{bg}/grass/1.JPEG")
    a, b, c = make_guide(*args, seed=5, size=64), make_guide(*args, seed=5, size=64), make_guide(*args, seed=6, size=64)
    assert a.size == (64, 64) and np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))  # another seed, another position
    # a 0.4 × side square of the image equals the resized foreground
    fg_side = round(0.4 * 64)
    diff = np.asarray(a, dtype=int) - np.asarray(make_guide(args[1], args[1], seed=5, size=64), dtype=int)
    ys, xs = np.nonzero(np.abs(diff).sum(axis=2))
    assert ys.max() - ys.min() < fg_side and xs.max() - xs.min() < fg_side


def _cli(argv, capsys):
    code = ffr_main(["generate", *argv])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv, expected", [
    (["recipe.name=no-such-recipe"], "unknown recipe 'no-such-recipe'"),
    (["recipe.name=colored-digits", "budget.per_grup=3"], "unknown config key 'budget.per_grup'"),
    (["recipe.name=colored-digits", "budget.per_group=-1"], "budget.per_group = -1"),
    (["recipe.name=colored-digits", "image_format=tiff"], "image_format"),
    (["recipe.name=colored-digits"], "exactly one of 'per_group'"),
    (["recipe.name=d3s-background", "recipe.options.foreground_root=/nonexistent/fg",
      "recipe.options.background_root=/nonexistent/bg", "budget.per_group=1"], "'/nonexistent/fg' does not exist"),
    (["recipe.name=d3s-background", "recipe.options.foreground_root=/tmp", "budget.per_group=1"],
     "need both recipe.options.foreground_root and background_root"),
    (["recipe.name=custom", "recipe.options.classes=[a]", "recipe.options.attributes=[b]",
      "recipe.options.templates=['{klass} {attribute}']", "budget.per_group=1"], "uses ['klass']"),
    (["recipe.name=custom", "recipe.options.file=/nonexistent.yaml", "budget.per_group=1"], "does not exist"),
    (["recipe.name=colored-digits", "budget.per_group=1", "generator.mode=img2img"], "needs guide images"),
])
def test_bad_input_is_one_clear_line(argv, expected, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "runner": "local"}))
    code, err = _cli(["--config", str(config), *argv], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("ffr generate: error: ") and expected in err, err


def test_missing_and_malformed_config_files(tmp_path, capsys):
    assert _cli(["--config", str(tmp_path / "nope.yaml")], capsys) == (2, f"ffr generate: error: config file "
                                                                       f"'{tmp_path / 'nope.yaml'}' does not exist")
    (tmp_path / "bad.yaml").write_text("recipe: [unclosed")
    code, err = _cli(["--config", str(tmp_path / "bad.yaml")], capsys)
    assert code == 2 and "is not valid YAML" in err and len(err.splitlines()) == 1


def test_a_different_run_on_the_same_output_is_refused_and_nothing_changes(tmp_path, capsys):
    out = tmp_path / "out"
    base = {"recipe": "colored-digits", "output": str(out), "budget": {"per_group": 3}, "runner": "local",
            "progress": False, "shard_size": 4}
    from pipelines import generate

    assert generate(base)["complete"]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    with pytest.raises(FFRError) as err:  # the message names every key that differs, old → new
        generate({**base, "seed": 2, "generator": {"height": 48}, "budget": {"per_group": 4}, "shard_size": 2})
    message = str(err.value)
    assert "\n" not in message and "seed: 0 → 2" in message and "generator.height: 32 → 48" in message, message
    assert "budget" not in message.split("(")[1].split(")")[0] and "shard_size:" not in message  # those may change
    with pytest.raises(FFRError, match=r"targets 3 accepted images for group 'small \(0-4\)/red'.* asks for 2"):
        generate({**base, "budget": {"per_group": 2}})  # an output only grows
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("config", sorted(str(p) for p in Path("configs").glob("generate-*.yaml")))
def test_example_configs_build(config, capsys):
    """Every shipped example config is valid (manifest only, small budget; paths of img2img guides aside)."""
    argv = ["--config", config, "--manifest-only", "budget.per_group=2", "budget.real_counts=null"]
    if "d3s" in config:
        argv += ["recipe.options.classes=[0, 1]", "recipe.options.foreground_root=null",
                 "recipe.options.background_root=null", "recipe.options.background_templates=0"]
    assert ffr_main(["generate", *argv]) == 0
    lines = dict(line.split("\t", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert all(v == "2" for k, v in lines.items() if k != "total") and len(lines) > 4


def test_cli_generates_and_resumes_in_process(tmp_path, capsys):
    """``ffr generate`` with the shipped colored-digits config (local runner: no Ray), then a no-op rerun."""
    argv = ["generate", "--config", "configs/generate-colored-digits.yaml", f"output={tmp_path / 'out'}",
            "budget.per_group=5", "shard_size=8", "runner=local", "progress=false"]
    assert ffr_main([*argv, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["complete"] and first["accepted"] == 20 and first["shards_run"] == 3
    assert ffr_main([*argv, "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["shards_run"] == 0 and second["shards_skipped"] == 3 and second["accepted"] == 20
    assert len(list((tmp_path / "out" / "contact_sheets").glob("*.png"))) == 4
