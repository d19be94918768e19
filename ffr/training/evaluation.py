"""Final evaluation of a chosen checkpoint (Ray-free): val and test per-group metrics, a method's post-fit
step on features, and a preliminary run's predictions on its training set.

A method that fits on features (``Method.fit_on_features``, e.g. DFR's last-layer retraining) gets the
selected model's penultimate features of the real train/val/test splits, extracted once per split; its head
then gives the val/test numbers and the model's own head's are kept as ``base_val``/``base_test``. An
experiment with synthetic data also gets FFR's (B, G) diagnostic (``ffr.training.diagnostic``) of the checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

import ffr.methods
from ffr.backbones import create_backbone
from ffr.methods.base import Features
from ffr.metrics import group_counts_of, summarize
from ffr.runs import DIAGNOSTIC
from ffr.training import loop
from ffr.training.config import StageSpec, TrainConfig
from ffr.training.data import ExperimentData
from ffr.training.diagnostic import bg_diagnostic
from ffr.training.stage import EVAL_BATCH


def _model(cfg: TrainConfig, n_classes: int, state: dict, device: torch.device):
    model = create_backbone(cfg.backbone, n_classes, pretrained=None, **cfg.backbone_options)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _features(model, split, cfg: TrainConfig, device) -> np.ndarray:
    dataset = loop.image_dataset(split, loop.preprocessing(cfg))
    feats, _ = loop.extract_features(model, loop.loader(dataset, EVAL_BATCH), device)
    return feats


def _predictions(model, split, cfg: TrainConfig, device, spec=None) -> np.ndarray:
    dataset = loop.image_dataset(split, loop.preprocessing(cfg), spec)
    preds, _ = loop.predict(model, loop.loader(dataset, EVAL_BATCH), device)
    return preds


def evaluate_checkpoint(cfg: TrainConfig, spec: StageSpec, checkpoint_dir: str, device: torch.device | None = None,
                        *, data: ExperimentData) -> dict:
    """{"epoch", "val", "test"} (ffr.metrics.summarize dicts), "group_sizes" ({split: {group: n}}, real
    training data); for a method that fits on features also "base_val"/"base_test" (the backbone's own
    head) and its details under the method's name — "val"/"test" are then its head's."""
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
    method = ffr.methods.create(spec.method, **spec.method_hparams)
    predict = _head(model, device)
    if method.fits_on_features():
        splits = {"train": data.real["train"], "val": val, "test": test}
        features = {name: Features(_features(model, split, cfg, device), split.y, split.groups())
                    for name, split in splits.items()}
        fit = method.fit_on_features(features, np.random.default_rng([cfg.seed, 3]))
        if fit is not None:
            out["base_val"], out["base_test"] = out["val"], out["test"]
            for name in ("val", "test"):
                split = splits[name]
                out[name] = summarize(fit.predict(features[name].x), split.y, split.groups(), train_counts)
            out[method.name] = fit.details
            predict = fit.predict  # the diagnostic measures the predictor whose test numbers are reported
    if data.heldout is not None and len(data.heldout):
        out[DIAGNOSTIC] = bg_diagnostic(lambda split: _features(model, split, cfg, device), predict, test,
                                        data.heldout, train_counts, cfg.seed)
    return out


def _head(model, device: torch.device):
    """Features → predicted classes with the model's own linear head."""
    @torch.no_grad()
    def predict(features: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(features, dtype=torch.float32, device=device)
        return model.head(x).argmax(1).cpu().numpy()

    return predict


def train_predictions(cfg: TrainConfig, spec: StageSpec, checkpoint_dir: str, device: torch.device | None = None,
                      *, data: ExperimentData) -> np.ndarray:
    """A checkpoint's predicted classes on its stage's training set, in order (a preliminary run's outcome)."""
    device = device or torch.device("cpu")
    train = data.stages[spec.stage].train
    model = _model(cfg, data.val.spec.n_classes, loop.load_state(checkpoint_dir), device)
    return _predictions(model, train, cfg, device)
