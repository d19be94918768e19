"""FFR's ablations as options: synthetic-quality corruption of stage 1, frozen BatchNorm statistics in stage 2."""

import numpy as np
import pandas as pd
import pytest
import torch

import pipelines
from ffr import runs
from ffr.backbones import Preprocessing
from ffr.corruptions import Corrupt
from ffr.errors import FFRError
from ffr.training import loop, run_experiment
from ffr.training.config import method_stage, parse, pretrain_stage

TINY = {"dataset": "colored-digits", "dataset_options": {"bias_ratio": 0.95}, "backbone": "small-cnn",
        "backbone_options": {"width": 8}, "pretrained": None, "image_size": 32, "epochs": 1, "batch_size": 128,
        "executor": "local", "cache_in_memory": True}


def _bn_buffers(checkpoint: str) -> dict[str, torch.Tensor]:
    state = loop.load_state(checkpoint)["model"]
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _weights(checkpoint: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in loop.load_state(checkpoint)["model"].items() if k.endswith("weight")}


def test_frozen_bn_keeps_running_statistics_through_a_stage2_run(tmp_path):
    start = run_experiment({**TINY, "storage_path": str(tmp_path / "start")})["checkpoint"]
    runs = {frozen: run_experiment({**TINY, "init_checkpoint": start, "freeze_bn": frozen, "lr": 3e-3,
                                    "storage_path": str(tmp_path / f"frozen-{frozen}")})["checkpoint"]
            for frozen in (True, False)}
    before = _bn_buffers(start)
    assert before, "small-cnn has BatchNorm layers"
    frozen, free = _bn_buffers(runs[True]), _bn_buffers(runs[False])
    assert all(torch.equal(before[k], frozen[k]) for k in before)  # running stats untouched by training
    assert not all(torch.equal(before[k], free[k]) for k in before)  # the control: they move without the option
    trained = _weights(runs[True])
    assert not all(torch.equal(v, _weights(start)[k]) for k, v in trained.items())  # the model did train


def test_freeze_bn_is_a_stage2_setting():
    cfg = parse({**TINY, "variant": "ffr", "freeze_bn": True})
    assert method_stage(cfg).freeze_bn and not pretrain_stage(cfg).freeze_bn
    assert method_stage(cfg).run_name != method_stage(parse({**TINY, "variant": "ffr"})).run_name


def test_corruption_degrades_stage1_synthetic_images_and_names_its_own_run(tmp_path):
    synthetic = str(tmp_path / "synthetic")
    pipelines.generate({"recipe": "colored-digits", "output": synthetic, "budget": {"per_group": 250},
                        "runner": "local"})
    base = {**TINY, "variant": "ffr", "synthetic_root": synthetic, "epochs": 0, "storage_path": str(tmp_path / "r"),
            "stage1": {"epochs": 1}}
    corrupted = {**base, "stage1": {"epochs": 1, "corruption": "gaussian-noise", "corruption_severity": 5}}
    clean_spec, noisy_spec = pretrain_stage(parse(base)), pretrain_stage(parse(corrupted))
    assert clean_spec.corruption is None and (noisy_spec.corruption, noisy_spec.corruption_severity) == \
        ("gaussian-noise", 5)
    assert clean_spec.run_name != noisy_spec.run_name  # a corrupted stage 1 is never mistaken for the clean one

    result = run_experiment(corrupted)
    stage1 = runs.read_json(f"{tmp_path}/r/{noisy_spec.run_name}/config.json")
    assert stage1["corruption"] == "gaussian-noise" and result["stage1"]["stage"] == 1

    # What stage 1 trains on: every synthetic image degraded; validation (real) images never are.
    from ffr.training.data import load_experiment_data

    train = load_experiment_data(parse(corrupted)).stages[1].train
    clean = loop.image_dataset(train, Preprocessing(32))[0][0]
    noisy = loop.image_dataset(train, Preprocessing(32), corrupt=Corrupt("gaussian-noise", 5))[(0, 0, 0)][0]
    assert (train.source == 1).all() and float((clean - noisy).abs().mean()) > 0.1


@pytest.mark.parametrize("stage1, variant, message", [
    ({"corruption": "fog"}, "ffr", "unknown corruption 'fog'"),
    ({"corruption": "pixelate", "corruption_severity": 7}, "ffr", "severity 7 is out of range"),
    ({"corruption": "pixelate"}, "asb", "variant 'asb' has no stage 1"),
    ({"per_group": 0}, "ffr", "stage1.per_group = 0; expected images per group"),
    ({"per_group": True}, "ffr", "stage1.per_group = True"),
    ({"per_group": 0.5}, "none", "stage1.per_group sizes the stage-1 synthetic set; variant 'none' has no stage 1"),
])
def test_bad_ablation_options_are_one_clear_error(stage1, variant, message):
    with pytest.raises(FFRError, match=message):
        parse({**TINY, "variant": variant, "stage1": stage1})


def _photo(size: int = 256, seed: int = 0) -> np.ndarray:
    """A smooth, textured RGB image (what blur and pixelation visibly change), uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    channels = [np.sin(2 * np.pi * (f * xx + g * yy) + p) for f, g, p in rng.uniform(1, 12, (3, 3))]
    checker = ((xx * 16).astype(int) + (yy * 16).astype(int)) % 2
    return np.clip(127 + 60 * np.stack(channels, -1) + 50 * checker[..., None], 0, 255).astype(np.uint8)


def test_stacked_corruption_distortion_rises_with_severity_and_noise_is_fresh_each_epoch():
    """FFR's ablation: pixelate + defocus blur + Gaussian noise stacked at severity s, on the native-size image
    before the resize, with new noise every epoch (draw)."""
    from PIL import Image

    from ffr import corruptions
    from ffr.datasets.base import GroupedSplit
    from ffr.groups import GroupSpec
    from ffr.training.sampling import EpochSampler

    image = _photo()
    mse = [np.mean([np.mean((corruptions.create("ffr-stacked")(image, s, np.random.default_rng(k)).astype(float)
                             - image) ** 2) for k in range(3)]) for s in corruptions.SEVERITIES]
    assert all(a < b for a, b in zip(mse, mse[1:])), mse
    for name in ("pixelate", "defocus-blur", "gaussian-noise"):  # each single corruption stays an option
        single = corruptions.create(name)(image, 3, np.random.default_rng(0))
        assert single.shape == image.shape and single.dtype == np.uint8 and not np.array_equal(single, image)

    # Through the training data path: 512² synthetic images, corrupted at 512, then resized to 32.
    native = [_photo(512, seed) for seed in range(4)]
    table = pd.DataFrame({"key": ["0", "1", "2", "3"], "y": [0, 1, 0, 1], "b": [0, 0, 1, 1], "source": 1})
    split = GroupedSplit(GroupSpec(("a", "b"), ("x", "y")), table, lambda key: Image.fromarray(native[int(key)]))
    corrupt = Corrupt("ffr-stacked", 3, seed=7)
    data = loop.image_dataset(split, Preprocessing(32), corrupt=corrupt)
    sampler = EpochSampler(len(data), None, len(data), seed=0, tagged=True)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        epochs.append({item[2]: data[item][0] for item in sampler})
    assert all(not torch.equal(epochs[0][i], epochs[1][i]) for i in range(4))  # new noise every epoch
    assert all(torch.equal(data[item][0], epochs[1][item[2]]) for item in sampler)  # a rerun: the same noise
    assert tuple(epochs[0][0].shape) == (3, 32, 32)
    # corrupted at 512², then resized to 32 — not a corrupted 32² image
    at_native = Preprocessing(32).transform()(corrupt(Image.fromarray(native[0]), corrupt.rng(1, 5)))
    assert torch.equal(data[(1, 5, 0)][0], at_native)
    small = Image.fromarray(native[0]).resize((32, 32), Image.Resampling.BILINEAR)
    assert not torch.allclose(Preprocessing(32).transform()(corrupt(small, corrupt.rng(1, 5))), at_native, atol=0.1)
    # cache_in_memory keeps native pixels
    cached = loop.image_dataset(split, Preprocessing(32), in_memory=True, corrupt=corrupt)
    assert torch.equal(cached[(1, 3, 2)][0], data[(1, 3, 2)][0])


def test_corruptions_follow_imagecorruptions():
    """imagecorruptions 1.1.2, which FFR pinned: pixelate upsamples NEAREST, outputs truncate to uint8, the defocus
    disk is the 17×17 aliased disk (normalized before its 3×3 Gaussian smoothing)."""
    from ffr import corruptions

    image = _photo(64)
    pix = corruptions.pixelate(image, 5, np.random.default_rng(0))  # factor 0.25: 16×16 blocks of 4×4 pixels
    assert all(len(np.unique(pix[y:y + 4, x:x + 4].reshape(-1, 3), axis=0)) == 1
               for y in range(0, 64, 4) for x in range(0, 64, 4))
    kernel = corruptions.disk(3, 0.1)
    assert kernel.shape == (17, 17) and abs(kernel.sum() - 1) < 1e-3 and kernel[8, 8] == kernel.max()
    assert corruptions.disk(10, 0.5).shape == (21, 21)
    flat = np.full((40, 40, 3), 100, np.uint8)
    assert np.abs(corruptions.defocus_blur(flat, 4, np.random.default_rng(0)).astype(int) - 100).max() <= 1
    noisy = corruptions.gaussian_noise(flat, 1, np.random.default_rng(0)).astype(float)
    assert abs(noisy.std() - 0.08 * 255) < 1.0 and abs(noisy.mean() - 99.5) < 1.0  # truncation: -0.5 on average


@pytest.mark.parametrize("config, stage1_runs, stage2_runs", [
    # 'no corruption' at any severity is one stage-1 run; every corrupted setting is its own (× frozen BN in stage 2)
    ("configs/sweep-ablation-colored-digits.yaml", 1 + 4 * 3, 2 * (1 + 4 * 3)),
    ("configs/sweep-ablation-quality-celeba-hq.yaml", 1 + 5, 1 + 5),
    ("configs/sweep-ablation-size-celeba-hq.yaml", 4, 4),
])
def test_shipped_ablation_sweep_configs_give_one_valid_run_per_grid_point(config, stage1_runs, stage2_runs, tmp_path,
                                                                          monkeypatch):
    """Every point of a shipped ablation sweep is a valid training config naming its own runs."""
    import copy
    import itertools

    from ffr.config import load_config, set_dotted
    from tune.sweep import base_train_config, parse_sweep

    cached = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"  # the paper configs need their weights
    cached.parent.mkdir(parents=True)
    cached.touch()
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    sweep = parse_sweep(load_config(config))
    base = base_train_config(sweep)
    grid = {key: value[1] for key, value in sweep.search.items()}
    assert all(value[0] == "grid" for value in sweep.search.values())
    names1, names2 = set(), set()
    for values in itertools.product(*grid.values()):
        train = copy.deepcopy(base)
        for key, value in zip(grid, values):
            set_dotted(train, key, value)
        cfg = parse(train)
        names1.add(pretrain_stage(cfg).run_name)
        names2.add(method_stage(cfg).run_name)
    assert (len(names1), len(names2)) == (stage1_runs, stage2_runs)


def test_stage1_size_knob_counts_images_or_a_fraction_of_k(tmp_path):
    """FFR's synthetic-budget ablation: stage 1 takes stage1.per_group images per group (an integer) or that
    fraction of k (a float); each size is its own stage-1 run, and the default keeps FFR's k."""
    from ffr.training.data import load_experiment_data

    synthetic = str(tmp_path / "synthetic")
    pipelines.generate({"recipe": "colored-digits", "output": synthetic, "budget": {"per_group": 240},
                        "runner": "local", "progress": False})
    base = {**TINY, "variant": "ffr", "synthetic_root": synthetic}
    k = 231  # colored-digits at bias ratio 0.95: real train 459/25/26/478 → S = 925, k = floor(925 / 4)

    def stage1_counts(per_group):
        cfg = parse({**base, "stage1": {"per_group": per_group}})
        train = load_experiment_data(cfg).stages[1].train
        return sorted(np.bincount(train.y * 2 + train.b).tolist()), pretrain_stage(cfg).run_name

    default, default_name = stage1_counts(None)
    assert default == [k] * 4
    assert stage1_counts(100)[0] == [100] * 4 and stage1_counts(0.5)[0] == [k // 2] * 4
    assert stage1_counts(1.0) == (default, stage1_counts(1.0)[1]) and stage1_counts(1.0)[1] != default_name
    assert len({stage1_counts(v)[1] for v in (None, 100, 0.5)}) == 3
    assert pretrain_stage(parse({**base, "stage1": {}})).run_name == default_name  # unset: the name it always had
    with pytest.raises(FFRError, match=r"has 240 images of group .* but 462 are needed"):
        stage1_counts(2.0)
