"""The Optuna engine: TPE (default), GP, CMA-ES, NSGA-II, random or grid sampling, pruned per epoch.

With ``--objectives`` the study has one direction per objective (the quality one first, then the model's
costs) and is never pruned; TPE then runs in its multi-objective mode (MOTPE), NSGA-II as it always does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tuning.engines import OnEvent
from tuning.engines._common import TrialRunner, direction, work_loop
from tuning.engines._storage import open_storage
from tuning.errors import StudyError, ToolkitError, UnknownNameError
from tuning.space import SearchSpace
from tuning.study import StudyConfig
from tuning.train import TrialData

SAMPLERS = ("tpe", "gp", "cmaes", "nsga2", "random", "grid")
PRUNERS = ("median", "hyperband", "sha", "none")
#: Samplers that need a package the toolkit does not install: (module, what to install). Optuna imports them
#: only when the first point is drawn, deep inside a trial; we say so before anything is written.
EXTRA_PACKAGES = {"gp": ("torch", "PyTorch (pip install torch)"), "cmaes": ("cmaes", "cmaes (pip install cmaes)")}


def check_sampler(name: str) -> None:
    """Refuse a sampler whose package is missing, with what to install (cheap: nothing is imported)."""
    if name in EXTRA_PACKAGES and not _installed(name):
        others = ", ".join(s for s in SAMPLERS if s != name and _installed(s))
        raise ToolkitError(f"--sampler {name} needs {EXTRA_PACKAGES[name][1]}, which is not installed; install it "
                           f"or choose another sampler ({others})")


def _installed(sampler: str) -> bool:
    return sampler not in EXTRA_PACKAGES or importlib.util.find_spec(EXTRA_PACKAGES[sampler][0]) is not None


def nsga2_population(trials: int) -> int:
    """NSGA-II's generation size for a study of ``trials``: its first generation is drawn at random, so
    Optuna's default of 50 would leave a 10-50 trial study all random; a third of the trials (4 to 50) leaves
    room for at least two evolved generations."""
    return max(4, min(50, trials // 3))


def make_sampler(name: str, space: SearchSpace, seed: int, *, trials: int = 0) -> Any:
    """``trials``: the study's size (NSGA-II sizes its generations by it)."""
    import optuna

    check_sampler(name)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=nsga2_population(trials))
    if name == "grid":
        grid = {p: list(space.params[p].grid_values()) for p in space.search}
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise UnknownNameError("sampler", name, SAMPLERS)


#: The median pruner judges no trial before this many have finished, and none before half its epochs: on the
#: posters (docs/engines-study.md) a single epoch's validation accuracy ranked configurations as their final one
#: only weakly (Spearman 0.4-0.7 in the first half of a 10-epoch budget) and the best-so-far from about half the
#: epochs on (0.9+); pruning after epoch 1 of 2 trials stopped 8 of 10 quick-budget trials, slow starters first.
MEDIAN_STARTUP_TRIALS = 5


def median_warmup(epochs: int) -> int:
    """Epochs a trial runs before the median pruner may stop it (Optuna's ``n_warmup_steps``)."""
    return max(1, epochs // 2)


def make_pruner(name: str, epochs: int) -> Any:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=median_warmup(epochs))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UnknownNameError("pruner", name, PRUNERS)


def load_study(config: StudyConfig, space: SearchSpace | None = None) -> Any:
    """The study in its storage: created on first use by a search (samplers need the space), only opened by
    readers (report, retrain, export), which must never make an empty study where the real one is missing.

    Other engines choose their own parameters (enqueued or added trials), so their study samples nothing.
    """
    import optuna

    if space is None:
        storage = open_storage(config.storage, create=False)
        try:
            return optuna.load_study(study_name=config.name, storage=storage)
        except KeyError:
            raise StudyError(f"storage {config.storage}: holds no study named '{config.name}'") from None
    sampler = (make_sampler(config.sampler, space, config.seed, trials=config.trials) if config.engine == "optuna"
               else optuna.samplers.RandomSampler(seed=config.seed))
    return optuna.create_study(
        study_name=config.name,
        storage=open_storage(config.storage),
        directions=[direction(o) for o in config.objectives or [config.objective]],
        sampler=sampler,
        pruner=make_pruner(config.pruner, config.epochs),
        load_if_exists=True,
    )


def run(config: StudyConfig, space: SearchSpace, data: TrialData, folder: Path, *, on_event: OnEvent,
        worker: int = 0, limit: int | None = None, first_trial: int | None = None) -> Any:
    """Run trials until the study holds ``config.trials`` finished ones (earlier runs count: resume).

    ``first_trial``: where this run's trials start, for ``--max-failures`` (see ``_common.check_failures``).
    """
    study = load_study(config, space)
    # A seeded sampler restarts its random stream in every process: offset the seed by the trials already in
    # the study and by the worker's number, or a resumed study and parallel workers redraw the same points.
    study.sampler = make_sampler(config.sampler, space, config.seed + len(study.trials) + 7919 * worker,
                                 trials=config.trials)
    work_loop(study, config, TrialRunner(config, space, data, folder, on_event),
              suggest=space.suggest_optuna, prune=config.pruner != "none" and not config.objectives, limit=limit,
              first_trial=first_trial)
    return study
