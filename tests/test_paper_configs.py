"""The shipped paper configs (FFR's three datasets, D3S) as a paid GPU cluster gets them: nothing starts a cluster
job that would silently train from random init."""

from __future__ import annotations

import glob

import pytest
import torch

from ffr.cli import main as ffr_main
from ffr.config import load_config

PAPER_TRAIN = sorted(p for p in glob.glob("configs/train-*.yaml") if load_config(p).get("pretrained") == "imagenet")


def test_every_paper_train_config_uses_imagenet_weights():
    names = {p.split("/")[-1] for p in PAPER_TRAIN}
    assert {f"train-{d}-{v}.yaml" for d in ("celeba-hq", "utk-face", "spuco-animals")
            for v in ("none", "usb", "asb", "ffr")} <= names


@pytest.fixture
def no_weights_and_no_ray(tmp_path, monkeypatch):
    """An empty torch hub cache, and Ray that fails the test if anything starts it."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty-hub"))

    def ray_started(*args, **kwargs):
        raise AssertionError("Ray started before the missing weights were reported")

    import ray

    import ffr.ray_session

    monkeypatch.setattr(ffr.ray_session, "ensure_ray", ray_started)
    monkeypatch.setattr(ray, "init", ray_started)


@pytest.mark.parametrize("config", PAPER_TRAIN)
def test_missing_imagenet_weights_stop_a_paper_config_before_ray(config, no_weights_and_no_ray, capsys):
    assert ffr_main(["train", "--config", config]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "resnet50-0676ba61.pth" in err and "not in the torch hub cache" in err
    assert "s3:// copy" in err and "pretrained=null" in err


@pytest.mark.parametrize("sweep", ["sweep-ablation-quality-celeba-hq.yaml", "sweep-ablation-size-celeba-hq.yaml"])
def test_missing_imagenet_weights_stop_a_paper_sweep_before_ray(sweep, no_weights_and_no_ray, capsys):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    config = repo / "configs" / sweep
    assert ffr_main(["sweep", "--config", str(config),
                     f"train_config={repo / load_config(str(config))['train_config']}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "resnet50-0676ba61.pth" in err, err
