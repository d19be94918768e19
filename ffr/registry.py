"""A tiny name → factory registry, shared by every extensible concept.

Recipes, generator backends, datasets, backbones and stage-2 methods each keep one ``Registry``; a new
entry is a decorated class or function, and one parametrized test walks every registry so that a new
entry is tested the moment it is registered. An entry's options are an ``Options`` attribute (a model of
:mod:`ffr.options`); :meth:`Registry.options` validates a mapping against it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ffr.errors import FFRError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name → module that registers it when imported

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
        try:
            return self._entries[name]
        except KeyError:
            raise FFRError(f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names())}") from None

    def options(self, name: str, values=None, where: str = ""):
        """The validated options of entry ``name`` (its ``Options`` model, ffr.options); one line per bad key.

        ``where``: the config path they were given under (e.g. ``backbone_options``), for the message."""
        from ffr import options

        cls = getattr(self.get(name), "Options", options.NoOptions)
        return options.parse(cls, values, where, owner=f"{self.kind} {name!r}")

    def names(self) -> list[str]:
        return sorted(set(self._entries) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
