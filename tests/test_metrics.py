import numpy as np
import pytest
import torch

from ffr.metrics import (
    group_accuracies,
    mean_group_accuracy,
    overall_accuracy,
    summarize,
    train_weighted_accuracy,
    worst_group_accuracy,
)

PREDS = [0, 0, 1, 1, 1, 0, 0, 0]
TARGETS = [0, 1, 1, 1, 0, 0, 0, 1]
GROUPS = [0, 0, 1, 1, 3, 3, 3, 3]  # group 2 is empty


@pytest.mark.parametrize("wrap", [np.asarray, torch.tensor, list])
def test_group_accuracies_and_worst_group_ignore_empty_groups(wrap):
    accs = group_accuracies(wrap(PREDS), wrap(TARGETS), wrap(GROUPS))
    assert accs == {0: 0.5, 1: 1.0, 3: 0.5}
    assert 2 not in accs
    assert worst_group_accuracy(wrap(PREDS), wrap(TARGETS), wrap(GROUPS)) == 0.5
    assert mean_group_accuracy(wrap(PREDS), wrap(TARGETS), wrap(GROUPS)) == pytest.approx(2 / 3)


def test_overall_and_train_weighted():
    assert overall_accuracy(PREDS, TARGETS) == pytest.approx(5 / 8)
    # training proportions 0:10, 1:30, 3:60 → (0.5*10 + 1*30 + 0.5*60) / 100
    assert train_weighted_accuracy(PREDS, TARGETS, GROUPS, {0: 10, 1: 30, 2: 99, 3: 60}) == pytest.approx(0.65)


def test_summarize_keys():
    out = summarize(PREDS, TARGETS, GROUPS, {0: 1, 1: 1, 3: 1})
    assert out["worst_group_acc"] == 0.5 and out["acc_group_1"] == 1.0 and "acc_group_2" not in out
    assert out["train_weighted_acc"] == pytest.approx(2 / 3)


def test_cuda_tensors_on_cpu_machine_do_not_break():
    t = torch.tensor(PREDS)
    assert worst_group_accuracy(t, torch.tensor(TARGETS), torch.tensor(GROUPS)) == 0.5
