"""The study's own procedure: one factor at a time, in the declared order, keeping the best of each axis.

Every configuration is an ordinary trial in the study's Optuna storage, so a staged study resumes where it
stopped (finished configurations are looked up, not retrained) and compares with the optimisers on equal
terms in reports.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuning.engines import NoteEvent, OnEvent, TrialLimitReached
from tuning.engines._common import TrialRunner, fail_dead_workers, run_one
from tuning.engines.optuna_engine import load_study
from tuning.space import SearchSpace, Value
from tuning.study import StudyConfig
from tuning.train import TrialData
from tuning.trials import direction, finished_count

#: Failures that say nothing about the configuration itself; such a trial is run again on resume.
TRANSIENT = ("interrupted", "worker ")


def plan_size(space: SearchSpace) -> int:
    """Trials the whole procedure trains: the base point plus every value of every staged axis except the
    base's own (an axis is walked before any later choice can change it, so the count is exact)."""
    return 1 + sum(len({v for v in values if v != space.base[name]})
                   for name, values in space.staged_stages() if name in space.search)


class _Enough(Exception):
    """The study holds ``config.trials`` finished trials: the walk stops here, and a rerun asking for more
    continues from this point."""


def run(config: StudyConfig, space: SearchSpace, data: TrialData, folder: Path, *, on_event: OnEvent,
        worker: int = 0, limit: int | None = None) -> Any:
    """Walk the stages; returns the study (its trials carry a ``stage`` attribute).

    Stops once the study holds ``config.trials`` finished trials (``--trials`` below the plan's size), saying
    so in a ``note`` event; a rerun with a larger ``--trials`` continues the walk where it stopped. With
    ``limit``, stops after that many new trials (``TrialLimitReached``); a rerun continues the walk.
    """
    from optuna.trial import TrialState

    study = load_study(config, space)
    runner = TrialRunner(config, space, data, folder, on_event)
    fail_dead_workers(study)
    sign = -1.0 if direction(config.objective) == "minimize" else 1.0
    axes = [(name, values) for name, values in space.staged_stages() if name in space.search]
    chosen: dict[str, Value] = {name: space.base[name] for name, _ in axes}
    trained = [0]

    def evaluate(candidate: dict[str, Value], stage: str) -> float:
        for t in study.get_trials(deepcopy=False):
            if t.params != candidate:
                continue
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.value is not None:
                return sign * t.value
            if t.state == TrialState.FAIL and not str(t.user_attrs.get("fail_reason", "")).startswith(TRANSIENT):
                return -math.inf
        if finished_count(study) >= config.trials:
            raise _Enough
        if limit is not None and trained[0] >= limit:
            raise TrialLimitReached
        trained[0] += 1
        study.enqueue_trial(candidate, user_attrs={"stage": stage})
        outcome = run_one(study, runner, space.suggest_optuna, prune=False)
        return sign * outcome.value if outcome and outcome.status == "complete" else -math.inf

    try:
        best = evaluate(dict(chosen), "base")
        for name, values in axes:
            for value in values:
                if value == chosen[name]:
                    continue
                score = evaluate({**chosen, name: value}, name)
                if score > best:
                    best, chosen = score, {**chosen, name: value}
    except _Enough:
        plan = plan_size(space)
        on_event(NoteEvent(event="note", message=f"Staged: stopped after {config.trials} finished trials of the "
                           f"plan's {plan} (--trials {config.trials}); rerun with --trials {plan} to continue "
                           "the plan"))
    return study
