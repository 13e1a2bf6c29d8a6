"""The Keras Tuner engine: random search, Bayesian optimisation or Hyperband over the same declaration.

Keras Tuner keeps its own state in ``runs/<study>/kerastuner/`` (so it resumes, and its chief/worker mode
works through ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``); every
finished trial is also added to the study's Optuna storage, which reports read for every engine alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuning.engines import NoteEvent, OnEvent
from tuning.engines._common import TrialRunner, check_failures, direction, record_attrs
from tuning.engines.optuna_engine import load_study
from tuning.errors import UnknownNameError
from tuning.space import SearchSpace
from tuning.study import StudyConfig
from tuning.train import TrialData
from tuning.trials import finished_count

TUNERS = ("bayesian", "random", "hyperband")


def is_worker() -> bool:
    """True in a Keras Tuner worker process (chief/worker mode): it trains, the chief finishes the study."""
    from keras_tuner.src.distribute import utils

    return utils.has_chief_oracle() and not utils.is_chief_oracle()


def make_oracle(config: StudyConfig, space: SearchSpace) -> Any:
    """Keras Tuner's oracle for ``--sampler``, stopping once the trials hold ``config.trials`` completed ones.

    Keras Tuner's own stops do not mean what ``--trials`` and ``--max-failures`` mean: ``max_trials`` counts
    failed trials too, Hyperband's size is its bracket's (2 trials at 2 epochs), and its consecutive-failure
    limit raises a RuntimeError with a traceback. So its ``max_trials`` and Hyperband's iterations are
    unbounded, its failure limit is off, and the oracle says STOPPED at ``config.trials`` completed trials
    (every worker of its chief/worker mode is told so); our tuner applies ``--max-failures``.
    """
    import keras_tuner as kt

    bases = {"random": kt.oracles.RandomSearchOracle, "bayesian": kt.oracles.BayesianOptimizationOracle,
             "hyperband": kt.oracles.HyperbandOracle}
    if config.sampler not in bases:
        raise UnknownNameError("Keras Tuner tuner (--sampler)", config.sampler, TUNERS)
    hp = kt.HyperParameters()
    space.define_kerastuner(hp)
    objective = kt.Objective(config.objective, "min" if direction(config.objective) == "minimize" else "max")
    common: dict[str, Any] = {"objective": objective, "hyperparameters": hp, "tune_new_entries": False,
                              "seed": config.seed, "max_consecutive_failed_trials": None}
    hyperband = config.sampler == "hyperband"
    if hyperband:
        common.update(max_epochs=config.epochs, factor=3, hyperband_iterations=None)
    else:
        common["max_trials"] = None
    wanted, base = config.trials, bases[config.sampler]

    class _Oracle(base):  # type: ignore[misc, valid-type]
        def populate_space(self, trial_id: str) -> dict[str, Any]:
            completed = sum(t.status == "COMPLETED" for t in self.trials.values())
            if completed >= wanted:
                return {"status": "STOPPED"}
            if completed + len(self.ongoing_trials) >= wanted:
                return {"status": "IDLE"}  # another worker's trial decides whether more are needed
            return dict(super().populate_space(trial_id))

        def set_state(self, state: dict[str, Any]) -> None:
            super().set_state(state)
            if hyperband:  # a study started before this rule saved one iteration: --trials decides now
                self.hyperband_iterations = float("inf")

    return _Oracle(**common)


def run(config: StudyConfig, space: SearchSpace, data: TrialData, folder: Path, *, on_event: OnEvent,
        worker: int = 0, limit: int | None = None, first_trial: int | None = None) -> Any:
    """Run Keras Tuner's search until the study holds ``config.trials`` completed trials; returns the Optuna
    study that holds its finished trials.

    Keras Tuner runs its own loop in one process, so ``worker`` and ``limit`` do not apply. Failed trials
    of this run (from ``first_trial``, default: the trials already there) stop it at ``--max-failures`` with
    the same ``StudyError`` as the Optuna engine. A space too small for ``--trials`` distinct points ends
    the search early, said in a ``note`` event.
    """
    import keras_tuner as kt
    import optuna
    from optuna.trial import TrialState

    study = load_study(config, space)
    first = len(study.get_trials(deepcopy=False)) if first_trial is None else first_trial
    runner = TrialRunner(config, space, data, folder, on_event)
    distributions = {name: space.params[name].distribution() for name in space.params}

    class _Tuner(kt.engine.base_tuner.BaseTuner):
        def pre_create_trial(self) -> None:
            if finished_count(study) < config.trials:
                check_failures(study, config, runner.trials_dir, first_trial=first)

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

    from keras_tuner.src import config as kt_config

    tuner = _Tuner(make_oracle(config, space), directory=str(folder / "kerastuner"), project_name=config.name)
    debug, kt_config.DEBUG = kt_config.DEBUG, False  # True prints each failed trial's traceback; we show reasons
    try:
        tuner.search(verbose=0)
    finally:
        kt_config.DEBUG = debug
    done = finished_count(study)
    if done < config.trials and not is_worker():
        on_event(NoteEvent(event="note", message=f"Keras Tuner ({config.sampler}) found no new configuration in "
                           f"the search space after {done} finished trials of --trials {config.trials}: the space "
                           "holds no more distinct points; widen it (--params, the space file) for more"))
    return study
