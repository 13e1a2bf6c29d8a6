"""``tuning retrain --pick``: which trial a multi-objective (or any) study retrains, on real in-memory Optuna
studies; and the Pareto front of ``tuning.trials`` that the report and the summary show."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from tuning.errors import StudyError, UnknownNameError
from tuning.evaluate import parse_pick, pick_trial
from tuning.study import StudyConfig
from tuning.trials import best_trial, pareto_front, quality

DISTRIBUTIONS = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
OBJECTIVES = ["val_balanced_accuracy", "size_mb"]
#: (state, balanced accuracy, size in MB) per trial number.
TRIALS = [
    (TrialState.COMPLETE, 0.80, 4.0),   # 0: dominated by 2 (as good, larger)
    (TrialState.COMPLETE, 0.90, 9.0),   # 1: the best quality, the largest
    (TrialState.COMPLETE, 0.80, 1.5),   # 2: front
    (TrialState.COMPLETE, 0.895, 3.0),  # 3: front, within 0.01 of the best
    (TrialState.FAIL, None, None),      # 4
    (TrialState.COMPLETE, 0.60, 0.5),   # 5: front, the smallest
    (TrialState.PRUNED, None, None),    # 6: (a study that was never multi-objective could hold one)
    (TrialState.COMPLETE, 0.80, 1.5),   # 7: ties 2 in both: neither dominates, both on the front
]


def _config(objectives: list[str]) -> StudyConfig:
    return StudyConfig(name="pick", model="alexnet", dataset="d", engine="optuna", sampler="tpe", pruner="none",
                       budget="quick", trials=len(TRIALS), epochs=2, seed=0, storage="journal:x", space={},
                       objective=objectives[0], objectives=objectives if len(objectives) > 1 else [])


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    made = optuna.create_study(directions=["maximize", "minimize"])
    for i, (state, acc, size) in enumerate(TRIALS):
        values = [acc, size] if state == TrialState.COMPLETE else None
        made.add_trial(create_trial(state=state, values=values, params={"learning_rate": 10 ** (-4 + 0.25 * i)},
                                    distributions=DISTRIBUTIONS,
                                    intermediate_values={0: 0.5} if state == TrialState.PRUNED else None))
    return made


def test_the_front_holds_exactly_the_undominated_complete_trials_ties_included(study: optuna.Study) -> None:
    front = [t.number for t in pareto_front(study, OBJECTIVES)]
    assert front == [1, 2, 3, 5, 7]
    assert set(front) == {t.number for t in study.best_trials}  # Optuna's own reading of the front
    val_loss = pareto_front(study, ["val_loss", "size_mb"])  # a minimised quality turns the front around
    assert [t.number for t in val_loss] == [5]


def test_every_best_trial_reader_takes_the_quality_objective_of_a_multi_objective_study(study: optuna.Study
                                                                                       ) -> None:
    with pytest.raises(RuntimeError):
        _ = study.trials[0].value  # what every reader used: Optuna refuses it on a multi-objective study
    best = best_trial(study, "val_balanced_accuracy")
    assert best.number == 1 and quality(best) == 0.90
    assert quality(study.trials[4]) is None


@pytest.mark.parametrize(("pick", "number"), [
    ("best", 1),
    ("best:balanced_accuracy", 1),  # the short name --objective takes
    ("best:val_balanced_accuracy", 1),
    ("best:size_mb", 5),
    ("trial:3", 3),
    ("smallest-within:0.01", 3),  # 0.895 is within one point of 0.90 and a third of its size
    ("smallest-within:0.1", 2),  # 2 and 7 tie at 0.80 and 1.5 MB: the lower number
    ("smallest-within:0", 1),
    ("smallest-within:1", 5),
])
def test_pick_chooses_the_trial_its_rule_names(study: optuna.Study, pick: str, number: int) -> None:
    assert pick_trial(study, _config(OBJECTIVES), pick).number == number


@pytest.mark.parametrize(("pick", "message"), [
    ("trial:12", "--pick trial:12: study 'pick' has no trial #12 (trials 0-7)"),
    ("trial:4", "--pick trial:4: trial #4 is failed, not complete, so it has no result to retrain; pick a complete "
                "one ('tuning report' lists them)"),
    ("trial:6", "--pick trial:6: trial #6 is pruned, not complete, so it has no result to retrain; pick a complete "
                "one ('tuning report' lists them)"),
    ("best:latency_ms", "unknown --pick objective 'latency_ms'; known: size_mb, val_balanced_accuracy"),
])
def test_a_pick_that_names_no_finished_trial_is_one_error_that_says_why(study: optuna.Study, pick: str,
                                                                         message: str) -> None:
    with pytest.raises((StudyError, UnknownNameError)) as err:
        pick_trial(study, _config(OBJECTIVES), pick)
    assert str(err.value) == message


@pytest.mark.parametrize("pick", ["", "best:", "trial:", "trial:x", "trial:-1", "smallest-within:", "worst",
                                  "smallest-within:-0.1", "smallest-within:nan", "smallest-within:a"])
def test_a_malformed_pick_is_refused_by_its_form_with_the_choices(pick: str) -> None:
    with pytest.raises(StudyError) as err:
        parse_pick(pick)
    assert str(err.value) == (f"--pick '{pick}': choose best, best:OBJECTIVE, trial:N, smallest-within:DELTA "
                              "(e.g. best:size_mb, trial:3, smallest-within:0.01)")


def test_a_single_objective_study_picks_by_trial_but_has_no_cost_to_be_smallest_by() -> None:
    single = optuna.create_study(direction="minimize")
    for i, loss in enumerate([0.5, 0.3, math.nan]):
        state = TrialState.COMPLETE if math.isfinite(loss) else TrialState.FAIL
        single.add_trial(create_trial(state=state, value=loss if state == TrialState.COMPLETE else None,
                                      params={"learning_rate": 10 ** (-4 + i)}, distributions=DISTRIBUTIONS))
    config = _config(["val_loss"])
    assert pick_trial(single, config).number == 1 and pick_trial(single, config, "trial:0").number == 0
    assert pick_trial(single, config, "best:loss").number == 1
    with pytest.raises(StudyError) as err:
        pick_trial(single, config, "smallest-within:0.01")
    assert str(err.value) == ("--pick smallest-within:0.01: study 'pick' has no cost objective to be smallest by; it "
                              "was searched for one objective (search with --objectives QUALITY,size_mb)")


def test_the_cli_refuses_a_malformed_pick_in_one_line_before_reading_the_study(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tuning.cli import cli

    result = CliRunner().invoke(cli, ["retrain", "--study", str(tmp_path / "none"), "--pick", "smallest"])
    assert result.exit_code == 1
    assert result.output == ("Error: --pick 'smallest': choose best, best:OBJECTIVE, trial:N, smallest-within:DELTA "
                             "(e.g. best:size_mb, trial:3, smallest-within:0.01)\n")
