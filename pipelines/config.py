"""The typed config of one generation run; ``ffr generate --config FILE key=value`` and ``pipelines.generate``.

Every field has a default except the recipe name and the output root. ``None`` under ``generator``
means "the recipe's default" (e.g. D3S: img2img, strength 0.9, guidance 5, 50 steps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ffr.balance import BUDGET_MODES
from ffr.config import build, redact, to_dict
from ffr.errors import FFRError

IMAGE_FORMATS = ("png", "jpg", "webp")
# Keys that may change on an existing output: the budget (a larger one extends it) and how the run executes.
# Every other key changes what an id's image is, so it is recorded with the output and must stay the same.
MUTABLE_KEYS = ("output", "budget", "shard_size", "batch_size", "runner", "ray", "progress", "contact_sheet_size",
                "contact_sheet_groups", "s3_endpoint", "verbose")


@dataclass
class RecipeConfig:
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BudgetConfig:
    """*Accepted* images per group: ``per_group`` (an int, or {"y,b": n}), or FFR's rule from real counts.

    Rejected images are replaced (pipelines/budget.py); a larger budget on an existing output extends it.
    """

    per_group: Any = None
    # {"y,b": n} of the real TRAINING set AFTER bias-ratio downsampling (what training sees; `ffr balance
    # --counts FULL --bias-ratio R --budget-block` prints this block from the full counts)
    real_counts: dict[str, int] | None = None
    mode: str = "ffr"  # usb | asb | ffr | all (all = per-group max of the three: one output for every variant)
    max_factor: float = 3.0  # at most max_factor × target rows per group are generated; then the run fails


@dataclass
class GeneratorConfig:
    """What to make, over the recipe's defaults; every manifest row carries the result (pipelines/manifest.py)."""

    mode: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    strength: float | None = None
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    # LoRA adapters each row uses (names declared in backend.settings.adapters, '+' stacks them, '' = none): one
    # string for every row, or a mapping by group {"y,b": names, "default": names}; None = every declared adapter
    adapter: str | dict[str, str] | None = None


@dataclass
class BackendConfig:
    name: str | None = None  # default: the recipe's backend (diffusers, or procedural for colored-digits)
    # how to run (model, dtype, device, compile...): the backend's Options, validated by BACKENDS.options
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class FilterConfig:
    gray_threshold: float | None = None  # per pixel; None = the recipe's (FFR's) value; 0 = off
    clip_model: str | None = None  # a local dir or s3:// prefix of a CLIP model; None = no CLIP filter
    clip_threshold: float = 20.0


@dataclass
class RayConfig:
    min_actors: int = 1
    max_actors: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    max_tasks_in_flight_per_actor: int = 2  # 2: the next shard is queued while one runs
    # Custom resources per actor; None: generate_gpu per GPU where the cluster declares it (ffr.cluster.resources)
    resources: dict[str, float] | None = None


@dataclass
class GenerateConfig:
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    output: str = ""
    seed: int = 0
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    shard_size: int = 1000
    batch_size: int = 8  # THE batch size: rows per backend call (per GPU); diffusers pads every call to it
    image_format: str = "png"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    runner: str = "ray"  # ray: Ray Data over an actor pool; local: the same worker in this process
    ray: RayConfig = field(default_factory=RayConfig)
    contact_sheet_size: int = 16  # samples per group in each contact sheet
    contact_sheet_groups: int = 200  # sheets for the first N groups only (d3s has 10,000 groups)
    s3_endpoint: str | None = None  # S3-compatible endpoint (MinIO...); default $FFR_S3_ENDPOINT / $AWS_ENDPOINT_URL
    progress: bool = True  # a progress bar per round (Ray Data's own, on the Ray runner)
    verbose: bool = False  # Ray Data's execution banners and operator progress bars (ffr generate --verbose)

    def validate(self) -> "GenerateConfig":
        if not self.recipe.name:
            raise FFRError("config key 'recipe.name' is missing; expected a recipe name (see 'ffr generate --help')")
        if not self.output:
            raise FFRError("config key 'output' is missing; expected a local folder or an s3:// prefix")
        for key in ("shard_size", "batch_size"):
            if getattr(self, key) < 1:
                raise FFRError(f"config key {key!r} = {getattr(self, key)!r}; expected an integer >= 1")
        if self.image_format not in IMAGE_FORMATS:
            raise FFRError(f"config key 'image_format' = {self.image_format!r}; expected one of {IMAGE_FORMATS}")
        if self.runner not in ("ray", "local"):
            raise FFRError(f"config key 'runner' = {self.runner!r}; expected 'ray' or 'local'")
        if not 1 <= self.ray.min_actors <= self.ray.max_actors:
            raise FFRError(f"config keys ray.min_actors/max_actors = {self.ray.min_actors}/{self.ray.max_actors}; "
                           "expected 1 <= min_actors <= max_actors")
        if self.budget.mode not in BUDGET_MODES:
            raise FFRError(f"config key 'budget.mode' = {self.budget.mode!r}; expected one of {BUDGET_MODES}")
        if not self.budget.max_factor >= 1:
            raise FFRError(f"config key 'budget.max_factor' = {self.budget.max_factor!r}; expected a number >= 1")
        if self.generator.mode not in (None, "t2i", "img2img"):
            raise FFRError(f"config key 'generator.mode' = {self.generator.mode!r}; expected 't2i' or 'img2img'")
        check_places(self.backend.settings, "backend.settings")
        return self


# One place per setting (issue 10). What to make — the generator section over the recipe's defaults — is
# carried by every manifest row; backend.settings say how to run; the run has one batch_size. A key given in
# the wrong place used to be accepted and silently lose to the row's value, so it is refused, naming its place.
WHAT_KEYS = tuple(GeneratorConfig.__dataclass_fields__)
MOVED = {**{key: f"generator.{key}" for key in WHAT_KEYS}, "batch_size": "batch_size (top level)"}


def check_places(section: Any, where: str, accepted: tuple[str, ...] = ()) -> None:
    """Refuse, in one line, a key of ``section`` (at config path ``where``) that belongs elsewhere."""
    for key in section if isinstance(section, dict) else ():
        if key in MOVED and key not in accepted:
            kind = "the run's one batch size" if key == "batch_size" else "what to make, not how to run"
            raise FFRError(f"config key '{where}.{key}' is not accepted there: it is {kind}; "
                           f"set {MOVED[key]} instead")


def legacy_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """An output's recorded identity as this version records it: backend settings that never took effect
    (what to make always came from the rows) or moved (``batch_size``) are left out."""
    dropped = {f"backend.settings.{key}" for key in MOVED}
    return {k: v for k, v in identity.items() if k not in dropped}


def normalize(config: dict[str, Any]) -> dict[str, Any]:
    """``recipe: name`` is short for ``recipe: {name: name}``."""
    if not isinstance(config, dict):
        raise FFRError(f"a generation config must be a mapping or GenerateConfig, got {type(config).__name__}")
    data = dict(config)
    if isinstance(data.get("recipe"), str):
        data["recipe"] = {"name": data["recipe"]}
    return data


def to_config(config: "GenerateConfig | dict[str, Any]") -> GenerateConfig:
    """A validated GenerateConfig from a dict (see :func:`normalize`) or as is."""
    if isinstance(config, GenerateConfig):
        return config.validate()
    cfg = build(GenerateConfig, normalize(config))
    for key in ("recipe", "budget", "generator", "backend", "filters", "ray"):
        value = getattr(cfg, key)
        if not hasattr(value, "__dataclass_fields__"):
            raise FFRError(f"config section {key!r} must be a mapping, got {value!r}")
    for key in ("recipe.options", "backend.settings"):
        section, leaf = key.split(".")
        if not isinstance(getattr(getattr(cfg, section), leaf), dict):
            raise FFRError(f"config key {key!r} must be a mapping, got {getattr(getattr(cfg, section), leaf)!r}")
    return cfg.validate()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_identity(cfg: GenerateConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    """What an output's images depend on, as flat ``{dotted key: value}`` (JSON types, secrets redacted).

    ``resolved`` holds the effective values of keys whose ``None`` means "the recipe's default" (backend name,
    gray threshold, generator settings), so writing the default out explicitly is not a change.
    """
    data = {k: v for k, v in to_dict(cfg).items() if k not in MUTABLE_KEYS}
    data.update(resolved)
    return json.loads(json.dumps(flatten(redact(data)), default=str, sort_keys=True))


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old → new`` for every key that differs (sorted), ``(unset)`` where one side lacks the key."""
    missing = object()
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            shown = ["(unset)" if v is missing else json.dumps(v) for v in (a, b)]
            out.append(f"{key}: {shown[0]} → {shown[1]}")
    return out
