"""D3S's disentanglement pieces on toy problems: the dependence critic's estimate, the gradient penalty, the
warm-up → critic/model schedule, the optimiser each step uses, the fg/bg split model and the probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ffr.methods
from ffr.backbones import create_backbone
from ffr.errors import FFRError
from ffr.groups import GroupSpec
from ffr.methods.base import Features
from ffr.methods.dependence import DependenceCritic, critic_step, dependence, gradient_penalty, halving_mlp
from ffr.methods.disentangle import CRITIC, MODEL, WARMUP, schedule
from ffr.methods.probes import ProbeOptions, fit_linear_head
from ffr.methods.split_model import SplitClassifier


def _trained_critic_estimate(shift: float, seed: int = 0, steps: int = 200) -> float:
    """Train a critic on features z = N(0, I) + shift * mu[label] (10 labels, 48 dims), as the disentanglement
    trains it, and return its estimate on fresh samples."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mu = torch.randn(10, 48, generator=gen)
    critic = DependenceCritic(48, 10)
    optimizer = torch.optim.Adam(critic.parameters(), lr=5e-3, betas=(0.0, 0.9))

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(10, (n,), generator=gen)
        return torch.randn(n, 48, generator=gen) + shift * mu[labels], labels

    for _ in range(steps):
        z, labels = sample(64)
        step = critic_step(critic, z, labels, gp_weight=10.0)
        optimizer.zero_grad()
        step.loss.backward()
        optimizer.step()
    z, labels = sample(8192)
    with torch.no_grad():
        return float(dependence(critic, z, labels))


def test_critic_estimate_is_near_zero_for_independent_features_and_positive_for_dependent_ones():
    independent = [_trained_critic_estimate(0.0, seed) for seed in (0, 1)]
    dependent = [_trained_critic_estimate(0.5, seed) for seed in (0, 1)]
    assert all(abs(e) < 0.05 for e in independent), independent
    assert all(e > 0.3 for e in dependent), dependent
    assert min(dependent) > 10 * max(abs(e) for e in independent)


def test_gradient_penalty_of_known_critics():
    joint, marginal = torch.randn(16, 6), torch.randn(16, 6)
    linear = torch.nn.Linear(6, 1)  # grad_x = w everywhere: penalty (|w| - 1)^2
    norm = float(linear.weight.detach().norm())
    assert float(gradient_penalty(linear, joint, marginal)) == pytest.approx((norm - 1) ** 2, rel=1e-5)
    with torch.no_grad():
        linear.weight.copy_(linear.weight / linear.weight.norm())  # a 1-Lipschitz critic pays nothing
    assert float(gradient_penalty(linear, joint, marginal)) == pytest.approx(0.0, abs=1e-10)

    class HalfSquare(torch.nn.Module):  # D(x) = |x|^2 / 2: grad_x = x, so the penalty is mean((|x_hat| - 1)^2)
        def forward(self, x):
            return 0.5 * (x ** 2).sum(1)

    eps = torch.rand(16, 6)  # one draw per element, as D3S mixes joint and marginal
    mixed = eps * joint + (1 - eps) * marginal
    expected = float(((mixed.norm(dim=1) - 1) ** 2).mean())
    assert float(gradient_penalty(HalfSquare(), joint, marginal, eps)) == pytest.approx(expected, rel=1e-5)


def test_critic_loss_adds_lambda_times_penalty_and_trains_the_critic_towards_lipschitz_one():
    torch.manual_seed(0)
    critic = DependenceCritic(8, 3)
    z, labels = torch.randn(32, 8), torch.randint(3, (32,))
    with_gp = critic_step(critic, z, labels, gp_weight=10.0)
    torch.manual_seed(1)
    for p in critic.net.parameters():  # the penalty is differentiable: its gradient reaches the weights
        p.grad = None
    with_gp.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in critic.net.parameters())
    torch.manual_seed(5)
    a = critic_step(critic, z, labels, gp_weight=0.0)
    torch.manual_seed(5)
    b = critic_step(critic, z, labels, gp_weight=10.0)
    assert float(b.loss - a.loss) == pytest.approx(10.0 * float(b.penalty), rel=1e-4)
    assert float(a.estimate) == pytest.approx(-float(a.loss), rel=1e-5)  # loss without GP = -estimate
    assert critic.embedding.shape == (3, 1) and not critic.embedding.requires_grad  # int(0.2 * 8) = 1, fixed
    assert [m.out_features for m in halving_mlp(57) if isinstance(m, torch.nn.Linear)] == [28, 14, 7, 3, 1]


def test_schedule_warmup_then_critic_until_a_multiple_then_one_model_step():
    def phases(n, warmup, every):
        flag, out = True, []
        for step in range(1, n + 1):
            phase, flag = schedule(step, flag, warmup, every)
            out.append(phase)
        return out

    W, C, M = WARMUP, CRITIC, MODEL
    assert phases(16, 3, 5) == [W, W, W, C, C, M, C, C, C, C, M, C, C, C, C, M]
    d3s = phases(2020, 2000, 5)  # D3S: 2000 warm-up steps, 5 critic steps, then 4 per model step
    assert set(d3s[:2000]) == {W}
    assert d3s[2000:2020] == [C, C, C, C, C, M, C, C, C, C, M, C, C, C, C, M, C, C, C, C]
    assert phases(12, 0, 2) == [C, C, M, C, M, C, M, C, M, C, M, C]


def _method_and_model(**options):
    torch.manual_seed(0)
    method = ffr.methods.create("disentangle", bg_features=8, **options)
    spec = GroupSpec(("a", "b", "c"), ("x", "y", "z", "w"))
    model = method.build_model(create_backbone("small-cnn", 3, width=8), spec)
    method.modules = method.extra_modules(model)
    method.optimizers = {**method.extra_optimizers(method.modules, 1.0, 0.0), **method.model_optimizers(model)}
    return method, model


def _batch(gen: torch.Generator):
    x = torch.randn(8, 3, 16, 16, generator=gen)
    y = torch.randint(3, (8,), generator=gen)
    g = torch.cat([y[:4] * 4 + torch.randint(4, (4,), generator=gen), torch.full((4,), -1)])  # 4 class-only rows
    return x, y, g


def test_each_phase_steps_its_own_optimiser_and_logs_its_terms():
    method, model = _method_and_model(warmup_steps=2, model_every=3)
    warmup = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    gen = torch.Generator().manual_seed(0)

    def snapshot():
        return {"model": model.backbone.trunk[0].weight.detach().clone(),
                "critic": method.modules["critic_fg"].net[0].weight.detach().clone()}

    seen = []
    for _ in range(5):  # warm-up, warm-up, critic (3 % 3 == 0 lowers the flag), model, critic
        before = snapshot()
        method.train_step(model, *_batch(gen), warmup)
        after, log = snapshot(), method.step_log()
        seen.append((log["phase"], not torch.equal(before["model"], after["model"]),
                     not torch.equal(before["critic"], after["critic"])))
        if log["phase"] == CRITIC:
            assert {"critic_fg_loss", "critic_bg_loss", "dependence_fg", "dependence_bg", "gradient_penalty_fg",
                    "gradient_penalty_bg", "ce_class"} <= set(log)
        else:
            assert {"ce_class", "ce_background", "loss"} <= set(log)
            assert ("dependence_fg" in log) == (log["phase"] == MODEL)
    assert seen == [(WARMUP, True, False), (WARMUP, True, False), (CRITIC, False, True), (MODEL, True, False),
                    (CRITIC, False, True)]
    assert len(warmup.state) > 0 and method.optimizers["model"].state  # SGD for warm-up, Adam after
    assert method.optimizers["model"].defaults["betas"] == (0.0, 0.9)

    state = method.state_dict()
    resumed, _ = _method_and_model(warmup_steps=2, model_every=3)
    resumed.load_state_dict(state)
    assert (resumed.step, resumed.train_critics) == (5, True)
    assert schedule(6, resumed.train_critics, 2, 3) == (CRITIC, False)  # 6 % 3 == 0: the model steps next


def test_split_model_heads_and_the_fg_head_from_the_pretrained_classifier():
    base = create_backbone("small-cnn", 3, width=8)  # 32 pooled features
    weight, bias = torch.randn(3, 32), torch.randn(3)
    base.pretrained_head = (weight, bias)
    model = SplitClassifier(base, 3, 4, bg_dim=8)
    assert (model.fg_dim, model.bg_dim, model.head_from_pretrained) == (24, 8, True)
    assert torch.equal(model.head.weight, weight[:, :24]) and torch.equal(model.head.bias, bias)
    out = model(torch.randn(5, 3, 16, 16), parts=True)
    assert out.logits.shape == (5, 3) and out.bg_logits.shape == (5, 4)
    assert out.fg.shape == (5, 24) and out.bg.shape == (5, 8)
    assert torch.equal(model(torch.zeros(2, 3, 16, 16)), model(torch.zeros(2, 3, 16, 16), parts=True).logits)
    assert not any(k.startswith("backbone.head") for k in model.state_dict())
    other = SplitClassifier(create_backbone("small-cnn", 3, width=8), 3, 4, bg_dim=8, fg_dim=10)
    assert (other.fg_dim, other.head_from_pretrained) == (10, False)
    with pytest.raises(FFRError, match="does not fit the backbone's 32 pooled features"):
        SplitClassifier(create_backbone("small-cnn", 3, width=8), 3, 4, bg_dim=32)


def test_small_cnn_weights_from_an_ffr_checkpoint_carry_its_classifier(tmp_path):
    trained = create_backbone("small-cnn", 3, width=8)
    torch.save({"model": trained.state_dict(), "epoch": 0}, tmp_path / "model.pt")
    loaded = create_backbone("small-cnn", 3, pretrained=str(tmp_path / "model.pt"), width=8)
    assert torch.equal(loaded.pretrained_head[0], trained.head.weight)
    assert torch.equal(loaded.trunk[0].weight, trained.trunk[0].weight)


def test_probes_find_what_is_in_the_features_and_report_chance():
    method, model = _method_and_model(probe={"steps": 300, "lr": 0.05})
    rng = np.random.default_rng(0)

    def features(n):  # fg dims carry the background, bg dims carry nothing
        y, b = rng.integers(3, size=n), rng.integers(4, size=n)
        x = rng.normal(size=(n, 32)).astype(np.float32)
        x[:, :4] += 3 * np.eye(4)[b]
        return Features(x, y, y * 4 + b)

    result = method.analyze_features(model, {"train": features(400), "val": features(200), "test": features(200)},
                                     np.random.default_rng(1))["probes"]
    assert result["background_from_fg"]["val"] > 0.9 and result["background_from_fg"]["chance"] == 0.25
    assert result["class_from_bg"]["val"] < 0.5 and result["class_from_bg"]["chance"] == pytest.approx(1 / 3)
    assert {result[k]["head"] for k in ("class_from_fg", "background_from_bg")} == {"model"}


def test_a_linear_head_keeps_its_best_selected_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    scores = iter([0.2, 0.9, 0.5])
    head = fit_linear_head(x, y, 2, ProbeOptions(steps=30, eval_every=10, lr=0.1), 0, lambda h: next(scores))
    assert head.best_step == 20 and [s for s, _ in head.history] == [10, 20, 30]
