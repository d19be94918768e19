"""The Ray-free training core: one stage in-process, the run directory contract, configs and CLI errors."""

import json
import pickle

import numpy as np
import pytest

from ffr import runs
from ffr.cli import main
from ffr.errors import FFRError
from ffr.runs import selection_score
from ffr.training.config import TrainConfig, method_stage, parse, pretrain_stage, resolved
from ffr.training.data import load_experiment_data
from ffr.training.evaluation import evaluate_checkpoint
from ffr.training.loop import save_state
from ffr.training.stage import Session, run_stage

TINY = {"dataset": "colored-digits", "backbone": "small-cnn", "backbone_options": {"width": 8}, "pretrained": None,
        "image_size": 32, "epochs": 1, "batch_size": 128, "cache_in_memory": True}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> str:
    import pipelines

    out = str(tmp_path_factory.mktemp("synthetic"))
    pipelines.generate({"recipe": "colored-digits", "output": out, "seed": 0, "budget": {"per_group": 530},
                        "shard_size": 1100, "batch_size": 256, "runner": "local", "progress": False})
    return out


def test_usb_groupdro_trains_on_real_plus_synthetic_groups_in_process(synthetic_root, tmp_path):
    cfg = parse({**TINY, "variant": "usb", "method": "groupdro", "synthetic_root": synthetic_root})
    data = load_experiment_data(cfg)
    spec = method_stage(cfg)
    train = data.stages[2].train
    assert set(train.source) == {0, 1} and data.stages[2].train_spec.with_source
    # DataLoader worker processes pickle the dataset: the mixed split's loader must survive it.
    reloaded = pickle.loads(pickle.dumps(train.load_image))
    assert reloaded(train.table["key"].iloc[-1]).size == (32, 32)
    session = KeepCheckpoints()
    records = run_stage(cfg, spec, session, run_directory=str(tmp_path), data=data)
    (record,) = records
    assert record["train_draws"] == len(train)  # one process, a plain shuffle: every example once
    draws = [record[f"train_draws_group_{g}"] for g in range(8)]  # (y, b, source) groups
    expected = np.bincount(train.groups(data.stages[2].train_spec), minlength=8)
    assert draws == expected.tolist()
    assert 0.0 <= record["val_worst_group_acc"] <= record["val_mean_group_acc"] <= 1.0
    assert {f"val_acc_group_{g}" for g in range(4)} <= set(record)
    assert runs.read_metrics(str(tmp_path)) == json.loads(json.dumps([record]))

    # The final evaluation of the epoch's checkpoint reproduces its validation numbers exactly.
    save_state(session.states[0], str(tmp_path / "ckpt"))
    out = evaluate_checkpoint(cfg, spec, str(tmp_path / "ckpt"), data=data)
    assert out["epoch"] == 1  # numbered from 1, as on the console
    for key, value in out["val"].items():
        assert key == "train_weighted_acc" or record[f"val_{key}"] == value
    assert set(out["test"]) >= {"worst_group_acc", "mean_group_acc", "overall_acc", "acc_group_3"}


class KeepCheckpoints(Session):
    def __init__(self):
        super().__init__()
        self.states = []

    def report(self, metrics, state, epoch):
        self.states.append(state)


def test_run_names_follow_the_experiment_not_the_infrastructure():
    a = parse({**TINY, "variant": "ffr", "synthetic_root": "x"})
    b = parse({**TINY, "variant": "ffr", "synthetic_root": "x", "num_workers": 4, "storage_path": "s3://b/p"})
    c = parse({**TINY, "variant": "ffr", "synthetic_root": "x", "lr": 0.1})
    assert method_stage(a).run_name == method_stage(b).run_name != method_stage(c).run_name
    d = parse({**TINY, "variant": "ffr", "synthetic_root": "x", "method": "groupdro"})
    assert pretrain_stage(a).run_name == pretrain_stage(d).run_name  # stage 1 is shared by stage-2 methods
    assert pretrain_stage(a).lr == 1e-4 and pretrain_stage(a).method == "erm"
    assert method_stage(parse({**TINY, "run_name": "mine"})).run_name == "mine"


def test_writing_out_default_options_leaves_the_run_name_unchanged():
    base = {**TINY, "variant": "ffr", "synthetic_root": "x", "method": "groupdro"}
    bare = parse(base)
    typed = parse({**base, "method_hparams": {"step_size": 0.01},  # every option at its default, written out
                   "dataset_options": {"bias_ratio": 0.95, "seed": 0, "pre_skew": 0.75, "balanced_val": True},
                   "backbone_options": {"width": 8}})
    assert method_stage(typed).run_name == method_stage(bare).run_name
    assert pretrain_stage(typed).run_name == pretrain_stage(bare).run_name
    # config.json records the effective hyperparameters, not the ones typed
    written = resolved(bare, method_stage(bare))
    assert written["method_hparams"] == {"step_size": 0.01, "adjustment": 0.0}
    assert written["dataset_options"]["pre_skew"] == 0.75 and written["backbone_options"] == {"width": 8}
    other = parse({**base, "method_hparams": {"step_size": 0.05}})
    assert method_stage(other).run_name != method_stage(bare).run_name
    assert pretrain_stage(other).run_name == pretrain_stage(bare).run_name  # stage 1 does not use them


def test_selection_prefers_best_wga_then_earliest_epoch():
    assert selection_score(0.8, 5) > selection_score(0.7, 0)
    assert selection_score(0.8, 1) > selection_score(0.8, 2)
    assert selection_score(float("nan"), 0) < selection_score(0.0, 30)


def test_resumed_epochs_replace_their_metrics_records(tmp_path):
    d = str(tmp_path)
    for epoch in (0, 1, 2, 1, 2):  # a worker died during epoch 2; the run resumed after epoch 0's checkpoint
        runs.append_metrics(d, {"stage": 2, "epoch": epoch, "train_loss": float(epoch), "x": float("nan")})
    records = runs.read_metrics(d)
    assert [r["epoch"] for r in records] == [0, 1, 2] and records[0]["x"] is None


@pytest.mark.parametrize("overrides, message", [
    (["bogus=1"], "unknown config key 'bogus'"),
    (["method=nope"], "unknown stage-2 method 'nope'"),
    (["variant=ffr"], "needs synthetic_root"),
    (["optimizer=rmsprop"], "optimizer 'rmsprop'"),
    (["backbone=vit"], "unknown backbone 'vit'"),
    (["method_hparams={step: 1}"], "unknown option 'method_hparams.step'"),
    (["epochs=-1"], "epochs = -1"),
    (["backbone_options={depth: 3}"], "unknown option 'backbone_options.depth' of backbone 'small-cnn'"),
    (["dataset_options={bias_ratio: 1.5}"], "option 'dataset_options.bias_ratio' of dataset 'colored-digits' = 1.5"),
])
def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys, overrides, message):
    config = tmp_path / "train.yaml"
    config.write_text("dataset: colored-digits\nbackbone: small-cnn\npretrained: null\n")
    assert main(["train", "--config", str(config), f"storage_path={tmp_path}", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not list(tmp_path.glob("*/ffr_result.json"))


def test_config_types_are_checked():
    with pytest.raises(FFRError, match="expected int"):
        parse({"epochs": "many"})
    assert isinstance(parse({}), TrainConfig)


def test_every_example_training_config_is_valid():
    from pathlib import Path

    import ffr.methods
    from ffr import backbones, variants
    from ffr.config import load_config
    from ffr.datasets import DATASETS

    paths = sorted(Path(__file__).parent.parent.glob("configs/train-*.yaml"))
    # every real dataset × variant. Not: synthetic (never trained alone), class-folder (the class-only mix stream),
    # d3s-shift and d3s (themselves synthetic: variant none only; d3s's config is D3S's disentanglement)
    partial = {"synthetic": set(), "class-folder": set(), "d3s-shift": {"none"}, "d3s": {"disentangle"}}
    shipped = {path.name for path in paths}
    for dataset in DATASETS.names():
        kinds = partial.get(dataset, set(variants.VARIANTS.names()))
        assert {f"train-{dataset}-{kind}.yaml" for kind in kinds} <= shipped, dataset
    for path in paths:
        cfg = parse(load_config(str(path)))
        DATASETS.get(cfg.dataset), variants.VARIANTS.get(cfg.variant), backbones.BACKBONES.get(cfg.backbone)
        ffr.methods.create(cfg.method, **cfg.method_hparams)
        assert path.name in (f"train-{cfg.dataset}-{cfg.variant}.yaml", f"train-{cfg.dataset}-{cfg.method}.yaml")
        assert (cfg.synthetic_root is None) == (cfg.variant == "none"), path
