"""Things registered by name (model builders, image-search providers), their built-in modules loaded on demand.

The built-ins register themselves when their module is imported; importing those modules only when a name is
looked up keeps ``import tuning`` free of Keras and lets a user's own ``@register`` run before or after.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Generic, TypeVar

from tuning.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, with the modules that register the built-in entries."""

    def __init__(self, kind: str, builtin_modules: Sequence[str]) -> None:
        self.kind = kind  # how an unknown name is described: "model", "provider"
        self._builtin_modules = tuple(builtin_modules)
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        self._entries[name] = entry  # a later registration under the same name replaces the built-in

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The registered entry, or an error listing the known names."""
        self._load_builtins()
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, list(self._entries))
        return self._entries[name]

    def _load_builtins(self) -> None:
        for module in self._builtin_modules:
            importlib.import_module(module)
