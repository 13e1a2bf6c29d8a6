"""The main job: data -> search -> retrain + test -> report -> export, as one call the CLI wraps."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuning.engines import ENGINES, OnEvent
from tuning.errors import StudyError, UnknownNameError
from tuning.space import SearchSpace, load_space
from tuning.study import StudyConfig, default_storage, package_versions, read_config, study_paths, write_config


@dataclass
class SearchRequest:
    """What the user asked for; ``None`` means the declaration's or the budget's default."""

    model: str
    data: Path
    space: str | None = None
    engine: str = "optuna"
    sampler: str = "auto"
    pruner: str = "median"
    objective: str = "val_accuracy"
    repeats: int = 1
    workers: int = 1
    max_failures: int = 0
    trials_per_process: int = 0
    budget: str = "auto"
    trials: int | None = None
    epochs: int | None = None
    params: tuple[str, ...] | None = None
    study: str | None = None
    storage: str | None = None
    seed: int = 0
    precision: str = "auto"
    runs: Path = Path("runs")


@dataclass
class SearchOutcome:
    folder: Path
    config: StudyConfig
    best_params: dict[str, Any]
    best_value: float
    best_number: int
    counts: dict[str, int]
    metrics: dict[str, Any]
    report: Path
    model: Path
    seconds: float
    reduced: dict[str, Any] = field(default_factory=dict)


def study_folder(study: str, runs: Path = Path("runs")) -> Path:
    """``--study NAME`` lives in ``runs/NAME``; a value with a slash is taken as the folder itself."""
    return Path(study) if "/" in study else Path(runs) / study


DEFAULT_SAMPLERS = {"optuna": "tpe", "kerastuner": "bayesian", "staged": "one-factor-at-a-time"}
OBJECTIVES = ("val_accuracy", "val_loss")


def resolve_space(request: SearchRequest, budget: str) -> tuple[SearchSpace, int, int]:
    """The narrowed space plus (trials, epochs) after the budget and the explicit options."""
    from tuning.engines.staged import plan_size

    space = load_space(request.space or request.model)
    space, chosen = space.with_budget(budget)
    if request.params is not None:
        space = space.with_search(request.params)
    elif request.engine == "staged":
        space = space.with_search([p for p in space.staged_order if p not in chosen.fixed])
    epochs = request.epochs or chosen.epochs
    space = space.with_base({"epochs": epochs})
    trials = plan_size(space) if request.engine == "staged" else request.trials or chosen.trials
    if request.engine == "optuna" and request.sampler == "grid":
        grid = math.prod(len(space.params[p].grid_values()) for p in space.search)
        trials = min(trials, grid)  # the grid sampler repeats points once every one was tried
    return space, trials, epochs


def _check_request(request: SearchRequest) -> None:
    from tuning.runtime import PRECISIONS

    if request.precision not in PRECISIONS:
        raise UnknownNameError("--precision", request.precision, PRECISIONS)
    if request.engine not in ENGINES:
        raise UnknownNameError("engine", request.engine, ENGINES)
    if request.objective not in OBJECTIVES:
        raise UnknownNameError("objective", request.objective, OBJECTIVES)
    if request.workers > 1 and request.engine != "optuna":
        raise StudyError(f"--workers applies to the optuna engine; {request.engine} runs one trial at a time here "
                         "(Keras Tuner scales out with its own chief/worker mode, see the README)")
    for name in ("repeats", "workers"):
        if getattr(request, name) < 1:
            raise StudyError(f"--{name} must be >= 1, got {getattr(request, name)}")
    if request.trials_per_process < 0:
        raise StudyError(f"--trials-per-process must be >= 0, got {request.trials_per_process}")


def run_search(request: SearchRequest, *, on_event: OnEvent) -> SearchOutcome | None:
    """Run (or resume) the study and everything after it; returns what the summary shows.

    Returns None in a Keras Tuner worker process: the chief finishes the study.
    """
    from tuning import runtime
    from tuning.data.manifest import raw_dir
    from tuning.models import get_model_fn

    start = time.perf_counter()
    _check_request(request)
    raw_dir(request.data)
    settings = runtime.resolve(precision=request.precision)  # loads TensorFlow without its start-up noise
    get_model_fn(request.model)
    budget = request.budget if request.budget != "auto" else ("full" if settings["device"] == "gpu" else "quick")
    space, trials, epochs = resolve_space(request, budget)
    if space.model != request.model:
        raise StudyError(
            f"{space.source} declares model '{space.model}', not '{request.model}'; pass --model {space.model}"
        )
    name = request.study or f"{request.model}-{Path(request.data).name}-{budget}"
    folder = study_folder(name, request.runs)
    if request.precision == "auto" and study_paths(folder)["config"].exists():
        settings["precision"] = read_config(folder).precision  # resuming: auto keeps what the study trained with
    config = StudyConfig(
        name=Path(name).name, model=request.model, dataset=Path(request.data).as_posix(), engine=request.engine,
        sampler=DEFAULT_SAMPLERS[request.engine] if request.sampler == "auto" else request.sampler,
        pruner="none" if request.engine == "staged" else request.pruner, budget=budget, trials=trials,
        epochs=epochs, seed=request.seed, storage=request.storage or default_storage(folder), space=space.to_dict(),
        objective=request.objective, repeats=request.repeats, max_failures=request.max_failures,
        runtime=settings, versions=package_versions(),
    )
    _check_resume(folder, config)
    write_config(folder, config)
    runtime.apply(settings)
    on_event({"event": "study", "folder": str(folder), "config": config, "space": space})

    from tuning.engines import run_engine
    from tuning.engines._common import counts, wait_for_others
    from tuning.engines.optuna_engine import load_study
    from tuning.engines.processes import run_workers
    from tuning.evaluate import retrain_and_test
    from tuning.export import export_study
    from tuning.report import build_report
    from tuning.train import TrialData

    data = TrialData(request.data, seed=request.seed, test_fraction=space.test_fraction())
    if request.engine == "kerastuner" or (request.workers == 1 and not request.trials_per_process):
        study = run_engine(config, space, data, folder, on_event=on_event)
    else:
        load_study(config, space)  # create storage tables and study once, before workers race to do it
        run_workers(folder, data_dir=Path(request.data), workers=request.workers,
                    per_process=request.trials_per_process, on_event=on_event)
        study = load_study(config)
    if request.engine == "kerastuner":
        from tuning.engines.kerastuner_engine import is_worker

        if is_worker():
            return None
    wait_for_others(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        raise StudyError(f"{folder}: no trial completed, so there is nothing to retrain; see trials/*/history.json")
    best = (min if config.objective == "val_loss" else max)(complete, key=lambda t: t.value)
    best_params = space.resolve(best.params)
    on_event({"event": "retrain", "params": best_params})
    metrics = retrain_and_test(config, space, data, best_params, folder)
    report = build_report(folder)
    model = export_study(folder).model
    return SearchOutcome(folder, config, best_params, best.value, best.number, counts(study), metrics, report, model,
                         time.perf_counter() - start, reduced=_reduced(space, budget))


def _reduced(space: SearchSpace, budget: str) -> dict[str, Any]:
    """The settings where this run departs from the study's own (``full``) budget."""
    full = space.budgets.get("full")
    if budget == "full" or full is None:
        return {}
    out = {k: v for k, v in space.budgets[budget].fixed.items() if full.fixed.get(k) != v}
    if space.base["epochs"] != full.epochs:
        out["epochs"] = space.base["epochs"]
    return out


def _check_resume(folder: Path, config: StudyConfig) -> None:
    """A second run of a study must ask for the same thing, or its trials would not be comparable."""
    if not study_paths(folder)["config"].exists():
        return
    old = read_config(folder)
    for key in ("model", "dataset", "engine", "epochs", "seed", "space", "precision"):
        if getattr(old, key) != getattr(config, key):
            raise StudyError(
                f"{folder} already holds a study with another {key}; "
                f"rerun with its settings to resume, or pass --study NEW_NAME"
            )


def describe_reduced(reduced: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in reduced.items())
