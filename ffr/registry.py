"""A tiny name → factory registry, shared by every extensible concept.

Recipes, generator backends, datasets, backbones and stage-2 methods each keep one ``Registry``; a new
entry is a decorated class or function, and one parametrized test walks every registry so that a new
entry is tested the moment it is registered. An entry's options are an ``Options`` attribute (a model of
:mod:`ffr.options`); :meth:`Registry.options` validates a mapping against it.

Code outside this repository registers through package entry points (as pytest and timm plugins do): a
distribution that declares ``[project.entry-points."ffr.methods"] my-method = "my_pkg.methods:MyMethod"`` is
found by name in every process that has it installed (the driver, Ray workers, Tune trials), with no import of
``my_pkg`` in user code. Entry points are read once per process and loaded only when their name is used.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from ffr.errors import FFRError

T = TypeVar("T")


@functools.cache
def _all_entry_points() -> metadata.EntryPoints:
    return metadata.entry_points()  # one scan of the installed distributions per process


class Registry(Generic[T]):
    def __init__(self, kind: str, plugins: str | None = None) -> None:
        """``plugins``: the entry-point group whose entries join this registry (e.g. ``ffr.methods``)."""
        self.kind = kind
        self.plugins = plugins
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name → module that registers it when imported
        self._plugin_points: dict[str, metadata.EntryPoint] | None = None  # read on first need

    def _plugin_entries(self) -> dict[str, metadata.EntryPoint]:
        if self._plugin_points is None:
            points = _all_entry_points().select(group=self.plugins) if self.plugins else ()
            self._plugin_points = {}
            for point in points:
                known = self._entries.get(point.name)
                imported = known is not None and getattr(known, "__module__", None) == point.module
                if (point.name in self._entries or point.name in self._lazy) and not imported:
                    # a silent shadow of a built-in would change what existing configs mean
                    raise FFRError(f"plugin {point.value!r} ({self.plugins}) registers {self.kind} {point.name!r}, "
                                   f"which ffr already has; expected a new name")
                self._plugin_points[point.name] = point
        return self._plugin_points

    def _load_plugin(self, name: str) -> None:
        point = self._plugin_entries()[name]
        try:
            obj = point.load()  # importing it may register the entry through its decorator
        except Exception as e:
            raise FFRError(f"{self.kind} {name!r}: plugin {point.value!r} ({self.plugins}) failed to load: "
                           f"{type(e).__name__}: {e}") from e
        self._entries.setdefault(name, obj)

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def register_lazy(self, name: str, module: str) -> None:
        """Name an entry whose module is imported only when the entry is first used.

        For heavy entries (the diffusers backend imports torch and diffusers): light users of the same
        registry, e.g. procedural-generation actors, do not pay for them at start-up.
        """
        self._lazy[name] = module

    def get(self, name: str) -> T:
        if name not in self._entries and name in self._lazy:
            importlib.import_module(self._lazy[name])  # its decorator registers the entry
        if name not in self._entries and name not in self._lazy and name in self._plugin_entries():
            self._load_plugin(name)
        try:
            return self._entries[name]
        except KeyError:
            from ffr.options import suggest

            raise FFRError(f"unknown {self.kind} {name!r}; {suggest(str(name), self.names(), shown=12)}") from None

    def options(self, name: str, values=None, where: str = ""):
        """The validated options of entry ``name`` (its ``Options`` model, ffr.options); one line per bad key.

        ``where``: the config path they were given under (e.g. ``backbone_options``), for the message."""
        from ffr import options

        cls = getattr(self.get(name), "Options", options.NoOptions)
        return options.parse(cls, values, where, owner=f"{self.kind} {name!r}")

    def names(self) -> list[str]:
        return sorted(set(self._entries) | set(self._lazy) | set(self._plugin_entries()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy or name in self._plugin_entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
