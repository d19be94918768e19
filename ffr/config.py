"""Typed configs from YAML plus ``key=value`` overrides, as the CLI takes them.

``load_config("configs/x.yaml", ["train.lr=0.01"])`` returns a plain dict; ``build(SomeDataclass, d)``
turns it into a (nested) dataclass and rejects unknown keys with one clear line. Every run dumps its
resolved config next to its outputs (``dump_config``), with secret-looking keys removed; ``show_config``
prints every key with its default and resolved value (``ffr <command> --show-config``).

All YAML the project reads (config files, ``key=value`` overrides, recipe word lists, cluster files) goes
through :func:`load_yaml`: PyYAML implements YAML 1.1, where ``1e-4``, ``3E-4`` and ``-.5`` are *strings*
(1.1 floats need a dot and a signed exponent). :class:`YamlLoader` swaps in the YAML 1.2 core-schema float
rule, so every number a researcher writes is a number.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ffr.errors import FFRError
from ffr.options import suggest
from ffr.secrets import configured_secrets, is_secret_name, scrub

T = TypeVar("T")
SECRET_MARKERS = ("secret", "password", "token", "access_key", "session_key", "credential")

# YAML 1.2 core-schema floats: a dot or an exponent (sign optional), or .inf/.nan. Plain integers do not
# match, so they stay ints (the float rule is tried before the int rule).
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 float resolution (``1e-4``, ``3E-4``, ``.5``, ``-.5`` are floats)."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+.0123456789":
    YamlLoader.yaml_implicit_resolvers.setdefault(_first, []).insert(0, ("tag:yaml.org,2002:float", _FLOAT_12))


def load_yaml(text: str) -> Any:
    """Parse YAML text the way every ffr config is parsed (safe, YAML 1.2 floats)."""
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 — YamlLoader is a SafeLoader


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise FFRError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        if not key:
            raise FFRError(f"override {item!r} has an empty key")
        out[key] = load_yaml(raw) if raw else ""
    return out


def set_dotted(d: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        nxt = d.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise FFRError(f"override {dotted!r}: {p!r} is a value, not a section")
        d = nxt
    d[leaf] = value


def read_yaml_mapping(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping (empty file → {}); one clear FFRError line naming ``what`` and the path."""
    p = Path(path)
    if not p.is_file():
        raise FFRError(f"{what} {str(path)!r} does not exist")
    try:
        data = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise FFRError(f"{what} {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise FFRError(f"{what} {str(path)!r} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML config file (or start empty) and apply ``key.sub=value`` overrides."""
    data = read_yaml_mapping(path, "config file") if path is not None else {}
    for key, value in parse_overrides(overrides or []).items():
        set_dotted(data, key, value)
    return data


_SCALARS = (int, float, str, bool)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, where)
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in _SCALARS and not isinstance(value, tp):
        raise FFRError(f"config key {where!r} = {value!r}; expected {tp.__name__}")
    if origin in (tuple, list):
        return _sequence(origin, typing.get_args(tp), value, where)
    return value


def _sequence(origin: type, args: tuple, value: Any, where: str) -> Any:
    """A list (or tuple) key: a list as given, a scalar as a one-item list (``seeds=3`` → ``[3]``,
    ``methods=erm`` → ``["erm"]``: a string is never iterated letter by letter), items of a declared scalar
    type checked; anything else is one line saying a list was expected."""
    item = args[0] if args and args[0] in _SCALARS else None
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, _SCALARS):
        items = [value]
    else:
        kind = f"a list of {item.__name__}" if item else "a list"
        raise FFRError(f"config key {where!r} = {value!r}; expected {kind}, e.g. [{_example(item)}]")
    if item is not None:
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(items)]
    return origin(items)


def _example(item: type | None) -> str:
    return {int: "0, 1", float: "0.1, 0.2", str: "a, b", bool: "true, false"}.get(item, "a, b")


def build(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise FFRError."""
    if not isinstance(data, dict):
        raise FFRError(f"config section {where or cls.__name__!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise FFRError(f"unknown config key {key!r}; {suggest(unknown[0], set(fields))} (--show-config lists all)")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise FFRError(f"config section {where or cls.__name__!r}: {e}") from None


def redact(obj: Any, _secrets: dict[str, str] | None = None) -> Any:
    """Drop values whose key looks like a secret, recursively (configs dumped beside runs, MLflow params).

    Keys are matched by ffr.secrets.is_secret_name (whole words: "tokenizer" is kept). String values
    are also scrubbed of secrets configured in the environment and of URL passwords (``http://user:pw@host``),
    which hide under harmless keys such as ``tracking_uri``.
    """
    secrets = configured_secrets() if _secrets is None else _secrets  # read the environment once per call
    if isinstance(obj, dict):
        return {k: ("<redacted>" if is_secret_name(k) else redact(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        return scrub(obj, secrets)
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_config(obj: Any) -> str:
    """The resolved config as pretty JSON, secrets redacted — written beside every run's outputs."""
    return json.dumps(redact(to_dict(obj)), indent=2, sort_keys=True, default=str)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def config_rows(cls: type, resolved: Any, prefix: str = "", defaults: Any = None) -> list[tuple[str, Any, Any]]:
    """(dotted key, default, resolved value) for every field of dataclass ``cls``, nested sections flattened.

    Defaults come from the dataclass fields themselves, so a new field shows up without any edit here; a
    section whose default is an instance (``stage1: StageOptions(lr=1e-4)``) gives its own values as the
    defaults of its keys. Free-form mappings (``recipe.options``, ``method_hparams``) are one row each: their
    keys have no defaults.
    """
    hints = typing.get_type_hints(cls)
    rows: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        value = getattr(resolved, f.name) if resolved is not None else dataclasses.MISSING
        section = next((t for t in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(t)),
                       None)
        if section is not None and (dataclasses.is_dataclass(default) or dataclasses.is_dataclass(value)):
            rows += config_rows(section, value if dataclasses.is_dataclass(value) else None, key + ".",
                                default if dataclasses.is_dataclass(default) else None)
            continue
        rows.append((key, default, value))
    return rows


def _shown(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "(required)"
    return json.dumps(to_dict(value), default=str)


def format_config(cls: type, resolved: Any, prefix: str = "", expand: dict[str, list[tuple]] | None = None) -> str:
    """A table — key, default, value[, description] — with ``*`` marking keys that differ from the default.

    ``expand``: {key of a free-form mapping (e.g. ``recipe.options``): its rows} — the chosen entry's options
    (``ffr.options.rows``: key, default, value, description) shown one per row instead of the mapping's one row.
    """
    secrets = configured_secrets()
    rows = []
    table = [(*r[:3], r[3] if len(r) > 3 else "")
             for key, *rest in config_rows(cls, resolved, prefix)
             for r in ((expand or {})[key] if key in (expand or {}) else [(key, *rest)])]
    for key, default, value, text in table:
        if is_secret_name(key.rsplit(".", 1)[-1]):
            default, value = ("<redacted>" if v not in (None, "", dataclasses.MISSING) else v for v in (default, value))
        rows.append(("*" if to_dict(default) != to_dict(value) else " ", key,
                     _shown(redact(default, secrets)), _shown(redact(value, secrets)), text))
    width_key = max(len(r[1]) for r in rows)
    width_default = min(max(len(r[2]) for r in rows), 40)
    width_value = min(max(len(r[3]) for r in rows), 40)
    lines = [f"  {'key':<{width_key}}  {'default':<{width_default}}  value"]
    lines += [f"{mark} {key:<{width_key}}  {default:<{width_default}}  "
              + (f"{value:<{width_value}}  {text}" if text else value) for mark, key, default, value, text in rows]
    lines.append("(* = differs from the default)")
    return "\n".join(lines)


def add_config_arguments(parser: Any, config_help: str, overrides_help: str) -> None:
    """``--config FILE``, ``key=value`` overrides and ``--show-config``: how every config-driven command starts."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    add_show_config(parser)


def add_show_config(parser: Any) -> None:
    """The shared ``--show-config`` flag of every command that takes a config."""
    parser.add_argument("--show-config", action="store_true",
                        help="print every config key with its default and resolved value, then exit")
