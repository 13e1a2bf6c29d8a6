"""A study's folder and its resolved configuration (``runs/<study>/config.toml``).

Everything a run depends on is written here before the first trial, so a study can be resumed, reported
and reproduced from its folder alone. Paths inside the folder (the journal or SQLite storage) and the dataset
path are written relative to the folder and made absolute again on read, so a study opened from another
directory, or moved or copied with its folder, finds its own storage instead of creating an empty one.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from tuning import _io
from tuning.errors import StudyError

PACKAGES = ("tuning", "tensorflow", "jax", "torch", "keras", "keras-tuner", "optuna", "numpy", "pillow", "imagehash")

#: Written into config.toml by this version: its relative paths are relative to the study folder. A config
#: without it was written with paths relative to the directory the search ran in, and is read that way.
PATHS_KEY = "paths_relative_to"
PATHS_FOLDER = "study folder"
#: Where the dataset was when the config was written: the fallback when the relative path finds nothing.
DATASET_AT_KEY = "dataset_when_written"


@dataclass
class StudyConfig:
    """The resolved settings of one study; ``space`` is the narrowed declaration as a plain dict.

    In memory ``dataset`` and the paths in ``storage`` are absolute; ``write_config`` stores them relative to
    the study folder where they lie inside it (the dataset: always, so a project moved whole keeps working).
    ``dataset_sha256`` fingerprints the raw images (empty in studies from before it was recorded).
    """

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
    split_version: int = 1  # how the toolkit split the images (tuning.data.splits.SPLIT_VERSION); 1 if older
    cv: int = 1  # --cv K: each configuration trained on K folds of train+val, scored by their mean
    max_failures: int = 0
    #: ``--objectives``: [quality objective (= ``objective``), cost objective, ...]; empty: one objective.
    objectives: list[str] = field(default_factory=list)
    dataset_sha256: str = ""
    runtime: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        """The Keras backend trials train on (studies written before the option: TensorFlow, the only one)."""
        return str(self.runtime.get("backend", "tensorflow"))

    @property
    def precision(self) -> str:
        """The dtype policy trials train under (studies written before the option: float32)."""
        return str(self.runtime.get("precision", "float32"))


@dataclass
class SearchOutcome:
    """What a finished search produced, as the summary shows it (``tuning.pipeline.run_search`` returns it;
    it lives on this floor so trackers and other consumers need not import the pipeline)."""

    folder: Path
    config: StudyConfig
    best_params: dict[str, Any]
    best_value: float
    best_number: int
    counts: dict[str, int]  # tuning.trials.state_counts: every state, surplus trials left out
    metrics: dict[str, Any]
    report: Path
    model: Path
    seconds: float
    reduced: dict[str, Any] = field(default_factory=dict)
    pruned_at: list[int] = field(default_factory=list)  # tuning.trials.pruned_epochs
    front: list[int] = field(default_factory=list)  # --objectives: the Pareto front's trial numbers
    best_costs: dict[str, float] = field(default_factory=dict)  # --objectives: the best trial's cost values


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
    return f"journal:{Path(os.path.abspath(study_paths(folder)['journal'])).as_posix()}"


# ----- paths: absolute in memory, relative to the folder on disk -------------------------------------------
def _split_storage(url: str) -> tuple[str, str, str] | None:
    """(prefix, file path, suffix) of a URL naming a local file (journal, SQLite); None for servers."""
    if url.startswith("journal:"):
        return "journal:", url[len("journal:"):], ""
    if url.startswith("sqlite:///"):
        path, sep, query = url[len("sqlite:///"):].partition("?")
        if path and path != ":memory:":
            return "sqlite:///", path, sep + query
    return None


def _join(base: Path, path: str) -> str:
    return Path(os.path.normpath(os.path.join(os.path.abspath(base), path))).as_posix()


def absolute_storage(url: str, base: Path) -> str:
    """``url`` with a relative file path taken relative to ``base``; server URLs are returned as they are."""
    parts = _split_storage(url)
    if parts is None:
        return url
    prefix, path, suffix = parts
    return f"{prefix}{_join(base, path)}{suffix}"


def relative_storage(url: str, folder: Path) -> str:
    """``url`` with a file inside ``folder`` written relative to it; files elsewhere stay absolute."""
    parts = _split_storage(url)
    if parts is None:
        return url
    prefix, path, suffix = parts
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    inside = rel != os.pardir and not rel.startswith(os.pardir + os.sep)
    return f"{prefix}{Path(rel).as_posix() if inside else Path(os.path.abspath(path)).as_posix()}{suffix}"


def _relative_path(path: str, folder: Path) -> str:
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        return Path(os.path.abspath(path)).as_posix()


# ----- config.toml -----------------------------------------------------------------------------------------
def write_config(folder: Path, config: StudyConfig) -> None:
    import tomli_w

    data = asdict(config)
    data["dataset"] = _relative_path(config.dataset, folder)
    data["storage"] = relative_storage(config.storage, folder)
    # The absolute path too: a study folder copied alone (without the project around it) still finds the data.
    data = {PATHS_KEY: PATHS_FOLDER, DATASET_AT_KEY: Path(os.path.abspath(config.dataset)).as_posix(), **data}
    _io.write_text(study_paths(folder)["config"], tomli_w.dumps(data))


def read_config(folder: Path) -> StudyConfig:
    """The study's settings with its paths made absolute; a missing or unreadable file is one clear error."""
    path = study_paths(folder)["config"]
    if not path.exists():
        raise StudyError(f"{folder}: no study here (no config.toml); run 'tuning search --study NAME' first")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise StudyError(_unreadable(path, f"not valid TOML: {exc}")) from None
    base = Path(folder) if data.pop(PATHS_KEY, None) == PATHS_FOLDER else Path.cwd()
    dataset_at = data.pop(DATASET_AT_KEY, None)
    known = {f.name: f for f in fields(StudyConfig)}
    unknown = sorted(set(data) - set(known))
    missing = [n for n, f in known.items()
               if n not in data and f.default is MISSING and f.default_factory is MISSING]
    if unknown or missing:
        why = f"unknown key '{unknown[0]}'" if unknown else f"missing key '{missing[0]}'"
        raise StudyError(_unreadable(path, why))
    wrong = [n for n in ("dataset", "storage") if not isinstance(data[n], str)]
    wrong += [n for n in ("space", "runtime", "versions") if n in data and not isinstance(data[n], dict)]
    if wrong:
        raise StudyError(_unreadable(path, f"'{wrong[0]}' has the wrong type"))
    config = StudyConfig(**data)
    config.dataset = _join(base, config.dataset)
    if isinstance(dataset_at, str) and not Path(config.dataset).exists() and Path(dataset_at).exists():
        config.dataset = dataset_at
    config.storage = absolute_storage(config.storage, base)
    return config


def _unreadable(path: Path, why: str) -> str:
    return (f"{path}: not a readable study config ({why}); restore it from a copy, "
            "or start a new study with --study NEW_NAME")


def check_study_folder(folder: Path, *, runs: Path) -> None:
    """Refuse a folder that holds something other than a study, before the search writes anything into it.

    ``--study ..`` once wrote the study's config.toml over the user's own; a study goes only where no file
    but its own would be touched: a new or empty folder, or one that already holds a study.
    """
    folder = Path(os.path.abspath(folder))  # lexically: runs/.. is the working directory even if runs/ is not there
    where = ""
    rel = os.path.relpath(folder, os.path.abspath(runs))
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        where = f" (outside {Path(runs).as_posix()}/)"
    if folder.exists() and not folder.is_dir():
        raise StudyError(f"--study: {folder}{where} is a file, not a study folder; pass another name")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    foreign = (f"--study: {folder}{where} holds files that are not a study's; pass a new name (a study lives "
               "in runs/NAME) or an empty folder")
    if not study_paths(folder)["config"].exists():
        raise StudyError(foreign)
    try:
        read_config(folder)  # a config.toml that is not a study's (the user's own) is never overwritten
    except StudyError:
        if where:
            raise StudyError(foreign) from None
        raise
