"""D3S's central claim on the embedded D3S: without the dependence penalty the fg features carry the background
(a linear probe reads it far above chance); D3S's penalty lowers it markedly. One seed of ``make
d3s-disentangle-demo`` (its settings, its data), the two disentangle runs only: about 2 minutes on 2 cores."""

from __future__ import annotations

import pytest

from ffr.d3s.disentangle_demo import StudyConfig, prepare, pretrain, run_configs
from ffr.training import run_experiment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_background_from_fg_is_far_above_chance_without_the_penalty_and_markedly_lower_with_it(tmp_path):
    config = StudyConfig(seeds=[0])
    runs = str(tmp_path / "runs")
    paths = prepare(tmp_path, config)
    configs = run_configs(paths, config, runs, pretrain(paths, config, runs), seed=0)
    probes = {name: run_experiment(configs[name])["probes"] for name in ("disentangled", "no penalty")}
    without, with_penalty = (probes[name]["background_from_fg"] for name in ("no penalty", "disentangled"))
    assert without["chance"] == with_penalty["chance"] == 0.1
    assert without["val"] > 0.5, without  # the fg half reads the background, 10 backgrounds
    assert with_penalty["val"] < without["val"] - 0.1, (with_penalty, without)  # measured: 0.80 vs 0.93
    # the penalty does not buy this by emptying the features: the class is still read from fg well above chance
    assert probes["disentangled"]["class_from_fg"]["val"] > 0.3
