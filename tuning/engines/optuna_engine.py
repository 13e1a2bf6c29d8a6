"""The Optuna engine: TPE (default), GP, CMA-ES, random or grid sampling, with median pruning per epoch."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuning import _io
from tuning.engines import OnEvent
from tuning.engines._storage import open_storage
from tuning.errors import UnknownNameError
from tuning.space import SearchSpace
from tuning.study import StudyConfig, study_paths
from tuning.train import TrialData, train_trial

SAMPLERS = ("tpe", "gp", "cmaes", "random", "grid")
PRUNERS = ("median", "none")


def make_sampler(name: str, space: SearchSpace, seed: int) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "grid":
        grid = {p: list(space.params[p].grid_values()) for p in space.search}
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise UnknownNameError("sampler", name, SAMPLERS)


def make_pruner(name: str) -> Any:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UnknownNameError("pruner", name, PRUNERS)


def load_study(config: StudyConfig, space: SearchSpace | None = None) -> Any:
    """The study in its storage, created on first use (samplers need the space; readers do not)."""
    import optuna

    return optuna.create_study(
        study_name=config.name,
        storage=open_storage(config.storage),
        direction="maximize",
        sampler=make_sampler(config.sampler, space, config.seed) if space else None,
        pruner=make_pruner(config.pruner),
        load_if_exists=True,
    )


def finished_trials(study: Any) -> list[Any]:
    """Trials that count towards ``--trials``: complete or pruned."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def run(config: StudyConfig, space: SearchSpace, data: TrialData, folder: Path, *, on_event: OnEvent) -> Any:
    """Run trials until the study holds ``config.trials`` finished ones (earlier runs count: resume)."""
    import optuna

    study = load_study(config, space)
    trials_dir = study_paths(folder)["trials"]

    def objective(trial: optuna.Trial) -> float:
        params = space.suggest_optuna(trial)
        on_event({"event": "trial_start", "number": trial.number, "params": params})

        def report(epoch: int, logs: dict[str, float]) -> bool:
            trial.report(logs["val_accuracy"], epoch)
            on_event({"event": "epoch", "number": trial.number, "epoch": epoch + 1, "epochs": config.epochs,
                      "logs": logs})
            return trial.should_prune()

        result = train_trial(config.model, params, data, space, epochs=config.epochs, seed=config.seed,
                             hooks=[report])
        _io.write_json(trials_dir / str(trial.number) / "history.json",
                       {"params": params, "status": result.status, "history": result.history,
                        "seconds": result.seconds, "reason": result.reason})
        trial.set_user_attr("seconds", result.seconds)
        trial.set_user_attr("epochs", result.epochs)
        trial.set_user_attr("history", result.history)
        on_event({"event": "trial_end", "number": trial.number, "status": result.status,
                  "value": result.val_accuracy, "reason": result.reason, "seconds": result.seconds})
        if result.status == "failed":
            trial.set_user_attr("fail_reason", result.reason)
            return math.nan
        if result.status == "pruned":
            raise optuna.TrialPruned()
        return result.val_accuracy

    remaining = config.trials - len(finished_trials(study))
    while remaining > 0:
        study.optimize(objective, n_trials=remaining, catch=())
        remaining = config.trials - len(finished_trials(study))
        failed = len(study.trials) - len(finished_trials(study))
        if remaining > 0 and failed >= max(3, config.trials):
            from tuning.errors import StudyError

            raise StudyError(f"{failed} trials failed (see {trials_dir}/*/history.json for reasons); "
                             "fix the space or data and rerun the same command to continue")
    return study
