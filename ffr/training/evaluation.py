"""Final evaluation of a chosen checkpoint (Ray-free): val and test per-group metrics, a method's post-fit
step on features, and a preliminary run's predictions on its training set.

A method that fits on features (``Method.fit_on_features``, e.g. DFR's last-layer retraining) gets the
selected model's penultimate features of the real train/val/test splits, extracted once per split; its head
then gives the val/test numbers and the model's own head's are kept as ``base_val``/``base_test``. A method
that analyses features (``Method.analyze_features``, e.g. D3S's probes) gets them for its stage's training
set, val, test and the class-only stream, and its results join the result as they are. An experiment with
synthetic data also gets FFR's (B, G) diagnostic (``ffr.training.diagnostic``) of the checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch

import ffr.methods
from ffr.backbones import create_backbone
from ffr.errors import FFRError
from ffr.methods.base import Features
from ffr.metrics import group_counts_of, summarize
from ffr.runs import DIAGNOSTIC
from ffr.training import loop
from ffr.training.config import StageSpec, TrainConfig
from ffr.training.data import ExperimentData
from ffr.training.diagnostic import bg_diagnostic
from ffr.training.stage import EVAL_BATCH

MIX_FEATURES = 50_000  # at most this many images of the class-only stream go to a method's feature analyses


def _model(cfg: TrainConfig, spec: StageSpec, data: ExperimentData, state: dict, device: torch.device,
           method: ffr.methods.Method | None = None):
    """The trained model as its run built it (the backbone, then the method's ``build_model``), with the
    checkpoint's weights."""
    model = create_backbone(cfg.backbone, data.val.spec.n_classes, pretrained=None, **cfg.backbone_options)
    method = method or ffr.methods.create(spec.method, **spec.method_hparams)
    model = method.build_model(model, data.stages[spec.stage].train_spec)
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
    method = ffr.methods.create(spec.method, **spec.method_hparams)
    model = _model(cfg, spec, data, state, device, method)
    train_counts = group_counts_of(data.real["train"].groups())
    val, test = data.val, data.test
    out = {"epoch": state.get("epoch"),
           "val": summarize(_predictions(model, val, cfg, device), val.y, val.groups(), train_counts),
           "test": summarize(_predictions(model, test, cfg, device), test.y, test.groups(), train_counts),
           # how many examples each accuracy is over: a 50 % on 4 images is not a 50 % on 400
           "group_sizes": {"train": {str(g): int(n) for g, n in sorted(train_counts.items())},
                           "val": {str(g): int(n) for g, n in sorted(group_counts_of(val.groups()).items())},
                           "test": {str(g): int(n) for g, n in sorted(group_counts_of(test.groups()).items())}}}
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
    if method.analyzes_features():
        splits = {"train": data.stages[spec.stage].train, "val": val, "test": test}
        if data.mix is not None:  # a seeded sample: the class-only stream may be all of ImageNet
            rng = np.random.default_rng([cfg.seed, 9])
            keep = np.sort(rng.permutation(len(data.mix))[:MIX_FEATURES])
            splits["mix"] = data.mix.subset(keep)
        features = {name: Features(_features(model, split, cfg, device), split.y,
                                   split.groups(data.stages[spec.stage].train_spec) if name == "train"
                                   else split.groups() if name != "mix" else np.full(len(split), -1))
                    for name, split in splits.items()}
        analysis = method.analyze_features(model, features, np.random.default_rng([cfg.seed, 8]))
        if analysis is not None:
            out.update(analysis)
    if data.heldout is not None and len(data.heldout):
        out[DIAGNOSTIC] = bg_diagnostic(lambda split: _features(model, split, cfg, device), predict, test,
                                        data.heldout, train_counts, cfg.seed)
    return out


def _head(model, device: torch.device):
    """Features → predicted classes with the model's own head (a split model's reads its fg part)."""
    @torch.no_grad()
    def predict(features: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(features, dtype=torch.float32, device=device)
        return model.logits_from_features(x).argmax(1).cpu().numpy()

    return predict


def train_predictions(cfg: TrainConfig, spec: StageSpec, checkpoint_dir: str, device: torch.device | None = None,
                      *, data: ExperimentData) -> np.ndarray:
    """A checkpoint's predicted classes on its stage's training set, in order (a preliminary run's outcome)."""
    device = device or torch.device("cpu")
    train = data.stages[spec.stage].train
    model = _model(cfg, spec, data, loop.load_state(checkpoint_dir), device)
    return _predictions(model, train, cfg, device)


def load_trained_model(checkpoint_dir: str, device: torch.device | None = None):
    """A model as ``ffr train`` trained it, from one of its checkpoints alone (its ``config`` says the backbone,
    options and method; the weights say the class and bias counts): (model in eval mode, resolved config)."""
    from ffr.groups import GroupSpec

    state = loop.load_state(checkpoint_dir)
    config = state.get("config") or {}
    missing = [k for k in ("backbone", "method") if k not in config]
    if missing:
        raise FFRError(f"checkpoint {checkpoint_dir!r} does not record {missing}; expected an ffr training checkpoint")
    weights = state["model"]
    n_classes = int(weights["head.weight"].shape[0])
    n_bias = int(weights["bg_head.weight"].shape[0]) if "bg_head.weight" in weights else 1
    spec = GroupSpec(tuple(str(i) for i in range(n_classes)), tuple(str(i) for i in range(n_bias)))
    model = create_backbone(config["backbone"], n_classes, pretrained=None, **(config.get("backbone_options") or {}))
    model = ffr.methods.create(config["method"], **(config.get("method_hparams") or {})).build_model(model, spec)
    model.load_state_dict(weights)
    return model.to(device or torch.device("cpu")).eval(), config
