"""Every registered stage-2 method is exercised here (the registry walk), plus each method's own rule."""

import json
import re

import numpy as np
import pytest
import torch

from ffr.errors import FFRError
from ffr.methods import METHODS, create, search_spaces
from ffr.methods.base import SPACE_KINDS
from ffr.metrics import worst_group_accuracy

N_GROUPS = 4


def _batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 2, generator=g, requires_grad=True)
    targets = torch.randint(0, 2, (n,), generator=g)
    groups = torch.arange(n) % N_GROUPS
    return logits, targets, groups


def _ready(name):
    m = create(name)
    train_groups = np.repeat(np.arange(N_GROUPS), [40, 10, 5, 45])
    m.setup(train_groups, N_GROUPS)
    run = m.preliminary_run()
    if run is not None:  # e.g. JTT: its identification model gets every third example wrong
        assert run.name and run.role and run.epochs >= 1 and run.method in METHODS
        targets = np.zeros(len(train_groups), dtype=int)
        result = m.preliminary_result((np.arange(len(train_groups)) % 3 == 0).astype(int), targets, train_groups)
        assert json.loads(json.dumps(result)) == result and m.preliminary_summary(result)  # a JSON marker file
        m.use_preliminary(result)
    return m, train_groups


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_runs_forward_backward_and_declares_hparams(name):
    m, train_groups = _ready(name)
    logits, targets, groups = _batch()
    loss = m.loss(logits, targets, groups)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    weights = m.sampling_weights(train_groups)
    assert weights is None or (weights.shape == train_groups.shape and (weights > 0).all())
    assert m.draws_per_epoch(len(train_groups)) >= len(train_groups)
    for key, space in search_spaces(METHODS.get(name)).items():  # declared beside the option, for tune/
        assert key in m.Options.model_fields and space[0] in SPACE_KINDS
    assert m.options == create(name, **m.options.to_dict()).options  # options round-trip through JSON
    m.load_state_dict(m.state_dict())


def test_unknown_method_and_hparam_are_clear_errors():
    with pytest.raises(FFRError, match="unknown stage-2 method 'dro'"):
        create("dro")
    with pytest.raises(FFRError, match="unknown option 'method_hparams.robust'"):
        create("groupdro", robust=True)  # there is no flag that silently turns GroupDRO into ERM
    with pytest.raises(FFRError, match="option 'method_hparams.step_size' of stage-2 method 'groupdro' = 0"):
        create("groupdro", n_groups=2, step_size=0)
    with pytest.raises(FFRError, match="'method_hparams.c_grid'.* greater than 0"):
        create("dfr", c_grid=[1.0, -3.0])
    with pytest.raises(FFRError, match="'method_hparams.upweight' .* = 'many'"):
        create("jtt", upweight="many")
    assert create("jtt", upweight=4).options.upweight == 4.0  # YAML ints are taken as the float declared


def test_groupdro_weights_move_toward_the_worst_group():
    m = create("groupdro", n_groups=3, step_size=0.5)
    assert torch.allclose(m.group_weights, torch.full((3,), 1 / 3))
    targets = torch.zeros(9, dtype=torch.long)
    groups = torch.arange(9) % 3
    # group 2 is badly classified, groups 0 and 1 well
    logits = torch.tensor([[4.0, 0.0] if g < 2 else [0.0, 4.0] for g in groups.tolist()], requires_grad=True)
    for _ in range(5):
        loss = m.loss(logits, targets, groups)
    q = m.group_weights
    assert q.argmax().item() == 2 and q[2] > 0.9 and torch.isclose(q.sum(), torch.tensor(1.0))
    # the robust loss is dominated by the worst group, unlike ERM's mean
    erm = create("erm").loss(logits, targets, groups)
    assert loss > erm


def test_groupdro_generalization_adjustment_needs_and_uses_counts():
    m = create("groupdro", n_groups=2, step_size=0.1, adjustment=2.0)
    logits, targets = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(FFRError, match="counts"):
        m.loss(logits, targets, torch.tensor([0, 0, 1, 1]))
    m.setup(np.array([0] * 100 + [1] * 4), 2)
    m.loss(logits, targets, torch.tensor([0, 0, 1, 1]))
    assert m.group_weights[1] > m.group_weights[0]  # equal losses, the small group gets the larger C/sqrt(n)


def test_resample_weights_make_groups_equally_likely():
    m, train_groups = _ready("resample")
    w = m.sampling_weights(train_groups)
    per_group = [w[train_groups == g].sum() for g in range(N_GROUPS)]
    assert np.allclose(per_group, per_group[0])
    assert np.allclose(w, len(train_groups) / np.bincount(train_groups)[train_groups])
    assert m.draws_per_epoch(len(train_groups)) == len(train_groups)


def test_reweight_has_mean_weight_one():
    m, train_groups = _ready("reweight")
    w = m.group_weights().numpy()[train_groups]
    assert w.mean() == pytest.approx(1.0) and w[train_groups == 2][0] > w[train_groups == 3][0]


def test_jtt_upweights_the_error_set_and_requires_it():
    m = create("jtt", upweight=5.0)
    groups = np.zeros(10, dtype=int)
    with pytest.raises(FFRError, match="error set"):
        m.sampling_weights(groups)
    err = np.zeros(10, dtype=bool)
    err[:2] = True
    m.set_error_set(err)
    assert m.sampling_weights(groups).tolist() == [5.0] * 2 + [1.0] * 8
    assert m.draws_per_epoch(10) == 18


def test_dfr_recovers_a_planted_core_feature():
    rng = np.random.default_rng(0)

    def make(n, corr):
        y = rng.integers(0, 2, n)
        b = np.where(rng.random(n) < corr, y, 1 - y)  # spurious attribute agrees with y at rate corr
        core = (2 * y - 1) + 0.6 * rng.standard_normal(n)
        spurious = 3.0 * (2 * b - 1) + 0.3 * rng.standard_normal(n)
        noise = rng.standard_normal((n, 8))
        return np.column_stack([core, spurious, noise]), y, y * 2 + b

    x_val, y_val, g_val = make(800, 0.5)   # DFR sees group-balanced-ish validation data
    x_test, y_test, g_test = make(2000, 0.5)
    head = create("dfr", n_refits=5).fit_last_layer(x_val, y_val, g_val, np.random.default_rng(1))
    wga = worst_group_accuracy(head.predict(x_test), y_test, g_test)
    spurious_only = worst_group_accuracy((x_test[:, 1] > 0).astype(int), y_test, g_test)
    assert wga > 0.85 and spurious_only < 0.1
    assert abs(head.coef[0, 0]) > abs(head.coef[0, 1])  # the core feature carries the weight


def test_show_config_lists_the_method_options_and_refuses_a_bad_one(capsys):
    from ffr.cli import main

    assert main(["train", "--show-config", "method=jtt", "method_hparams={upweight: 20}"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\* method_hparams\.upweight +6\.0 +20\.0 +λ: how many times", out, re.M)
    assert re.search(r"^  method_hparams\.identification_epochs +1 +1 +epochs of the ERM", out, re.M)
    assert main(["train", "--show-config", "method=jtt", "method_hparams={upweight: 0}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().count("\n") == 0 and "'method_hparams.upweight'" in err


def _sparse_problem(n: int = 400, d: int = 40, seed: int = 0):
    """Non-negative features (like pooled ReLU features) where 2 of ``d`` carry the class; 4 balanced groups."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    g = y * 2 + rng.integers(0, 2, n)
    x = rng.gamma(2.0, 1.0, (n, d))
    x[:, 0] += 3.0 * y
    x[:, 1] += 3.0 * (1 - y)
    return x, y, g


def test_dfr_penalty_is_l1_with_liblinear():
    """FFR's DFR: penalty='l1', solver='liblinear'. An L1 fit zeroes irrelevant coefficients exactly; an L2 fit (an
    older scikit-learn reading only l1_ratio) never does, so this fails for L2."""
    from ffr.methods.dfr import DeepFeatureReweighting, l1_logistic_regression

    assert l1_logistic_regression(0.1, 0).solver == "liblinear"
    x, y, g = _sparse_problem()
    z = (x - x.mean(0)) / x.std(0)
    model = DeepFeatureReweighting._fit(z, y, 0.05, 0)
    assert np.sum(model.coef_[0, 2:] == 0.0) >= 30 and np.all(model.coef_[0, :2] != 0.0)
    head = create("dfr", n_refits=3, c_grid=[0.05]).fit_last_layer(x, y, g, np.random.default_rng(0))
    assert np.sum(head.coef[0, 2:] == 0.0) >= 20  # the averaged head too: every refit dropped them


def test_dfr_l2_normalises_features_as_ffr():
    """FFR feeds DFR F.normalize(features): the fit and the head see only each feature vector's direction, so
    scaling a vector by any positive factor changes nothing. Unnormalised features fail both checks."""
    x, y, g = _sparse_problem(seed=1)
    scale = np.random.default_rng(2).uniform(0.2, 5.0, (len(x), 1))
    dfr = create("dfr", n_refits=3)
    head = dfr.fit_last_layer(x, y, g, np.random.default_rng(0), scaler_features=x)
    scaled = dfr.fit_last_layer(x * scale, y, g, np.random.default_rng(0), scaler_features=x * scale)
    assert head.feature_norm == "l2" and head.best_c == scaled.best_c
    assert np.allclose(head.coef, scaled.coef, atol=1e-6) and np.allclose(head.intercept, scaled.intercept, atol=1e-6)
    assert np.allclose(head.decision(x), head.decision(x * scale))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(head.mean, unit.mean(0)) and np.allclose(head.std, unit.std(0))  # standardized after

    raw = create("dfr", n_refits=3, feature_norm="none")  # the control: raw features are not scale-free
    raw_head = raw.fit_last_layer(x, y, g, np.random.default_rng(0), scaler_features=x)
    assert not np.allclose(raw_head.decision(x), raw_head.decision(x * scale))
