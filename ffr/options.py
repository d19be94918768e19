"""The one option mechanism of every registry entry: recipes, backends, methods, datasets, backbones.

An entry declares its options once, as a pydantic model beside its code::

    class Options(ffr.options.Options):
        width: int = Field(32, ge=1, description="channels of the first layer")

and whoever builds the entry calls :func:`parse` (or :meth:`ffr.registry.Registry.options`). That gives:
- typed fields (YAML ints become floats where a float is declared, never the other way round),
- unknown keys refused, bad values refused, each with **one line naming the key**, the value and what
  was expected (an :class:`~ffr.errors.FFRError`, so the CLI prints it and exits 2),
- defaults and descriptions that ``--show-config`` prints without any per-entry code (:func:`rows`).

Group keys ("y,b") are written the same way everywhere (budgets, synthetic counts, balance tables):
:func:`group_key` is the one parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
from pydantic import ConfigDict, Field  # noqa: F401  (re-exported: entries write `from ffr.options import Field`)

from ffr.errors import FFRError

OptionsT = TypeVar("OptionsT", bound="Options")


class Options(pydantic.BaseModel):
    """Base class of every entry's options: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, arbitrary_types_allowed=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists), for config dumps and run-name digests."""
        return self.model_dump(mode="json")


class NoOptions(Options):
    """For entries that take none; any key is refused with the usual one line."""


PATH = "ffr_path"  # the key under a Field's json_schema_extra marking a path option (see PathField)


def PathField(default: Any = ..., *, keep: tuple[str, ...] = (), keep_prefixes: tuple[str, ...] = (),
              model: bool = False, **kwargs: Any) -> Any:  # noqa: N802 - used like pydantic's Field
    """A ``Field`` holding a local path or a URI (or a list of them): the driver resolves it against the
    directory the command was started in, once, before Ray starts (:func:`resolve_paths`).

    ``keep``: values that are names, not paths (e.g. ``'imagenet'``); ``keep_prefixes``: prefixes of shipped
    names (``'data/'``) kept unless such a file exists where the command runs; ``model``: a hub id
    (``org/name``) or a local directory — resolved only when it is a local directory or looks like a path."""
    marker = {"keep": list(keep), "keep_prefixes": list(keep_prefixes), "model": model}
    return Field(default, json_schema_extra={PATH: marker}, **kwargs)


def looks_like_path(value: str) -> bool:
    """A model reference that is a local path rather than a hub id (``org/name``)."""
    return value.startswith(("/", "./", "../", "~", "file://")) or value in (".", "..") or value.count("/") > 1


def path_options(cls: type[Options]) -> dict[str, dict]:
    """{option name: its PathField marker} of every path option of ``cls``."""
    return {name: f.json_schema_extra[PATH] for name, f in cls.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and PATH in f.json_schema_extra}


def suggest(key: str, known: list[str] | set[str] | tuple[str, ...], shown: int = 6) -> str:
    """What to say after "unknown key 'lrr'": a close match (``did you mean 'lr'?``), else a few of the known
    keys, shortened (``expected one of: a, b, … (+32 more)``)."""
    import difflib

    names = sorted(known)
    within = [n for n in names if len(key) >= 3 and key.lower() in n.lower()]  # 'dro' → 'groupdro'
    close = list(dict.fromkeys([*within, *difflib.get_close_matches(key, names, n=3, cutoff=0.6)]))[:3]
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    if len(names) <= shown:
        return f"expected one of: {', '.join(names)}"
    return f"expected one of: {', '.join(names[:shown])}, … (+{len(names) - shown} more)"


def _where(where: str, loc: tuple) -> str:
    key = ".".join(str(p) for p in loc if not isinstance(p, int) or len(loc) == 1)
    return f"{where}.{key}" if where and key else (where or key)


def _one_line(cls: type[Options], error: pydantic.ValidationError, where: str, owner: str) -> str:
    first = error.errors(include_url=False)[0]
    loc = tuple(first.get("loc", ()))
    key = _where(where, loc)
    of = f" of {owner}" if owner else ""
    if first["type"] == "extra_forbidden":
        if not cls.model_fields:
            return f"unknown option {key!r}{of}; it takes no options"
        return f"unknown option {key!r}{of}; {suggest(str(loc[-1]) if loc else key, set(cls.model_fields))}"
    if first["type"] == "missing":
        return f"option {key!r}{of} is required"
    msg = first["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"option {key!r}{of} = {first.get('input')!r}: {msg}"


def parse(cls: type[OptionsT], values: Mapping[str, Any] | OptionsT | None, where: str = "",
          owner: str = "") -> OptionsT:
    """Validate ``values`` into ``cls``; one FFRError line naming the first bad key.

    ``where`` is the dotted config path the options sit under (e.g. ``backbone_options``), ``owner`` the
    entry they belong to (e.g. ``backbone 'small-cnn'``); both only shape the message."""
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if isinstance(values, Options):
        values = values.model_dump()
    if not isinstance(values, Mapping):
        raise FFRError(f"options {where or owner or cls.__name__!r} must be a mapping, got {values!r}")
    try:
        return cls.model_validate(dict(values))
    except pydantic.ValidationError as e:
        raise FFRError(_one_line(cls, e, where, owner)) from None


def defaults(cls: type[Options]) -> dict[str, Any]:
    """Every option's default (required ones left out), JSON-able."""
    return {name: pydantic.TypeAdapter(f.annotation).dump_python(f.get_default(call_default_factory=True),
                                                                   mode="json")
            for name, f in cls.model_fields.items() if not f.is_required()}


def rows(cls: type[Options], resolved: Options | Mapping[str, Any] | None, prefix: str = "") -> list[tuple]:
    """(dotted key, default, resolved value, description) per option, for ``--show-config`` tables."""
    values = resolved.to_dict() if isinstance(resolved, Options) else dict(resolved or {})
    out = []
    for name, f in cls.model_fields.items():
        default = "(required)" if f.is_required() else defaults(cls)[name]
        out.append((f"{prefix}{name}", default, values.get(name, default), f.description or ""))
    return out


def group_key(key: Any, where: str = "group key", n_classes: int | None = None,
              n_bias: int | None = None) -> tuple[int, int]:
    """A (y, b) group from ``(y, b)``, ``[y, b]``, ``"y,b"``, ``"y_b"`` or ``"y/b"``; range-checked when the
    numbers of classes and biases are given."""
    parts = key if isinstance(key, (list, tuple)) else str(key).replace("_", ",").replace("/", ",").split(",")
    try:
        if len(parts) != 2 or any(isinstance(p, bool) for p in parts):
            raise ValueError
        y, b = (int(str(p).strip()) for p in parts)
    except (TypeError, ValueError):
        raise FFRError(f"{where} {key!r} is not a group 'y,b' (e.g. '0,1')") from None
    if y < 0 or b < 0 or (n_classes is not None and y >= n_classes) or (n_bias is not None and b >= n_bias):
        raise FFRError(f"{where} {key!r} is outside {n_classes} classes × {n_bias} biases")
    return y, b


def group_keyed(mapping: Mapping[Any, Any] | None, where: str, n_classes: int | None = None,
                n_bias: int | None = None) -> dict[tuple[int, int], Any]:
    """A mapping keyed by group keys in any accepted spelling → keyed by (y, b) tuples."""
    return {group_key(k, f"{where} key", n_classes, n_bias): v for k, v in dict(mapping or {}).items()}
