"""LoRA adapters of the diffusers backend: declared once in ``backend.settings.adapters``, chosen per row.

    backend:
      settings:
        model: runwayml/stable-diffusion-v1-5
        adapters:
          - {name: lcm, path: latent-consistency/lcm-lora-sdv1-5}               # hub id (from the HF cache)
          - {name: smiling, path: s3://bucket/loras/smiling, scale: 0.8}        # a folder (synced once per node)
          - {name: frowning, path: /data/loras/frowning.safetensors}            # a local file
    generator:
      adapter: {"0,0": "lcm+frowning", "1,0": "lcm+smiling", default: lcm}    # per group; or one string

Which adapters a row uses is *what to make*: its ``adapter`` column, from ``generator.adapter`` (one string for
every row, or a mapping by group ``"y,b"`` with an optional ``default``; ``+`` stacks adapters, ``""`` is the
base model). Without ``generator.adapter`` every row uses all declared adapters, stacked, so one declared
adapter (a distillation LoRA such as LCM-LoRA) needs nothing else. Rows with different adapters go to separate
pipeline calls.

When every row of a run uses all the declared adapters, they are fused into the weights once, at load (no LoRA
branch at each step: the fast path); the driver decides this from the run's ``generator.adapter``
(``fuse_adapters: null``) and ships the decision, so every actor makes the same pixels. Otherwise each call
activates its row's adapters at their scales (``set_adapters``). Every image's record names its adapters with
path, scale and whether they were fused; the adapters are also part of the output's recorded identity
(``backend.settings.adapters``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from ffr.errors import FFRError
from ffr.options import Field, Options
from ffr.storage import is_remote
from pipelines.model_source import check_model_source, resolve_model

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
STACK = "+"


class AdapterOptions(Options):
    """One LoRA adapter: where its weights are and how strongly it acts."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="what generator.adapter calls it")
    path: str = Field(min_length=1, description="a hub id, a local folder or file, or an s3:// folder or file")
    scale: float = Field(1.0, description="LoRA scale (0 = the base model)")
    weight_name: str | None = Field(None, description="the weights file inside a folder or hub repo, when "
                                                      "there are several")


def check_adapter_names(adapters: list[AdapterOptions]) -> list[AdapterOptions]:
    names = [a.name for a in adapters]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"adapter name {twice[0]!r} is declared twice; expected unique names")
    return adapters


def split_path(adapter: AdapterOptions) -> tuple[str, str | None]:
    """(folder, hub id or s3:// prefix, weights file name or None): a path ending in a weights file is split."""
    path, weight = adapter.path.rstrip("/"), adapter.weight_name
    if path.endswith(WEIGHT_SUFFIXES):
        if weight is not None:
            raise FFRError(f"adapter {adapter.name!r}: path {adapter.path!r} names a file and weight_name "
                           f"{weight!r} another; expected one of them")
        folder, _, weight = path.rpartition("/")
        return folder or ".", weight
    return path, weight


def check_adapter_source(adapter: AdapterOptions) -> None:
    """On the driver: a local folder (and its weights file) exists, an s3:// folder holds files (one listing;
    nothing is copied). Hub ids are not checked here (offline, the actor's load says whether it is cached)."""
    folder, weight = split_path(adapter)
    try:
        check_model_source(folder)
    except FFRError as e:
        raise FFRError(f"adapter {adapter.name!r}: {e}") from None
    local = os.path.expanduser(folder)
    if weight is not None and not is_remote(folder) and os.path.isdir(local) \
            and not os.path.isfile(os.path.join(local, weight)):
        raise FFRError(f"adapter {adapter.name!r}: weights file {os.path.join(folder, weight)!r} does not exist")


def resolve_adapter(adapter: AdapterOptions, cache_dir: str | None) -> tuple[str, str | None]:
    """(what ``load_lora_weights`` reads: a local folder or a hub id, the weights file name or None). s3://
    folders are synced once per node like models (the whole folder: keep one adapter per folder)."""
    folder, weight = split_path(adapter)
    try:
        return resolve_model(folder, cache_dir), weight
    except FFRError as e:
        raise FFRError(f"adapter {adapter.name!r}: {e}") from None


def parse_selection(value: Any, declared: list[str], where: str) -> tuple[str, ...]:
    """A row's adapters as a tuple of declared names: None → all declared (stacked), "" → none, "a+b" → both."""
    if value is None:
        return tuple(declared)
    if not isinstance(value, str):
        raise FFRError(f"{where} = {value!r}; expected adapter names joined by '+', or '' for the base model")
    names = tuple(n.strip() for n in value.split(STACK) if n.strip())
    unknown = [n for n in names if n not in declared]
    if unknown:
        known = ", ".join(declared) if declared else "none are declared in backend.settings.adapters"
        raise FFRError(f"{where} names adapter {unknown[0]!r}; expected one of: {known}")
    if len(set(names)) != len(names):
        raise FFRError(f"{where} = {value!r} names an adapter twice")
    return tuple(n for n in declared if n in names)  # declared order: one canonical stack per set


def run_selections(generator_adapter: Any, declared: list[str]) -> set[tuple[str, ...]]:
    """Every adapter set the run's rows will use, from ``generator.adapter`` (one value or a group mapping)."""
    if isinstance(generator_adapter, Mapping):
        return {parse_selection(v, declared, f"generator.adapter[{k!r}]") for k, v in generator_adapter.items()}
    return {parse_selection(generator_adapter, declared, "generator.adapter")}


class AdapterState:
    """The adapters loaded into one pipeline, and which are active: fused once, or set per call."""

    def __init__(self, pipe, adapters: list[AdapterOptions], fuse: bool, cache_dir: str | None, model: str) -> None:
        self.pipe, self.adapters, self.fuse, self.model = pipe, {a.name: a for a in adapters}, fuse, model
        self.declared = [a.name for a in adapters]
        self.active: tuple[str, ...] | None = None
        self.fused: tuple[str, ...] | None = None
        if not adapters:
            return
        if not hasattr(pipe, "load_lora_weights"):
            raise FFRError(f"model {model!r} ({type(pipe).__name__}) cannot load LoRA adapters; expected a pipeline "
                           "with diffusers' LoRA loader (SD 1.x/2.x, SDXL, SD3, FLUX...)")
        from diffusers.utils import logging as diffusers_logging

        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # "no LoRA keys for the text encoder" and the like, per actor
        try:
            with warnings.catch_warnings():
                # peft warns "Already found a peft_config attribute" at each adapter after the first: expected
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                for adapter in adapters:
                    self._load_one(adapter, cache_dir)
        finally:
            diffusers_logging.set_verbosity(verbosity)
        if fuse:  # now, into the plain modules: before offload hooks, caches and torch.compile wrap them
            self._fuse(tuple(self.declared))

    def _load_one(self, adapter: AdapterOptions, cache_dir: str | None) -> None:
        where, weight = resolve_adapter(adapter, cache_dir)
        kwargs = {"weight_name": weight} if weight else {}
        try:
            self.pipe.load_lora_weights(where, adapter_name=adapter.name, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FFRError(f"adapter {adapter.name!r} ({adapter.path!r}) cannot be loaded into {self.model!r}: "
                           f"{first[:300]}") from None

    def selection(self, row: dict) -> tuple[str, ...]:
        value = row.get("adapter")
        if isinstance(value, float):  # a Parquet null in a column that other rows fill
            value = None
        return parse_selection(value, self.declared, f"manifest row {row.get('id', '?')!r}: adapter")

    def activate(self, names: tuple[str, ...]) -> None:
        """Make ``names`` the adapters of the next pipeline call."""
        if not self.declared or names == self.active:
            return
        if self.fuse:
            if names != self.fused:
                raise FFRError(f"adapters {'+'.join(self.fused) or '(none)'} were fused for the whole run, and a "
                               f"row asks for {'+'.join(names) or '(none)'}; set fuse_adapters: false")
        elif names:
            self.pipe.set_adapters(list(names), [self.adapters[n].scale for n in names])
            self.pipe.enable_lora()
        else:
            self.pipe.disable_lora()  # the base model: every LoRA branch off
        self.active = names

    def _fuse(self, names: tuple[str, ...]) -> None:
        self.pipe.set_adapters(list(names), [self.adapters[n].scale for n in names])
        self.pipe.fuse_lora(components=list(self.pipe._lora_loadable_modules), adapter_names=list(names))
        # The LoRA branches are no longer needed once their product is in the weights (memory, and one matmul
        # less per projection and step).
        self.pipe.unload_lora_weights()
        self.fused = names

    def record(self, names: tuple[str, ...]) -> list[dict[str, Any]]:
        return [{"name": n, "path": self.adapters[n].path, "scale": self.adapters[n].scale,
                 **({"weight_name": self.adapters[n].weight_name} if self.adapters[n].weight_name else {}),
                 "fused": self.fuse} for n in names]
