"""The built-in search-space declarations, shipped as package data beside this loader."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def builtin_names() -> list[str]:
    """Names of the declarations that ship with the toolkit (``vgg16``, ``alexnet``, ...)."""
    return sorted(p.name[: -len(".toml")] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def builtin_path(name: str) -> Path | None:
    """The file of a built-in declaration, or None when there is no such name."""
    path = resources.files(__name__) / f"{name}.toml"
    return Path(str(path)) if path.is_file() else None
