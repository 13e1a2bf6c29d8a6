"""The one best-trial rule and state count, on real in-memory Optuna studies made with ``create_trial``."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from tuning.trials import (
    STATES,
    best_first,
    best_trial,
    better,
    completed,
    describe_counts,
    describe_pruned,
    direction,
    pruned_epochs,
    state_counts,
    top_trials,
)

DISTRIBUTIONS = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}


def _study(objective: str, trials: list[tuple[TrialState, float | None, dict[str, Any]]]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction=direction(objective))
    for i, (state, value, attrs) in enumerate(trials):
        intermediate = {0: value} if state == TrialState.PRUNED and value is not None else None
        study.add_trial(create_trial(state=state, value=value,
                                     params={"learning_rate": 10 ** (-4 + 0.3 * i)}, distributions=DISTRIBUTIONS,
                                     user_attrs=attrs, intermediate_values=intermediate))
    return study


def test_val_loss_picks_the_lowest_where_max_picks_another() -> None:
    study = _study("val_loss", [(TrialState.COMPLETE, 0.9, {}), (TrialState.COMPLETE, 0.4, {}),
                                (TrialState.COMPLETE, 1.7, {})])
    assert best_trial(study, "val_loss").number == 1
    assert max(study.trials, key=lambda t: t.value).number == 2  # what the old val_accuracy-only rule chose
    assert best_trial(study, "val_accuracy").number == 2
    assert [t.number for t in best_first(study.trials, "val_loss")] == [1, 0, 2]
    assert [t.number for t in best_first(study.trials, "val_accuracy")] == [2, 0, 1]


def test_a_pruned_trial_is_never_best_even_with_a_better_value() -> None:
    """Optuna stores a pruned trial's last intermediate value as its value (``study.tell``); it measured fewer
    epochs, so the rule keeps to complete trials (as ``study.best_trial`` does)."""
    study = _study("val_accuracy", [(TrialState.COMPLETE, 0.5, {}), (TrialState.PRUNED, 0.9, {}),
                                    (TrialState.COMPLETE, 0.6, {})])
    assert study.trials[1].value == 0.9  # the pruned trial does carry the higher value
    assert best_trial(study, "val_accuracy").number == 2 == study.best_trial.number
    assert [t.number for t in completed(study)] == [0, 2]
    assert [t.number for t in best_first(study.trials, "val_accuracy")] == [2, 0, 1]  # the best trial leads
    loss = _study("val_loss", [(TrialState.PRUNED, 0.1, {}), (TrialState.COMPLETE, 0.8, {})])
    assert best_trial(loss, "val_loss").number == 1


def test_no_complete_trial_means_no_best() -> None:
    study = _study("val_accuracy", [(TrialState.FAIL, None, {"fail_reason": "out of memory"}),
                                    (TrialState.PRUNED, 0.7, {})])
    assert best_trial(study, "val_accuracy") is None
    assert best_trial([], "val_loss") is None


def test_ties_go_to_the_earlier_trial() -> None:
    study = _study("val_loss", [(TrialState.COMPLETE, 0.5, {}), (TrialState.COMPLETE, 0.3, {}),
                                (TrialState.COMPLETE, 0.3, {})])
    assert best_trial(study, "val_loss").number == 1
    assert best_trial(study.trials[::-1], "val_loss").number == 1  # whatever order the trials come in


def test_an_infinite_value_is_not_best() -> None:
    study = _study("val_loss", [(TrialState.COMPLETE, 0.5, {}), (TrialState.COMPLETE, -math.inf, {})])
    assert best_trial(study, "val_loss").number == 0
    assert [t.number for t in best_first(study.trials, "val_loss")] == [0, 1]  # unscored last, not first


def test_state_counts_leave_surplus_failures_out() -> None:
    study = _study("val_accuracy", [(TrialState.COMPLETE, 0.5, {}), (TrialState.COMPLETE, 0.6, {}),
                                    (TrialState.PRUNED, 0.2, {}), (TrialState.FAIL, None, {"fail_reason": "nan"}),
                                    (TrialState.FAIL, None, {"surplus": True}), (TrialState.RUNNING, None, {})])
    counts = state_counts(study)
    assert counts == {"complete": 2, "pruned": 1, "failed": 1, "running": 1, "waiting": 0}
    assert list(counts) == list(STATES)
    assert describe_counts(counts) == "2 complete, 1 pruned, 1 failed, 1 running"
    assert state_counts(study.trials) == counts  # a list of trials reads the same as the study
    assert describe_counts(state_counts([])) == "none"


@pytest.mark.parametrize(("value", "than", "objective", "expected"), [
    (0.4, 0.5, "val_loss", True), (0.6, 0.5, "val_loss", False), (0.6, 0.5, "val_accuracy", True),
    (0.5, 0.5, "val_accuracy", False), (0.1, None, "val_loss", True), (math.nan, None, "val_accuracy", False),
    (0.2, math.nan, "val_accuracy", True),
])
def test_better_follows_the_objective(value: float, than: float | None, objective: str, expected: bool) -> None:
    assert better(value, than, objective) is expected


def test_pruned_epochs_say_when_each_pruned_trial_stopped() -> None:
    """The summary names how early pruning struck: from the recorded curve, else the last reported step."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    curves = {"loss": [1.0, 0.9], "val_accuracy": [0.3, 0.4]}
    for state, attrs, steps in ((TrialState.COMPLETE, {"history": {"loss": [1, 1, 1, 1]}}, {}),
                                (TrialState.PRUNED, {"history": curves}, {0: 0.3, 1: 0.4}),
                                (TrialState.PRUNED, {}, {0: 0.2, 1: 0.2, 2: 0.25}),
                                (TrialState.FAIL, {"surplus": True}, {})):
        study.add_trial(create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                                     params={"learning_rate": 1e-3}, distributions=DISTRIBUTIONS, user_attrs=attrs,
                                     intermediate_values=steps or None))
    assert pruned_epochs(study) == [2, 3]
    assert describe_pruned([2, 3, 2], 10, 8) == "Pruned 3 of 10 trials, after epoch 2 (x2), 3 of 8"
    assert describe_pruned([], 10, 8) == ""


def test_top_trials_rank_distinct_complete_trials_by_the_objective() -> None:
    """The ensemble's members: best first by ``best_trial``'s rule, a repeated configuration once, pruned and
    failed trials never; fewer than asked when the study has fewer."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="minimize")
    for state, value, lr in ((TrialState.COMPLETE, 0.8, 1e-3), (TrialState.COMPLETE, 0.3, 1e-2),
                             (TrialState.PRUNED, 0.1, 1e-4), (TrialState.COMPLETE, 0.5, 1e-2),
                             (TrialState.COMPLETE, 0.6, 3e-3), (TrialState.FAIL, None, 2e-3)):
        study.add_trial(create_trial(state=state, value=value, params={"learning_rate": lr},
                                     distributions=DISTRIBUTIONS,
                                     intermediate_values={0: value} if state == TrialState.PRUNED else None))
    assert [t.number for t in top_trials(study, 3, "val_loss")] == [1, 4, 0]  # #3 repeats #1's parameters
    assert top_trials(study, 1, "val_loss")[0].number == best_trial(study, "val_loss").number
    assert [t.number for t in top_trials(study.trials, 10, "val_loss")] == [1, 4, 0]
    assert [t.number for t in top_trials(study, 2, "val_accuracy")] == [0, 4]
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        top_trials(study, 0, "val_loss")
