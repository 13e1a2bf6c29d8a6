"""Hyperparameter search for CNN image classifiers on a few thousand images.

Collect and clean labelled images, search a CNN's hyperparameters with Optuna (or the study's
one-factor-at-a-time procedure), retrain the best configuration, test it once, report and export it.

The names a notebook needs are importable from here (``tuning.run_search``, ``tuning.prepare``, ...). They are
resolved on first use, so ``import tuning`` and ``tuning --help`` stay instant: TensorFlow and Optuna load only
when a function that needs them runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from tuning.errors import DataError, SpaceError, StudyError, ToolkitError, UnknownNameError

#: Public name -> "module:attribute" where it is implemented.
_LAZY = {
    "SearchRequest": "tuning.pipeline:SearchRequest",
    "SearchOutcome": "tuning.pipeline:SearchOutcome",
    "run_search": "tuning.pipeline:run_search",
    "resolve_config": "tuning.pipeline:resolve_config",
    "load_space": "tuning.space:load_space",
    "register": "tuning.models:register",
    "make_demo": "tuning.data.demo:make_demo",
    "prepare": "tuning.data.prepare:prepare",
    "dedup": "tuning.data.dedup:dedup",
    "import_folder": "tuning.data.importer:import_folder",
    "collect": "tuning.data.collect:collect",
    "retrain_study": "tuning.evaluate:retrain_study",
    "build_report": "tuning.report:build_report",
    "export_study": "tuning.export:export_study",
    "predict": "tuning.inference:predict",
    "read_config": "tuning.study:read_config",
}

__all__ = ["DataError", "SpaceError", "StudyError", "ToolkitError", "UnknownNameError", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'tuning' has no attribute '{name}'")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
