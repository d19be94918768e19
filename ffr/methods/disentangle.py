"""``disentangle``: D3S's foreground/background feature split (Kattakinda et al., ``train_disentanglement.py``).

The model (:class:`ffr.methods.split_model.SplitClassifier`, built from the configured backbone) splits its
pooled features into fg and bg parts, with a class head on fg and a background head on bg. Two Wasserstein
dependence critics (:mod:`ffr.methods.dependence`) measure what should not be there: background in the fg
features (``fg`` critic, fed the rows that have a background label) and class in the bg features (``bg``
critic, fed every row). The model minimises

    penalty_weight * (dependence_fg + dependence_bg) + ce_weight * (CE(class | fg) + CE(background | bg)),

the class CE over every row and the background CE over the rows with a background label (D3S: 32 D3S images
with both labels plus 32 ImageNet images, the class-only ``mix`` stream of the training config).

Schedule (every step draws a fresh batch; the count survives checkpoints):
- steps 1..``warmup_steps``: CE only, with the run's own optimiser (D3S: SGD lr 1e-3, momentum 0.9 — set
  ``optimizer``, ``lr``, ``momentum``, ``weight_decay`` of the training config);
- then critic steps until the step number is a multiple of ``model_every``, then one model step, and again:
  with D3S's 5 that is 5 critic steps first, then 4 per model step. Model and critics use
  Adam(``model_lr`` / ``critic_lr``, betas ``adam_betas``) (D3S: 5e-3, (0, 0.9)).
Every term of every step is logged (``steps/`` in the run directory, ``step/<term>`` in MLflow); ``phase`` is
0 for warm-up, 1 for a critic step, 2 for a model step. ``penalty_weight: 0`` trains the same schedule without
the penalty (the critics still measure the dependence), the ablation the probes compare against.

After training, the probes (``analyze_features``, D3S's ``test_disentanglement.py``) on the frozen features of
the selected checkpoint: class from fg and background from bg are the model's own heads; class from bg and
background from fg are fresh linear heads (``probe`` options: SGD as D3S), trained on the stage's training
set (class from bg also on the class-only stream) and scored on val and test, each with its chance level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ffr.groups import GroupSpec
from ffr.methods.base import Features, Method, searchable
from ffr.methods.dependence import DependenceCritic, critic_step, dependence
from ffr.methods.probes import ProbeOptions, accuracy, fit_linear_head, majority_rate
from ffr.methods.registry import METHODS
from ffr.methods.split_model import SplitClassifier
from ffr.options import Field, Options

WARMUP, CRITIC, MODEL = 0, 1, 2  # the phase of a step, as logged


def schedule(step: int, train_critics: bool, warmup_steps: int, model_every: int) -> tuple[int, bool]:
    """D3S's schedule: the phase of (1-based) step ``step`` and the critic flag after it. Warm-up first; then
    critic steps while the flag is up, lowered by a critic step whose number is a multiple of ``model_every``;
    a model step raises it again."""
    if step <= warmup_steps:
        return WARMUP, train_critics
    if train_critics:
        return CRITIC, step % model_every != 0
    return MODEL, True


class DisentangleOptions(Options):
    bg_features: int = Field(250, ge=1, description="pooled features that form the bg part, the last ones "
                                                    "(D3S: 250 of ResNet-50's 2048)")
    fg_features: int | None = Field(None, ge=1, description="the fg part, the first ones (default: all the others)")
    penalty_weight: float = searchable(1.0, ("loguniform", 0.1, 30.0), ge=0,
                                       description="weight of the two dependence estimates in the model's loss "
                                                   "(D3S: 1; 0 = the same schedule without the penalty)")
    ce_weight: float = Field(1.0, ge=0, description="alpha: weight of the class + background CE (D3S: 1)")
    gp_weight: float = Field(10.0, ge=0, description="lambda of the critics' gradient penalty (D3S: 10)")
    embedding_fraction: float = Field(0.2, gt=0, description="label embedding width / feature width (D3S: 0.2)")
    leaky_slope: float = Field(0.1, ge=0, description="LeakyReLU slope inside the critics (D3S: 0.1)")
    warmup_steps: int = Field(2000, ge=0, description="CE-only steps with the run's optimiser first (D3S: 2000)")
    model_every: int = Field(5, ge=2, description="after warm-up: critic steps until the step is a multiple of "
                                                  "this, then one model step (D3S: 5)")
    model_lr: float = searchable(5e-3, ("loguniform", 1e-4, 1e-2), gt=0,
                                 description="Adam lr of the model after warm-up (D3S: 5e-3)")
    critic_lr: float = searchable(5e-3, ("loguniform", 1e-4, 1e-2), gt=0,
                                  description="Adam lr of the critics (D3S: 5e-3)")
    adam_betas: tuple[float, float] = Field((0.0, 0.9), description="Adam betas of model and critics "
                                                                     "(D3S: 0, 0.9)")
    probe: ProbeOptions = Field(default_factory=ProbeOptions, description="the linear probes after training "
                                                                         "(D3S: SGD 1e-3, 0.9, wd 1e-4)")
    probe_standardized: bool = Field(False, description="also probe z-scored features (suffix _standardized): D3S's "
                                                        "probe reads raw features, so shrinking what it reads also "
                                                        "lowers its accuracy; a z-scored probe does not see scale")


@METHODS.register("disentangle")
class Disentangle(Method):
    name = "disentangle"
    Options = DisentangleOptions
    mixes_class_only = True

    def __init__(self, n_groups: int | None = None, group_counts: np.ndarray | None = None, **hparams: Any) -> None:
        super().__init__(n_groups, group_counts, **hparams)
        self.step = 0  # training steps taken (warm-up, critic and model steps alike)
        self.train_critics = True  # after warm-up: critic steps until the step count says "model"
        self.spec: GroupSpec | None = None
        self._last: dict[str, float] | None = None
        self._world: float | None = None

    # --- the model, its critics and their optimisers ------------------------------------------------------
    def build_model(self, model: nn.Module, spec: GroupSpec) -> SplitClassifier:
        self.spec = spec
        o = self.options
        return SplitClassifier(model, spec.n_classes, spec.n_bias, o.bg_features, o.fg_features)

    def extra_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        o, spec = self.options, self.spec
        return {"critic_fg": DependenceCritic(model.fg_dim, spec.n_bias, o.embedding_fraction, o.leaky_slope),
                "critic_bg": DependenceCritic(model.bg_dim, spec.n_classes, o.embedding_fraction, o.leaky_slope)}

    def extra_optimizers(self, modules: Mapping[str, nn.Module], lr: float,
                         weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        o = self.options
        return {name: torch.optim.Adam(module.parameters(), lr=o.critic_lr, betas=tuple(o.adam_betas))
                for name, module in modules.items()}

    def model_optimizers(self, model: nn.Module) -> dict[str, torch.optim.Optimizer]:
        o = self.options
        return {"model": torch.optim.Adam(model.parameters(), lr=o.model_lr, betas=tuple(o.adam_betas))}

    # --- one step -----------------------------------------------------------------------------------------

    def _labels(self, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows with a background label, their background); class-only rows have group -1."""
        labelled = groups >= 0
        g = groups[labelled]
        if self.spec.with_source:
            g = g // 2
        return labelled, g % self.spec.n_bias

    def _average_gradients(self, module: nn.Module, device: torch.device) -> None:
        """The critics run outside DDP (their gradient penalty needs a double backward): average by hand."""
        if self._world is None:
            self._world = float(self.all_reduce(torch.ones(1, device=device)).item())
        if self._world > 1:
            for p in module.parameters():
                if p.grad is not None:
                    p.grad.copy_(self.all_reduce(p.grad) / self._world)

    def train_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor,
                   optimizer: torch.optim.Optimizer) -> torch.Tensor:
        o = self.options
        self.step += 1
        phase, self.train_critics = schedule(self.step, self.train_critics, o.warmup_steps, o.model_every)
        labelled, b = self._labels(groups)
        critics = {name: getattr(m, "module", m) for name, m in self.modules.items()}
        if phase == CRITIC:
            with torch.no_grad():
                out = model(x, parts=True)
            fg = critic_step(critics["critic_fg"], out.fg[labelled], b, o.gp_weight)
            bg = critic_step(critics["critic_bg"], out.bg, y, o.gp_weight)
            for name, step in (("critic_fg", fg), ("critic_bg", bg)):
                self.optimizers[name].zero_grad(set_to_none=True)
                step.loss.backward()
                self._average_gradients(critics[name], x.device)
                self.optimizers[name].step()
            ce = F.cross_entropy(out.logits, y)
            self._last = {"phase": CRITIC, "critic_fg_loss": float(fg.loss.detach()),
                          "critic_bg_loss": float(bg.loss.detach()),
                          "dependence_fg": float(fg.estimate), "dependence_bg": float(bg.estimate),
                          "gradient_penalty_fg": float(fg.penalty), "gradient_penalty_bg": float(bg.penalty),
                          "ce_class": float(ce)}
            return ce
        out = model(x, parts=True)
        ce_class = F.cross_entropy(out.logits, y)
        ce_background = F.cross_entropy(out.bg_logits[labelled], b) if bool(labelled.any()) else ce_class * 0
        loss = o.ce_weight * (ce_class + ce_background)
        terms = {"phase": phase, "ce_class": float(ce_class.detach()),
                 "ce_background": float(ce_background.detach())}
        if phase == MODEL:
            dep_fg = dependence(critics["critic_fg"], out.fg[labelled], b)
            dep_bg = dependence(critics["critic_bg"], out.bg, y)
            loss = loss + o.penalty_weight * (dep_fg + dep_bg)
            terms.update(dependence_fg=float(dep_fg.detach()), dependence_bg=float(dep_bg.detach()))
            step_with = self.optimizers["model"]
        else:
            step_with = optimizer
        step_with.zero_grad(set_to_none=True)
        loss.backward()
        step_with.step()
        terms["loss"] = float(loss.detach())
        self._last = terms
        return ce_class

    def step_log(self) -> dict[str, float] | None:
        return self._last

    def state_dict(self) -> dict:
        return {"step": self.step, "train_critics": self.train_critics}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.train_critics = int(state["step"]), bool(state["train_critics"])

    # --- the probes ---------------------------------------------------------------------------------------
    def analyze_features(self, model: nn.Module, features: Mapping[str, Features],
                         rng: np.random.Generator) -> dict[str, Any]:
        """D3S's four numbers on val (and test), with chance levels: own heads for the same side, fresh linear
        probes for the other side."""
        spec, probe = self.spec, self.options.probe
        model = getattr(model, "module", model)

        def parts(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            f = features[name]
            fg, bg = f.x[:, :model.fg_dim], f.x[:, model.feature_dim - model.bg_dim:]
            g = np.asarray(f.groups)
            b = np.where(g >= 0, (g // 2 if spec.with_source else g) % spec.n_bias, -1)
            return fg, bg, np.asarray(f.y), b

        def own(head: nn.Module, x: np.ndarray) -> np.ndarray:
            if not len(x):
                return np.zeros(0, np.int64)
            with torch.no_grad():
                weight = head.weight.detach().cpu().float().numpy()
                return (x @ weight.T + head.bias.detach().cpu().float().numpy()).argmax(1)

        train_fg, train_bg, train_y, train_b = parts("train")
        has_b = train_b >= 0
        bg_rows, bg_y = [train_bg], [train_y]
        if "mix" in features:  # D3S trains the class-from-bg probe on D3S and ImageNet images alike
            bg_rows.append(parts("mix")[1])
            bg_rows_y = features["mix"].y
            bg_y.append(np.asarray(bg_rows_y))
        seed = int(rng.integers(2**31))
        variants = [("", probe)]
        if self.options.probe_standardized:
            variants.append(("_standardized", probe.model_copy(update={"standardize": True})))
        heads = {}
        for suffix, options in variants:
            heads["class_from_bg" + suffix] = fit_linear_head(np.concatenate(bg_rows), np.concatenate(bg_y),
                                                              spec.n_classes, options, seed)
            heads["background_from_fg" + suffix] = fit_linear_head(train_fg[has_b], train_b[has_b], spec.n_bias,
                                                                   options, seed + 1)
        probes: dict[str, dict[str, Any]] = {
            "class_from_fg": {"features": "fg", "target": "class", "head": "model", "chance": 1 / spec.n_classes},
            "background_from_bg": {"features": "bg", "target": "background", "head": "model",
                                   "chance": 1 / spec.n_bias},
            "class_from_bg": {"features": "bg", "target": "class", "head": "linear probe",
                              "chance": 1 / spec.n_classes},
            "background_from_fg": {"features": "fg", "target": "background", "head": "linear probe",
                                   "chance": 1 / spec.n_bias}}
        for suffix, _ in variants[1:]:
            for name in ("class_from_bg", "background_from_fg"):
                probes[name + suffix] = {**probes[name], "head": "linear probe, z-scored features"}
        for split in ("val", "test"):
            if split not in features or not len(features[split].y):
                continue
            fg, bg, y, b = parts(split)
            known = b >= 0
            predicted = {"class_from_fg": (own(model.head, fg), y),
                         "background_from_bg": (own(model.bg_head, bg[known]), b[known])}
            for name, head in heads.items():
                predicted[name] = ((head.predict(bg), y) if name.startswith("class_from_bg")
                                   else (head.predict(fg[known]), b[known]))
            for name, (pred, target) in predicted.items():
                probes[name][split] = accuracy(pred, target)
                probes[name][f"majority_{split}"] = majority_rate(target)
        return {"probes": probes}
