"""Search engines. Each one asks the search space for parameters, calls ``train_trial`` and records every
trial in the study's Optuna storage, which is the single record reports and resume read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: Progress events the CLI turns into lines: {"event": "trial_start" | "epoch" | "trial_end", ...}.
OnEvent = Callable[[Mapping[str, Any]], None]
ENGINES = ("optuna", "kerastuner", "staged")


class TrialLimitReached(Exception):
    """This process trained its share of trials (``limit``) before the study was complete."""


def run_engine(config: Any, space: Any, data: Any, folder: Any, *, on_event: OnEvent, worker: int = 0,
               limit: int | None = None) -> Any:
    """Run ``config.engine``; each returns the Optuna study that records its trials.

    ``worker`` numbers the processes sharing a study (their samplers must not draw the same points);
    ``limit`` stops this process with ``TrialLimitReached`` after that many new trials. A dataset that some
    split scheme of the study leaves without a class in train, val or test is refused (``DataError``) before
    the first trial.
    """
    import importlib

    from tuning.train import check_trainable

    check_trainable(data, space, folds=config.cv)

    module = {"optuna": "optuna_engine", "kerastuner": "kerastuner_engine", "staged": "staged"}[config.engine]
    return importlib.import_module(f"tuning.engines.{module}").run(config, space, data, folder, on_event=on_event,
                                                                   worker=worker, limit=limit)
