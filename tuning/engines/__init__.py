"""Search engines. Each one asks the search space for parameters, calls ``train_trial`` and records every
trial in the study's Optuna storage, which is the single record reports and resume read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from tuning.trials import TrialStatus

if TYPE_CHECKING:
    from tuning.space import SearchSpace
    from tuning.study import StudyConfig
    from tuning.train import TrialData


# Progress events, one dict each: the CLI turns them into lines, trackers log them, worker processes relay them
# to the parent through a queue (so they stay plain dicts). ``number`` is the trial's key (Keras Tuner's are str).
class StudyEvent(TypedDict):
    event: Literal["study"]
    folder: str
    config: StudyConfig
    space: SearchSpace
    objective_note: str  # why --objective auto chose the objective ("" when it was asked for)


class TrialStartEvent(TypedDict):
    event: Literal["trial_start"]
    number: int | str
    params: dict[str, Any]


class EpochEvent(TypedDict):
    event: Literal["epoch"]
    number: int | str
    epoch: int  # 1-based
    epochs: int
    logs: Mapping[str, float]


class TrialEndEvent(TypedDict):
    event: Literal["trial_end"]
    number: int | str
    status: TrialStatus
    value: float
    reason: str
    seconds: float
    pid: int
    rss_mb: float
    costs: NotRequired[dict[str, float]]  # --objectives: the complete trial's cost objectives (tuning.costs)


class NoteEvent(TypedDict):
    event: Literal["note"]
    message: str  # an engine or tracker explains something the user should know (fewer trials, a warning)


class RetrainEvent(TypedDict):
    event: Literal["retrain"]
    params: dict[str, Any]


Event = StudyEvent | TrialStartEvent | EpochEvent | TrialEndEvent | NoteEvent | RetrainEvent
#: Receives every ``Event`` (read as a mapping: relayed events arrive as plain dicts).
OnEvent = Callable[[Mapping[str, Any]], None]
ENGINES = ("optuna", "kerastuner", "staged")


class TrialLimitReached(Exception):
    """This process trained its share of trials (``limit``) before the study was complete."""


def run_engine(config: StudyConfig, space: SearchSpace, data: TrialData, folder: Path, *, on_event: OnEvent,
               worker: int = 0, limit: int | None = None, first_trial: int | None = None) -> Any:
    """Run ``config.engine``; each returns the Optuna study that records its trials.

    ``worker`` numbers the processes sharing a study (their samplers must not draw the same points);
    ``limit`` stops this process with ``TrialLimitReached`` after that many new trials. A dataset that some
    split scheme of the study leaves without a class in train, val or test is refused (``DataError``) before
    the first trial. ``first_trial`` is the study's first trial number of this run, which ``--max-failures``
    counts from (None: the trials there when the engine starts); worker processes of one command pass the
    command's. The staged engine trains each configuration once and has no failure limit.
    """
    import importlib

    from tuning.train import check_trainable

    check_trainable(data, space, folds=config.cv)

    module = {"optuna": "optuna_engine", "kerastuner": "kerastuner_engine", "staged": "staged"}[config.engine]
    extra = {} if config.engine == "staged" else {"first_trial": first_trial}
    return importlib.import_module(f"tuning.engines.{module}").run(config, space, data, folder, on_event=on_event,
                                                                   worker=worker, limit=limit, **extra)
