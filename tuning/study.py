"""A study's folder and its resolved configuration (``runs/<study>/config.toml``).

Everything a run depends on is written here before the first trial, so a study can be resumed, reported
and reproduced from its folder alone.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tuning import _io
from tuning.errors import StudyError

PACKAGES = ("tuning", "tensorflow", "keras", "keras-tuner", "optuna", "numpy", "pillow", "imagehash")


@dataclass
class StudyConfig:
    """The resolved settings of one study; ``space`` is the narrowed declaration as a plain dict."""

    name: str
    model: str
    dataset: str
    engine: str
    sampler: str
    pruner: str
    budget: str
    trials: int
    epochs: int
    seed: int
    storage: str
    space: dict[str, Any]
    objective: str = "val_accuracy"
    repeats: int = 1
    max_failures: int = 0
    runtime: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The dtype policy trials train under (studies written before the option: float32)."""
        return str(self.runtime.get("precision", "float32"))


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def study_paths(folder: Path) -> dict[str, Path]:
    """Where each part of a study lives."""
    folder = Path(folder)
    return {
        "config": folder / "config.toml",
        "journal": folder / "optuna.journal",
        "trials": folder / "trials",
        "final": folder / "final",
        "report": folder / "report",
        "export": folder / "export",
    }


def default_storage(folder: Path) -> str:
    return f"journal:{study_paths(folder)['journal'].as_posix()}"


def write_config(folder: Path, config: StudyConfig) -> None:
    _io.write_text(study_paths(folder)["config"], dumps_toml(asdict(config)))


def read_config(folder: Path) -> StudyConfig:
    path = study_paths(folder)["config"]
    if not path.exists():
        raise StudyError(f"{folder}: no study here (no config.toml); run 'tuning search --study NAME' first")
    return StudyConfig(**tomllib.loads(path.read_text(encoding="utf-8")))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def dumps_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """TOML for nested dicts of scalars and lists (what a config holds); tables after plain keys."""
    lines = [f"{_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for k, v in data.items():
        if isinstance(v, Mapping):
            name = f"{prefix}{_key(k)}"
            body = dumps_toml(v, f"{name}.")
            lines.append(f"\n[{name}]\n{body}" if body.strip() else f"\n[{name}]")
    return "\n".join(lines).strip("\n") + "\n"
