"""The data side of D3S's disentanglement and spurious-correlation experiments: D3S's background assignment,
the held-out protocol of ``d3s-shift``, the ImageNet-layout class folder (local and S3) and the class-only
stream travelling through the run's plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pipelines
from ffr.d3s.embedded import generation_config, write_foregrounds
from ffr.datasets import create
from ffr.datasets.d3s_splits import held_out, read_view, write_splits
from ffr.errors import FFRError
from ffr.storage import filesystem

D3S_MAP = {"dog": "forest", "bird": "night", "vehicle": "sand", "reptile": "cave", "carnivore": "road",
           "insect": "snow", "instrument": "rain", "primate": "water", "fish": "grass"}


@pytest.fixture(scope="module")
def digits_d3s(tmp_path_factory) -> str:
    """Embedded D3S: 10 digits × 10 backgrounds × 2 images (class indices 0-9: ImageNet's fish and birds)."""
    root = tmp_path_factory.mktemp("d3s")
    fg = write_foregrounds(root, per_class=2, size=32)
    out = str(root / "d3s")
    pipelines.generate(generation_config(out, fg, per_group=2, templates=1, size=32, runner="local", shard_size=100))
    return out


def test_cli_assignment_gives_d3s_superclass_to_background_map(digits_d3s, capsys):
    from ffr.cli import main

    assert main(["d3s", "splits", digits_d3s, "--assignment", "2,8,4,9,1,6,7,3,0"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["assigned_background"] == D3S_MAP and record["unused_backgrounds"] == ["indoors"]
    assert record["name"] == "imagenet9-2-8-4-9-1-6-7-3-0" and record["draw"] == "explicit"
    assert record["assignment"] == [2, 8, 4, 9, 1, 6, 7, 3, 0]
    on_disk = json.loads(Path(digits_d3s, "splits", record["name"], "split.json").read_text())
    assert on_disk["assigned_background"] == D3S_MAP
    correlated, _ = read_view(digits_d3s, record["name"], "correlated")  # digits 0-6 are fish, 7-9 birds
    assert set(zip(correlated["superclass_name"], correlated["bias_name"])) == {("fish", "grass"), ("bird", "night")}

    # The seeded draw: D3S's (np.random.seed(0); np.random.choice(10, 9, replace=False)) and ffr's own.
    assert main(["d3s", "splits", digits_d3s, "--draw", "d3s", "--seed", "0"]) == 0
    legacy = json.loads(capsys.readouterr().out)
    assert legacy["assigned_background"] == D3S_MAP and legacy["name"] == "imagenet9-d3s-seed0"
    assert write_splits(digits_d3s, seed=0)["assignment"] == [9, 5, 0, 7, 8, 6, 2, 1, 4]

    assert main(["d3s", "splits", digits_d3s, "--assignment", "2,8,4,9,1,6,7,3,3"]) == 2
    assert "repeats a background" in capsys.readouterr().err
    assert main(["d3s", "splits", digits_d3s, "--assignment", "2,8"]) == 2
    err = capsys.readouterr().err
    assert "has 2 entries" in err and "9 super-classes" in err and "Traceback" not in err


def test_d3s_shift_selects_on_held_out_correlated_and_tests_on_anti_correlated(digits_d3s, tmp_path):
    mapping = tmp_path / "identity.json"
    mapping.write_text(json.dumps({"names": [str(i) for i in range(10)], "classes": {str(i): i for i in range(10)}}))
    write_splits(digits_d3s, mapping=str(mapping), name="digits", assignment=list(range(10)))
    splits = create("d3s-shift", root=digits_d3s, split="digits", held_out_fraction=0.5)
    correlated, _ = read_view(digits_d3s, "digits", "correlated")
    anti, _ = read_view(digits_d3s, "digits", "anti-correlated")
    ids = {name: set(split.table["id"]) for name, split in splits.items()}
    assert ids["train"] | ids["val"] == set(correlated["id"]) and not ids["train"] & ids["val"]
    assert ids["test"] <= set(anti["id"]) and not ids["test"] & (ids["train"] | ids["val"])
    for name in ("train", "val"):  # train and selection: every image on its class's own background
        assert (splits[name].b == splits[name].y).all()
    assert (splits["test"].b != splits["test"].y).all() and len(splits["test"]) > 0
    # held out = the d3s reader's rule: a model trained with the same seed and share never saw val or test
    assert ids["val"] == set(correlated["id"][held_out(correlated["id"], 0, 0.5)])
    assert ids["test"] == set(anti["id"][held_out(anti["id"], 0, 0.5)])
    d3s = create("d3s", root=digits_d3s, val_fraction=0.5)
    assert not set(d3s["train"].table["id"]) & (ids["val"] | ids["test"])

    old = create("d3s-shift", root=digits_d3s, split="digits", validation="anti-correlated")
    assert set(old["val"].table["id"]) | set(old["test"].table["id"]) == set(anti["id"])  # the earlier protocol


def test_shipped_d3s_shift_config_never_selects_on_the_test_view():
    from ffr.config import load_config

    config = load_config("configs/train-d3s-shift-none.yaml")
    assert config["dataset"] == "d3s-shift"
    assert config["dataset_options"].get("validation", "correlated") == "correlated"


def test_class_folder_reader_indices_from_sorted_folders_or_a_class_table(tmp_path, s3_bucket):
    from tests.dataset_fixtures import build_class_folder

    options = build_class_folder(tmp_path, per_class=2)
    root = Path(options["root"])
    splits = create("class-folder", root=str(root))
    train = splits["train"]
    assert len(train) == 6 and not len(splits["val"]) and train.spec.bias_names == ("unlabelled",)
    assert train.spec.class_names == ("n01440764", "n01443537", "n01484850")
    assert dict(zip(train.table["key"].str.split("/").str[0], train.y)) == {"n01440764": 0, "n01443537": 1,
                                                                             "n01484850": 2}
    table = tmp_path / "classes.tsv"  # a class table: the root holds only some of its classes
    table.write_text("index\twnid\tname\n0\tn00000000\tzero\n1\tn01440764\ttench\n2\tn01443537\tgoldfish\n"
                     "3\tn01484850\tshark\n")
    indexed = create("class-folder", root=str(root), classes=str(table))["train"]
    assert indexed.spec.class_names == ("zero", "tench", "goldfish", "shark")
    assert sorted(set(indexed.y)) == [1, 2, 3]

    s3_root = f"{s3_bucket}/imagenet/train"
    fs, inner = filesystem(s3_root)
    fs.put(str(root) + "/", inner, recursive=True)
    remote = create("class-folder", root=s3_root)["train"]
    assert remote.table["key"].tolist() == train.table["key"].tolist() and np.array_equal(remote.y, train.y)
    assert remote.load_image(remote.table["key"].iloc[0]).size == (8, 8)

    (tmp_path / "empty").mkdir()
    with pytest.raises(FFRError, match="no images in class folders"):
        create("class-folder", root=str(tmp_path / "empty"))


def test_the_class_only_stream_travels_through_the_plan(digits_d3s, tmp_path):
    from ffr.training import plan
    from ffr.training.config import parse
    from ffr.training.data import load_experiment_data
    from tests.dataset_fixtures import build_class_folder

    folder = tmp_path / "plain"
    for c in range(10):  # the digits' class indices 0-9, as sorted folder names digit0..digit9
        (folder / f"digit{c}").mkdir(parents=True)
        from PIL import Image

        Image.new("RGB", (8, 8), (20 * c, 0, 0)).save(folder / f"digit{c}" / "a.png")
    config = {"dataset": "d3s", "dataset_options": {"root": digits_d3s, "val_fraction": 0.5},
              "method": "disentangle", "mix": {"dataset": "class-folder", "dataset_options": {"root": str(folder)},
                                                "batch_size": 4}}
    data = load_experiment_data(parse(config))
    assert len(data.mix) == 10 and data.mix.spec.n_classes == 10
    path = plan.write_plan(str(tmp_path / "run"), data, 2)
    back = plan.read_plan(path)
    assert back.mix.table["key"].tolist() == data.mix.table["key"].tolist()
    assert back.mix.load_image(back.mix.table["key"].iloc[3]).size == (8, 8)
    assert len(back.stages[2].train) == len(data.stages[2].train)

    three = build_class_folder(tmp_path / "three")
    with pytest.raises(FFRError, match="has 3 classes but 'd3s' has 10"):
        load_experiment_data(parse({**config, "mix": {"dataset": "class-folder", "dataset_options": three}}))
    with pytest.raises(FFRError, match="method 'groupdro' cannot train on mixed batches"):
        parse({**config, "method": "groupdro"})
