"""Search engines. Each one asks the search space for parameters, calls ``train_trial`` and records every
trial in the study's Optuna storage, which is the single record reports and resume read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: Progress events the CLI turns into lines: {"event": "trial_start" | "epoch" | "trial_end", ...}.
OnEvent = Callable[[Mapping[str, Any]], None]
ENGINES = ("optuna", "kerastuner", "staged")


def run_engine(config: Any, space: Any, data: Any, folder: Any, *, on_event: OnEvent) -> Any:
    """Run ``config.engine``; each returns the Optuna study that records its trials."""
    import importlib

    module = {"optuna": "optuna_engine", "kerastuner": "kerastuner_engine", "staged": "staged"}[config.engine]
    return importlib.import_module(f"tuning.engines.{module}").run(config, space, data, folder, on_event=on_event)
