"""Every shipped ``configs/generate-*.yaml`` gives the same manifest as when this test was written.

The digest covers every row's content (ids, prompts, seeds, generator settings, sizes, guide references) and the
column order, so a refactor of where settings live cannot change what an existing config generates. The
digests were computed on the code before the settings moved (issue 10); a deliberate change of a recipe's output
updates them, and says so in its commit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipelines.api import plan

CONFIGS = sorted(Path("configs").glob("generate-*.yaml"))

# {config file: sha256 of its manifest's content}; the overrides below keep each manifest small
PINNED = {
    "generate-colored-digits.yaml": "3baee706ef785a439b2b9121108789cf1bc6dbdc645024818ea69e6e977dfea9",
    "generate-custom.yaml": "99495fc04821cd0719775b0d1f016a0fbdc13b4646122cf2d449fbd5b0bde27e",
    # issue 23's model families (the same recipe; the digests differ only by steps and guidance)
    "generate-custom-flux-schnell.yaml": "a638961726d01073be695954bc1962d08d384bc820d8aa4fb9b80e6a3b7211b9",
    "generate-custom-hyper-sd.yaml": "a638961726d01073be695954bc1962d08d384bc820d8aa4fb9b80e6a3b7211b9",
    "generate-custom-lcm-lora.yaml": "a21acea2519427f25de06205278951eb5d1e66e370b07f049fbc5822855345c6",
    "generate-custom-sd3-turbo.yaml": "a638961726d01073be695954bc1962d08d384bc820d8aa4fb9b80e6a3b7211b9",
    "generate-custom-sd3.yaml": "f44e561bf3c26c0a4ae9b45d418cfcbbf3aa3f295cac812886b811a412dded44",
    "generate-custom-sdxl-turbo.yaml": "75f930b98f857ccea0de22d138f5d2c6093b2f3eba18f65fa7dff8363e04d11b",
    "generate-custom-tcd.yaml": "a638961726d01073be695954bc1962d08d384bc820d8aa4fb9b80e6a3b7211b9",
    "generate-d3s-background.yaml": "e142268cb424b259ed994997351e19b6a8d384407e1eaab58adb4b1610a0edb6",
    "generate-d3s-geography.yaml": "a41326ea32e4e3e4e250bc4693908ad4bec23dd6680ac5ec2193ce0ae6ab2677",
    "generate-d3s-time.yaml": "c9cb32deffe53d8dd88b07e4b8fc13286ae4b8b3567c06fa1c3c825e17871abc",
    "generate-ffr-celeba.yaml": "a7df79f912e2ea3883652dd5d9f243754cdfba72e6e97c37f62558e92338d787",
    "generate-ffr-spuco-animals.yaml":  # issue 20: the 8 groups SpuCo Animals has, no longer all 16 (class, bias) pairs
        "f0442926de50bd6ab2538907c81190dcf33f689ee0eafb935a1807cc4be31873",
    "generate-ffr-utkface.yaml": "770bb259ab643f006df5a10396ae9664598f2f2baf7ab0de8e95e94c0688a2e8",
}


def _folders(root: Path, names: list[str]) -> str:
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / name / "0.JPEG")
    return str(root)


def manifest_digest(config: dict, root: Path) -> str:
    df = plan(config)
    rows = json.dumps([list(df.columns), df.to_dict(orient="records")], sort_keys=True, default=str)
    return hashlib.sha256(rows.replace(str(root), "<root>").encode()).hexdigest()


def small(config: dict, root: Path) -> dict:
    """The shipped config with a local output, a small budget and (D3S) two classes with local guide folders."""
    config = {**config, "output": str(root / "out")}
    budget = dict(config["budget"])
    if budget.get("per_group") is not None:
        budget["per_group"] = min(budget["per_group"], 7)
    config["budget"] = budget
    options = dict(config["recipe"].get("options") or {})
    if config["recipe"]["name"].startswith("d3s-"):
        options["classes"] = [7, 388]
        if options.get("foreground_root"):
            options["foreground_root"] = _folders(root / "imagenet", ["7", "388"])
    config["recipe"] = {**config["recipe"], "options": options}
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_give_the_pinned_manifest(path, tmp_path):
    digest = manifest_digest(small(yaml.safe_load(path.read_text()), tmp_path), tmp_path)
    assert PINNED.get(path.name) == digest, f"{path.name}: manifest digest {digest}"
