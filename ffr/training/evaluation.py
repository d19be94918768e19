"""Final evaluation of a chosen checkpoint (Ray-free): val and test per-group metrics, DFR, JTT's error set.

Features for DFR are extracted once per split from the selected model; DFR then replaces the last layer
with ``ffr.methods.dfr``'s averaged logistic-regression head fit on validation features.
"""

from __future__ import annotations

import numpy as np
import torch

import ffr.methods
from ffr.backbones import create_backbone
from ffr.metrics import group_counts_of, summarize
from ffr.training import loop
from ffr.training.config import StageSpec, TrainConfig
from ffr.training.data import ExperimentData
from ffr.training.stage import EVAL_BATCH


def _model(cfg: TrainConfig, n_classes: int, state: dict, device: torch.device):
    model = create_backbone(cfg.backbone, n_classes, pretrained=None, **cfg.backbone_options)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _features(model, split, cfg: TrainConfig, device) -> np.ndarray:
    dataset = loop.image_dataset(split, cfg.image_size)
    feats, _ = loop.extract_features(model, loop.loader(dataset, EVAL_BATCH), device)
    return feats


def _predictions(model, split, cfg: TrainConfig, device, spec=None) -> np.ndarray:
    dataset = loop.image_dataset(split, cfg.image_size, spec)
    preds, _ = loop.predict(model, loop.loader(dataset, EVAL_BATCH), device)
    return preds


def evaluate_checkpoint(cfg: TrainConfig, spec: StageSpec, checkpoint_dir: str, device: torch.device | None = None,
                        *, data: ExperimentData) -> dict:
    """{"epoch", "val", "test"} (ffr.metrics.summarize dicts), "group_sizes" ({split: {group: n}}, real
    training data); with DFR also "base_val"/"base_test" (the
    backbone's own head) and "dfr" details — "val"/"test" are then the DFR head's."""
    device = device or torch.device("cpu")
    state = loop.load_state(checkpoint_dir)
    model = _model(cfg, data.val.spec.n_classes, state, device)
    train_counts = group_counts_of(data.real["train"].groups())
    val, test = data.val, data.test
    out = {"epoch": state.get("epoch"),
           "val": summarize(_predictions(model, val, cfg, device), val.y, val.groups(), train_counts),
           "test": summarize(_predictions(model, test, cfg, device), test.y, test.groups(), train_counts),
           # how many examples each accuracy is over: a 50 % on 4 images is not a 50 % on 400
           "group_sizes": {"train": {str(g): int(n) for g, n in sorted(train_counts.items())},
                           "val": {str(g): int(n) for g, n in sorted(group_counts_of(val.groups()).items())},
                           "test": {str(g): int(n) for g, n in sorted(group_counts_of(test.groups()).items())}}}
    if spec.method == "dfr":
        method = ffr.methods.create("dfr", **spec.method_hparams)
        train_f, val_f, test_f = (_features(model, s, cfg, device) for s in (data.real["train"], val, test))
        head = method.fit_last_layer(val_f, val.y, val.groups(), np.random.default_rng([cfg.seed, 3]),
                                     scaler_features=train_f)
        out["base_val"], out["base_test"] = out["val"], out["test"]
        out["val"] = summarize(head.predict(val_f), val.y, val.groups(), train_counts)
        out["test"] = summarize(head.predict(test_f), test.y, test.groups(), train_counts)
        out["dfr"] = {"best_c": head.best_c, "n_refits": int(method.config["n_refits"])}
    return out


def misclassified(cfg: TrainConfig, spec: StageSpec, checkpoint_dir: str, device: torch.device | None = None,
                  *, data: ExperimentData) -> np.ndarray:
    """JTT's error set: a boolean mask over the stage's training set, True where the model is wrong."""
    device = device or torch.device("cpu")
    train = data.stages[spec.stage].train
    model = _model(cfg, data.val.spec.n_classes, loop.load_state(checkpoint_dir), device)
    return _predictions(model, train, cfg, device) != train.y
