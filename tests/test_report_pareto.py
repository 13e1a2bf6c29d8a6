"""The report's readers on a multi-objective study without training: parameter importances for the quality
objective (Optuna refuses a multi-objective study without a target). The Pareto section itself is checked on a
real trained study in ``tests/test_pareto.py``."""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState, create_trial

from tuning.report import _importances


def test_importances_of_a_multi_objective_study_rank_the_parameter_the_quality_follows() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    distributions = {"a": optuna.distributions.FloatDistribution(0.0, 1.0),
                     "b": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for i in range(24):
        a, b = (i % 6) / 5, ((i * 7) % 5) / 4
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=[a, 1.0 + (i % 3)], params={"a": a, "b": b},
                                     distributions=distributions))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither Optuna's refusal nor its warning about the target's direction
        importances, method = _importances(study)
    assert method in ("fANOVA", "PED-ANOVA")
    assert importances["a"] > 0.8 and importances["a"] > importances["b"]
