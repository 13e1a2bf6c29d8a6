"""The Keras Tuner engine: random search, Bayesian optimisation or Hyperband over the same declaration.

Keras Tuner keeps its own state in ``runs/<study>/kerastuner/`` (so it resumes, and its chief/worker mode
works through ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``); every
finished trial is also added to the study's Optuna storage, which reports read for every engine alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuning.engines import OnEvent
from tuning.engines._common import TrialRunner, direction, record_attrs
from tuning.engines.optuna_engine import load_study
from tuning.errors import UnknownNameError
from tuning.space import SearchSpace
from tuning.study import StudyConfig
from tuning.train import TrialData

TUNERS = ("bayesian", "random", "hyperband")


def is_worker() -> bool:
    """True in a Keras Tuner worker process (chief/worker mode): it trains, the chief finishes the study."""
    from keras_tuner.src.distribute import utils

    return utils.has_chief_oracle() and not utils.is_chief_oracle()


def make_oracle(config: StudyConfig, space: SearchSpace) -> Any:
    import keras_tuner as kt

    hp = kt.HyperParameters()
    space.define_kerastuner(hp)
    objective = kt.Objective(config.objective, "min" if direction(config.objective) == "minimize" else "max")
    common = {"objective": objective, "hyperparameters": hp, "tune_new_entries": False, "seed": config.seed}
    if config.sampler == "random":
        return kt.oracles.RandomSearchOracle(max_trials=config.trials, **common)
    if config.sampler == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(max_trials=config.trials, **common)
    if config.sampler == "hyperband":
        return kt.oracles.HyperbandOracle(max_epochs=config.epochs, factor=3, hyperband_iterations=1, **common)
    raise UnknownNameError("Keras Tuner tuner (--sampler)", config.sampler, TUNERS)


def run(config: StudyConfig, space: SearchSpace, data: TrialData, folder: Path, *, on_event: OnEvent,
        worker: int = 0, limit: int | None = None) -> Any:
    """Run Keras Tuner's search; returns the Optuna study that holds its finished trials.

    Keras Tuner runs its own loop in one process, so ``worker`` and ``limit`` do not apply.
    """
    import keras_tuner as kt
    import optuna
    from optuna.trial import TrialState

    study = load_study(config, space)
    runner = TrialRunner(config, space, data, folder, on_event)
    distributions = {name: space.params[name].distribution() for name in space.params}

    class _Tuner(kt.engine.base_tuner.BaseTuner):
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            params = space.define_kerastuner(trial.hyperparameters)
            epochs = int(trial.hyperparameters.values.get("tuner/epochs", config.epochs))
            outcome = runner.run(f"kt-{trial.trial_id}", params, epochs=epochs)
            searched = {k: v for k, v in params.items() if k in space.search}
            state = TrialState.COMPLETE if outcome.status == "complete" else TrialState.FAIL
            record = optuna.trial.create_trial(
                params=searched, distributions={k: distributions[k] for k in searched},
                value=outcome.value if state == TrialState.COMPLETE else None, state=state,
                user_attrs={"kerastuner_trial_id": trial.trial_id},
            )
            record_attrs(record, outcome)
            study.add_trial(record)
            if state != TrialState.COMPLETE:
                raise kt.errors.FailedTrialError(outcome.reason or outcome.status)
            return {config.objective: outcome.value}

    tuner = _Tuner(make_oracle(config, space), directory=str(folder / "kerastuner"), project_name=config.name)
    tuner.search(verbose=0)
    return study
