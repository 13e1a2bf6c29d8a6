"""The one reading of a study's trials: which trial is best, how they rank, how many ended in each state.

The search summary, ``tuning retrain`` and the report all name the best trial; when each picked it with its own
``max`` they disagreed under ``--objective val_loss`` (lowest is best). This floor depends on nothing above it
(no Optuna import: trials are read through ``state.name``), so every step may stand on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

#: How one training run ended (``TrialResult.status``, an engine's ``Outcome.status``, a ``trial_end`` event).
TrialStatus = Literal["complete", "pruned", "failed"]

#: The states a study's trials are counted in, in the order they are shown.
STATES = ("complete", "pruned", "failed", "running", "waiting")
_STATE_NAMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
                "WAITING": "waiting"}


#: Objectives measured once per finished trial on its model (``tuning.costs``): lower is better.
COST_OBJECTIVES = ("size_mb", "latency_ms")


def direction(objective: str) -> Literal["minimize", "maximize"]:
    """``val_loss`` and the costs (``size_mb``, ``latency_ms``) are minimised, every other objective
    (``val_accuracy``) maximised."""
    return "minimize" if objective == "val_loss" or objective in COST_OBJECTIVES else "maximize"


def better(value: float, than: float | None, objective: str) -> bool:
    """Whether ``value`` beats ``than`` (None: nothing yet) under ``objective``; a non-finite value never does."""
    if not math.isfinite(value):
        return False
    if than is None or not math.isfinite(than):
        return True
    return value < than if direction(objective) == "minimize" else value > than


def _trials(trials_or_study: Any) -> list[Any]:
    if hasattr(trials_or_study, "get_trials"):
        return list(trials_or_study.get_trials(deepcopy=False))
    return list(trials_or_study)


def is_surplus(trial: Any) -> bool:
    """A trial that lost a start race with other workers: failed at once, trained nothing (see ``run_one``)."""
    return trial.state.name == "FAIL" and bool(trial.user_attrs.get("surplus"))


def real_trials(trials_or_study: Any) -> list[Any]:
    """Every trial but the surplus ones, which are bookkeeping of the race, not results."""
    return [t for t in _trials(trials_or_study) if not is_surplus(t)]


def quality(trial: Any) -> float | None:
    """The trial's value by the study's quality objective: ``values[0]``, which a multi-objective study
    (``--objectives``) has where ``trial.value`` raises; None when the trial has no value."""
    values = trial.values
    return None if not values or values[0] is None else float(values[0])


def objective_values(trial: Any, objectives: Iterable[str]) -> dict[str, float]:
    """Every objective's value of a trial, by name, in the study's order (NaN where it has none)."""
    values = list(trial.values or [])
    return {name: float(values[i]) if i < len(values) and values[i] is not None else math.nan
            for i, name in enumerate(objectives)}


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether values ``a`` are at least as good as ``b`` in every objective and better in one."""
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    pairs = [(s * x, s * y) for s, x, y in zip(signs, a, b)]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def pareto_front(trials_or_study: Any, objectives: list[str]) -> list[Any]:
    """The complete trials no other complete trial dominates (every value finite), in trial order.

    Trials with equal values are all kept: neither dominates the other, and a user choosing between them
    may prefer either's parameters.
    """
    directions = [direction(o) for o in objectives]
    pool = [(t, [objective_values(t, objectives)[o] for o in objectives]) for t in completed(trials_or_study)]
    pool = [(t, v) for t, v in pool if all(math.isfinite(x) for x in v)]
    return [t for t, v in pool if not any(dominates(w, v, directions) for _, w in pool)]


def completed(trials_or_study: Any) -> list[Any]:
    """The trials that may be best: complete, with a finite value, in trial order.

    A pruned trial is not among them even when its last intermediate value (which Optuna stores as its value)
    beats every complete one: it was stopped early, so that value is an epoch's, not the full budget's, and the
    configuration the retrain would train is not the one measured.
    """
    return [t for t in _trials(trials_or_study)
            if t.state.name == "COMPLETE" and (v := quality(t)) is not None and math.isfinite(v)]


def best_first(trials: Iterable[Any], objective: str) -> list[Any]:
    """The trials ranked: the completed ones best first, then the others with a value (pruned: their last
    epoch's) best first, then those without one; ties in trial order. The first is ``best_trial``'s pick."""
    sign = 1.0 if direction(objective) == "minimize" else -1.0

    def rank(t: Any) -> tuple[int, float, int]:
        value = quality(t)
        if value is None or not math.isfinite(value):
            return (2, 0.0, t.number)
        return (0 if t.state.name == "COMPLETE" else 1, sign * value, t.number)

    return sorted(trials, key=rank)


def best_trial(trials_or_study: Any, objective: str) -> Any | None:
    """The best complete trial under ``objective`` (the lowest number among equals); None when none completed.

    In a multi-objective study ``objective`` is the quality one (``values[0]``), as the summary names it."""
    complete = completed(trials_or_study)
    return best_first(complete, objective)[0] if complete else None


def top_trials(trials_or_study: Any, k: int, objective: str) -> list[Any]:
    """The ``k`` best distinct complete trials, best first: what ``tuning retrain --ensemble K`` retrains.

    The same ranking as ``best_trial`` (so the first is the best trial), keeping only the first of trials with
    equal parameters: a grid or staged engine may run one configuration twice, and two copies of one model
    in an ensemble only weight it double. Fewer than ``k`` come back when the study has fewer; the caller says so.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out: list[Any] = []
    seen: set[str] = set()
    for t in best_first(completed(trials_or_study), objective):
        key = repr(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out[:k]


def state_name(trial: Any) -> str:
    """The state as counted and shown (``complete``, ``pruned``, ``failed``, ``running``, ``waiting``)."""
    return _STATE_NAMES.get(trial.state.name, trial.state.name.lower())


def state_counts(trials_or_study: Any) -> dict[str, int]:
    """Trials per state (every key of ``STATES``, zeros included); surplus trials are not counted at all,
    as the failure limit does not count them."""
    out = dict.fromkeys(STATES, 0)
    for t in real_trials(trials_or_study):
        out[state_name(t)] = out.get(state_name(t), 0) + 1
    return out


def finished_count(trials_or_study: Any) -> int:
    """Complete and pruned trials: what ``--trials`` counts for every engine (a failed trial is replaced)."""
    counts = state_counts(trials_or_study)
    return counts["complete"] + counts["pruned"]


def pruned_epochs(trials_or_study: Any) -> list[int]:
    """The epoch each pruned trial was stopped after, in trial order: what a summary shows so that pruning
    too early (before curves rank configurations) is visible."""
    out = []
    for t in real_trials(trials_or_study):
        if state_name(t) == "pruned":
            history = (t.user_attrs or {}).get("history") or {}
            ran = len(history.get("loss", [])) or (int(t.last_step) + 1 if t.last_step is not None else 0)
            out.append(ran)
    return out


def describe_pruned(epochs: list[int], total: int, of_epochs: int) -> str:
    """``Pruned 3 of 10 trials, after epoch 2 (x2), 4 of 10``; empty when none was pruned."""
    if not epochs:
        return ""
    shown = ", ".join(f"{e}" + (f" (x{epochs.count(e)})" if epochs.count(e) > 1 else "") for e in sorted(set(epochs)))
    return f"Pruned {len(epochs)} of {total} trials, after epoch {shown} of {of_epochs}"


def describe_counts(counts: dict[str, int]) -> str:
    """``3 complete, 1 pruned``: the states that occurred, in ``STATES`` order; ``none`` for an empty study."""
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"
