"""The main job: data -> search -> retrain + test -> report -> export, as one call the CLI wraps."""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuning._fresh import call_in_fresh_process
from tuning.data.splits import SPLIT_VERSION
from tuning.engines import ENGINES, OnEvent, RetrainEvent, StudyEvent
from tuning.errors import StudyError, UnknownNameError
from tuning.space import SearchSpace, load_space
from tuning.study import (
    SearchOutcome,
    StudyConfig,
    absolute_storage,
    check_study_folder,
    default_storage,
    package_versions,
    read_config,
    study_paths,
    write_config,
)

if TYPE_CHECKING:
    from tuning.train import TrialData


@dataclass
class SearchRequest:
    """What the user asked for; ``None`` means the declaration's or the budget's default."""

    model: str
    data: Path
    space: str | None = None
    engine: str = "optuna"
    sampler: str = "auto"
    pruner: str = "median"
    objective: str = "auto"
    #: ``--objectives QUALITY,COST...`` (e.g. ``balanced_accuracy,size_mb``): a multi-objective study; None:
    #: one objective (a resumed study keeps its own).
    objectives: str | None = None
    repeats: int = 1
    cv: int = 1
    workers: int = 1
    max_failures: int = 0
    trials_per_process: int = 0
    budget: str = "auto"
    preset: str | None = None  # a [presets.NAME] of the space, applied to its base before the budget
    trials: int | None = None
    epochs: int | None = None
    params: tuple[str, ...] | None = None
    split: str | None = None
    study: str | None = None
    storage: str | None = None
    seed: int = 0
    precision: str = "auto"
    #: ``tensorflow``, ``jax``, ``torch`` or ``auto`` (``runtime.AUTO_BACKENDS``; a resumed study keeps its own);
    #: None: ``KERAS_BACKEND`` when set (a notebook that chose one keeps it), else auto.
    backend: str | None = None
    runs: Path = Path("runs")
    #: ``--track`` specs (``tensorboard``, ``mlflow[:URI]``): trackers that receive every progress event.
    track: tuple[str, ...] = ()
    #: ``--lr-range``: ``auto`` (the range test's suggestion) or ``LOW,HIGH`` narrows the learning-rate axis.
    lr_range: str | None = None
    #: ``--weights``: a pretrained backbone's ``imagenet``, ``none`` or weights file (None: the space's).
    weights: str | None = None


def study_folder(study: str, runs: Path = Path("runs")) -> Path:
    """``--study NAME`` lives in ``runs/NAME``; a value with a slash is taken as the folder itself.

    Normalised lexically (``runs/..`` is ``.``), as the checks before writing see it, even where ``runs/``
    does not exist yet.
    """
    return Path(os.path.normpath(study if "/" in study else Path(runs) / study))


DEFAULT_SAMPLERS = {"optuna": "tpe", "kerastuner": "bayesian", "staged": "one-factor-at-a-time"}
OBJECTIVES = ("val_accuracy", "val_loss", "val_balanced_accuracy", "val_macro_f1")
#: Short names the options also take.
OBJECTIVE_ALIASES = {"accuracy": "val_accuracy", "loss": "val_loss", "balanced_accuracy": "val_balanced_accuracy",
                     "macro_f1": "val_macro_f1"}


def objective_name(requested: str) -> str:
    """``--objective`` as stored: the validation metric's history key (``balanced_accuracy`` is an alias)."""
    name = OBJECTIVE_ALIASES.get(requested, requested)
    if name not in (*OBJECTIVES, "auto"):
        raise UnknownNameError("--objective", requested, ("auto", *OBJECTIVES, *OBJECTIVE_ALIASES))
    return name


def parse_objectives(text: str) -> list[str]:
    """``--objectives``: the quality objective first (as ``--objective`` takes it, ``auto`` too), then one or
    more costs of the trial's model (``tuning.costs``), each once."""
    from tuning.costs import check_costs
    from tuning.trials import COST_OBJECTIVES

    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) < 2:
        raise StudyError(f"--objectives '{text}': name the quality objective and at least one cost, e.g. "
                         f"--objectives balanced_accuracy,size_mb (costs: {', '.join(COST_OBJECTIVES)})")
    if names[0] in COST_OBJECTIVES:
        raise StudyError(f"--objectives '{text}': the first is the quality objective the trials are trained for "
                         f"(balanced_accuracy, macro_f1, val_accuracy, val_loss or auto); put {names[0]} after it")
    quality = objective_name(names[0])
    check_costs(names[1:])
    if len(set(names[1:])) != len(names[1:]):
        raise StudyError(f"--objectives '{text}': each objective once")
    return [quality, *names[1:]]


def auto_objective(dataset: Path) -> tuple[str, str]:
    """(objective, why) for ``--objective auto``: balanced accuracy when class weights are in use (the prepared
    classes are unequal, so plain accuracy would reward ignoring the small ones), accuracy otherwise."""
    from tuning.data.prepare import weighted_classes

    if weighted_classes(dataset):
        return "val_balanced_accuracy", "auto: the dataset is prepared with class weights (classes of unequal size)"
    return "val_accuracy", "auto: the prepared classes are balanced"


def _ignore(event: Mapping[str, Any]) -> None:
    """The default ``on_event``: a notebook call runs quietly."""


def resolve_space(request: SearchRequest, budget: str, *, run_finder: bool = False) -> tuple[SearchSpace, int, int]:
    """The narrowed space plus (trials, epochs) after the budget and the explicit options; ``run_finder``: with
    ``--lr-range auto`` and no finished range test for this space, run one (else that is an error)."""
    from tuning.engines.staged import plan_size

    space = load_space(request.space or request.model)
    if request.preset:
        space = space.with_preset(request.preset)
    if request.weights is not None:
        space = space.with_weights(request.weights)
    space, chosen = space.with_budget(budget)
    if request.lr_range is not None:
        from tuning.lrfind import lr_range_space

        space = lr_range_space(space, request.lr_range, model=request.model, dataset=Path(request.data),
                               budget=budget, seed=request.seed, runs=request.runs, run_finder=run_finder,
                               precision=request.precision)
    if request.params is not None:
        space = space.with_search(request.params)
    elif request.engine == "staged":
        space = space.with_search([p for p in space.staged_order if p not in chosen.fixed])
    if request.split is not None:
        space = space.with_split(request.split)
    if request.engine != "staged" and "split" in space.search:
        if request.params is not None and "split" in request.params:
            raise StudyError("--params split: the split is the evaluation protocol, not a hyperparameter (trials "
                             "scored on different validation images cannot be ranked); fix it with --split SCHEME, "
                             "or replay the study's split stage with --engine staged")
        space = space.with_search([p for p in space.search if p != "split"])  # optimisers hold the split fixed
    epochs = request.epochs or chosen.epochs
    space = space.with_base({"epochs": epochs})
    if request.engine == "staged":  # --trials stops the plan early (a rerun with more continues it)
        trials = min(request.trials, plan_size(space)) if request.trials else plan_size(space)
    else:
        trials = request.trials or chosen.trials
    if request.engine == "optuna" and request.sampler == "grid":
        grid = math.prod(len(space.params[p].grid_values()) for p in space.search)
        trials = min(trials, grid)  # the grid sampler repeats points once every one was tried
    return space, trials, epochs


def _check_request(request: SearchRequest) -> None:
    """Every option that names something, checked before the dataset is read or a file written."""
    from tuning.engines.kerastuner_engine import TUNERS
    from tuning.engines.optuna_engine import PRUNERS, SAMPLERS, check_sampler
    from tuning.runtime import PRECISIONS, requested_backend

    if request.precision not in PRECISIONS:
        raise UnknownNameError("--precision", request.precision, PRECISIONS)
    requested_backend(request.backend)
    if request.engine not in ENGINES:
        raise UnknownNameError("engine", request.engine, ENGINES)
    samplers = {"optuna": SAMPLERS, "kerastuner": TUNERS, "staged": (DEFAULT_SAMPLERS["staged"],)}[request.engine]
    if request.sampler not in ("auto", *samplers):
        raise UnknownNameError(f"--sampler for the {request.engine} engine", request.sampler, ("auto", *samplers))
    if request.engine == "optuna":
        check_sampler(request.sampler)  # a missing package (gp: torch) before anything is written
    if request.pruner not in PRUNERS:
        raise UnknownNameError("--pruner", request.pruner, PRUNERS)
    objective_name(request.objective)
    if request.objectives is not None:
        _check_objectives(request)
    if request.workers > 1 and request.engine != "optuna":
        raise StudyError(f"--workers applies to the optuna engine; {request.engine} runs one trial at a time here "
                         "(Keras Tuner scales out with its own chief/worker mode, see the README)")
    for name in ("repeats", "workers", "cv"):
        if getattr(request, name) < 1:
            raise StudyError(f"--{name} must be >= 1, got {getattr(request, name)}")
    if request.trials_per_process < 0:
        raise StudyError(f"--trials-per-process must be >= 0, got {request.trials_per_process}")


#: Optuna samplers that search several objectives (CMA-ES and GP here search one).
MULTI_OBJECTIVE_SAMPLERS = ("auto", "tpe", "nsga2", "random", "grid")


def _check_objectives(request: SearchRequest) -> None:
    """``--objectives`` asks the optuna engine with a multi-objective sampler; ``--objective`` may only agree."""
    if request.engine != "optuna":
        raise StudyError(f"--objectives needs --engine optuna: the {request.engine} engine searches one objective "
                         "(use --objective)")
    if request.sampler not in MULTI_OBJECTIVE_SAMPLERS:
        raise StudyError(f"--sampler {request.sampler} searches one objective; with --objectives use "
                         f"{', '.join(MULTI_OBJECTIVE_SAMPLERS[1:])} (auto: tpe)")
    names = parse_objectives(str(request.objectives))
    single = objective_name(request.objective)
    if single != "auto" and single != names[0]:
        raise StudyError(f"--objective {request.objective} and --objectives {request.objectives} disagree: the "
                         "first of --objectives is the quality objective; drop --objective")


def dataset_digest(dataset: Path) -> str:
    """sha256 over every raw image's path, class, bytes and source group: the dataset's content, which its path
    alone is not (the manifest keeps the hash it first saw, so a file changed in place under the same name shows
    only here; a changed ``--group-by`` moves images between splits)."""
    from tuning.data.images import image_files
    from tuning.data.manifest import class_dirs, read_manifest

    dataset = Path(dataset)
    groups = ({row["path"]: row["source_group"] for row in read_manifest(dataset)}
              if (dataset / "manifest.csv").exists() else {})
    digest = hashlib.sha256()
    for class_dir in class_dirs(dataset):
        for path in image_files(class_dir):
            rel = path.relative_to(dataset).as_posix()
            digest.update(f"{rel}\0{class_dir.name}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
            if groups.get(rel):  # ungrouped datasets keep the digest they always had
                digest.update(f"group\0{groups[rel]}\0".encode())
    return digest.hexdigest()


def _resolve(request: SearchRequest, settings: Mapping[str, Any] | None, *, run_finder: bool = False
             ) -> tuple[StudyConfig, SearchSpace, Path, str]:
    """(config, narrowed space, folder, budget), reading but never writing; see ``resolve_config``."""
    from tuning import runtime
    from tuning.data.manifest import raw_dir
    from tuning.models import get_model_fn

    _check_request(request)
    raw_dir(request.data)
    if settings is None:
        settings = runtime.resolve(precision=request.precision, backend=choose_backend(request))
    else:
        requested = runtime.requested_backend(request.backend)
        settings = {"backend": "tensorflow" if requested == "auto" else requested, **settings}
    get_model_fn(request.model)
    budget = request.budget if request.budget != "auto" else ("full" if settings["device"] == "gpu" else "quick")
    space, trials, epochs = resolve_space(request, budget, run_finder=run_finder)
    if space.model != request.model:
        raise StudyError(
            f"{space.source} declares model '{space.model}', not '{request.model}'; pass --model {space.model}"
        )
    name = request.study or f"{request.model}-{Path(request.data).name}-{budget}"
    folder = study_folder(name, request.runs)
    check_study_folder(folder, runs=request.runs)
    old = read_config(folder) if study_paths(folder)["config"].exists() else None
    if old is not None and request.precision == "auto":
        settings["precision"] = old.precision  # resuming: auto keeps what the study trained with
    objectives = (parse_objectives(request.objectives) if request.objectives is not None
                  else list(old.objectives) if old is not None else [])  # resuming: a study keeps its objectives
    objective = objectives[0] if objectives else objective_name(request.objective)
    if objective == "auto":  # resuming: auto keeps the study's objective, else it follows the dataset
        objective = old.objective if old is not None else auto_objective(Path(request.data))[0]
    if objectives:
        objectives[0] = objective
    if request.storage:
        storage = absolute_storage(request.storage, Path.cwd())
    else:  # no --storage: the study's own, else a journal in its folder
        storage = old.storage if old is not None else default_storage(folder)
    config = StudyConfig(
        name=Path(os.path.abspath(folder)).name, model=request.model,
        dataset=Path(os.path.abspath(request.data)).as_posix(), engine=request.engine,
        sampler=DEFAULT_SAMPLERS[request.engine] if request.sampler == "auto" else request.sampler,
        # Optuna prunes no multi-objective study (Trial.report is single-objective only): recorded as none.
        pruner="none" if request.engine == "staged" or objectives else request.pruner, budget=budget, trials=trials,
        epochs=epochs, seed=request.seed, storage=storage, space=space.to_dict(),
        objective=objective, objectives=objectives, repeats=request.repeats, cv=request.cv,
        max_failures=request.max_failures,
        split_version=SPLIT_VERSION,
        dataset_sha256=dataset_digest(request.data), runtime=settings, versions=package_versions(),
    )
    if old is not None:
        _check_resume(folder, old, config)
    return config, space, folder, budget


def choose_backend(request: SearchRequest) -> str:
    """The backend the search trains on, made the one Keras loads here and in its workers (``runtime.use_backend``);
    call before anything imports keras.

    Resuming, ``auto`` (and ``KERAS_BACKEND`` alone, set shell-wide) keeps the study's own backend and another
    explicit one is an error naming both (trials of one study are compared with each other); a new study takes
    the request, else ``KERAS_BACKEND``, else ``auto`` (``runtime.AUTO_BACKENDS``). The
    study is looked up where the search will put it (``--budget auto`` guessed from the GPU driver's files, as
    no backend may be imported yet; the resume check after device detection catches a wrong guess).
    """
    from tuning import runtime

    _check_request(request)
    budget = request.budget if request.budget != "auto" else ("full" if runtime.cuda_present() else "quick")
    folder = study_folder(request.study or f"{request.model}-{Path(request.data).name}-{budget}", request.runs)
    old = None
    if study_paths(folder)["config"].exists():
        try:
            old = read_config(folder)
        except StudyError:
            old = None  # an unreadable config: the full resolution says so, with its path
    backend = runtime.requested_backend(request.backend)
    if old is not None:
        if request.backend not in (None, "auto", old.backend):  # KERAS_BACKEND alone is ambient: the study wins
            raise StudyError(_resume_message(folder, "backend", old.backend, request.backend))
        backend = old.backend
    elif backend == "auto":
        backend = runtime.auto_backend(request.model)
    return runtime.use_backend(backend)


def resolve_config(request: SearchRequest, *, settings: Mapping[str, Any] | None = None) -> StudyConfig:
    """The fully resolved settings a search would write to ``config.toml``, without writing anything.

    The whole request is validated here (names, dataset, space, study folder, resume) so a bad option leaves
    no folder behind. ``settings``: the runtime settings to assume (``runtime.resolve()`` on this machine when
    None), so tests and planning tools resolve without probing devices.
    """
    return _resolve(request, settings)[0]


def run_search(request: SearchRequest, *, on_event: OnEvent = _ignore) -> SearchOutcome | None:
    """Run (or resume) the study and everything after it; returns what the summary shows.

    The Keras dtype policy and thread settings are the caller's again afterwards (a notebook's next model is
    not silently mixed precision). Returns None in a Keras Tuner worker process: the chief finishes the study.
    """
    from tuning import runtime
    from tuning.engines._storage import open_storage
    from tuning.tracking import check_tracks, finish, tracking
    from tuning.train import TrialData

    start = time.perf_counter()
    tracks = check_tracks(request.track)  # an unknown tracker or its missing package: before anything is written
    isolated = trials_in_children(request)  # then this process imports neither TensorFlow nor a Keras backend
    if isolated:  # the device probe, the model registry, a missing cache and an LR range test all need Keras
        _precheck(request)  # a typo answers at once, not after a child's TensorFlow start-up
        config, space, folder, budget = call_in_fresh_process(_resolve_and_check, request)
    else:
        config, space, folder, budget = _resolve_and_check(request)
    if not config.storage.startswith("journal:"):
        open_storage(config.storage)  # a wrong host, password or path fails here, before the folder is made
    data = TrialData.for_space(request.data, space, seed=request.seed)
    write_config(folder, config)
    keras_settings = nullcontext() if isolated else runtime.applied(config.runtime)
    with keras_settings, tracking(on_event, tracks, folder) as tracked:
        return finish(tracked, _execute(request, config, space, folder, budget, data, on_event=tracked, start=start))


def trials_in_children(request: SearchRequest) -> bool:
    """Whether every trial trains in a worker process (``--workers`` > 1 or ``--trials-per-process``), so this
    one only coordinates and leaves retraining and export to a child too."""
    return request.engine != "kerastuner" and (request.workers > 1 or bool(request.trials_per_process))


def _precheck(request: SearchRequest) -> None:
    """The checks of ``_resolve`` that need neither Keras nor the device (so not the budget ``auto`` picks): the
    options' names, the dataset folder, and the built-in space's preset, budget, parameters and split."""
    from search_spaces import builtin_names
    from tuning.data.manifest import raw_dir

    _check_request(request)
    raw_dir(request.data)
    if request.space is None and request.model not in builtin_names():
        return  # an unknown model: the registry, which imports the models, says so with the known names
    space = load_space(request.space or request.model)
    if request.preset:
        space = space.with_preset(request.preset)
    if request.budget != "auto":
        space.with_budget(request.budget)
    if request.params is not None:
        space.with_search(request.params)
    if request.split is not None:
        space.with_split(request.split)


def _resolve_and_check(request: SearchRequest) -> tuple[StudyConfig, SearchSpace, Path, str]:
    """``_resolve`` (an LR range test too, when asked), then the data checked against the space: a class missing
    from a split or fold is refused before the folder is made (a missing cache is built on the way)."""
    config, space, folder, budget = _resolve(request, None, run_finder=True)  # chooses the backend: keras after
    from tuning.models.backbones import check_study_weights
    from tuning.train import TrialData, check_trainable

    check_trainable(TrialData.for_space(request.data, space, seed=request.seed), space, folds=config.cv)
    check_study_weights(config.model, space)  # a backbone's weights at hand (downloaded now) and fitting it
    return config, space, folder, budget


def _finish_study(folder: Path, dataset: Path, params: dict[str, Any],
                  extra: dict[str, Any]) -> tuple[dict[str, Any], Path, Path]:
    """Retrain and test, report (its test-image grid resizes with Keras), export: a coordinating search's child
    does it from the study folder alone."""
    from tuning import runtime
    from tuning.evaluate import retrain_and_test
    from tuning.export import export_study
    from tuning.report import build_report
    from tuning.train import TrialData

    config = read_config(folder)
    runtime.use_backend(config.backend)  # the study's, as its workers trained on
    runtime.load_backend()  # quietly, before anything else imports keras
    space = SearchSpace.from_dict(config.space, source=str(study_paths(folder)["config"]))
    data = TrialData.for_space(dataset, space, seed=config.seed)
    with runtime.applied(config.runtime):
        metrics = retrain_and_test(config, space, data, params, folder, extra=extra)
    return metrics, build_report(folder), export_study(folder).model


def _execute(request: SearchRequest, config: StudyConfig, space: SearchSpace, folder: Path, budget: str,
             data: TrialData, *, on_event: OnEvent, start: float) -> SearchOutcome | None:
    note = ""  # why --objective auto chose what it did, for the summary
    asked = parse_objectives(request.objectives)[0] if request.objectives else objective_name(request.objective)
    if asked == "auto":
        chosen, why = auto_objective(Path(request.data))
        note = why if config.objective == chosen else "auto: the resumed study's own"
    on_event(StudyEvent(event="study", folder=str(folder), config=config, space=space, objective_note=note))

    from tuning.engines import run_engine
    from tuning.engines._common import wait_for_others
    from tuning.engines.optuna_engine import load_study
    from tuning.engines.processes import run_workers
    from tuning.evaluate import retrain_and_test
    from tuning.export import export_study
    from tuning.report import build_report
    from tuning.trials import best_trial, objective_values, pareto_front, pruned_epochs, quality, state_counts

    if not trials_in_children(request):
        study = run_engine(config, space, data, folder, on_event=on_event)
    else:
        first = len(load_study(config, space).trials)  # create tables and study once, before workers race
        run_workers(folder, data_dir=Path(request.data), workers=request.workers,
                    per_process=request.trials_per_process, on_event=on_event, first_trial=first)
        study = load_study(config)
    if request.engine == "kerastuner":
        from tuning.engines.kerastuner_engine import is_worker

        if is_worker():
            return None
    wait_for_others(study)
    best = best_trial(study, config.objective)
    if best is None:
        raise StudyError(f"{folder}: no trial completed, so there is nothing to retrain; see trials/*/history.json")
    best_params = space.resolve(best.params)
    on_event(RetrainEvent(event="retrain", params=best_params))
    extra = {"trial": best.number, "pick": "best"}
    if trials_in_children(request):
        metrics, report, model = call_in_fresh_process(_finish_study, folder, Path(request.data), best_params, extra)
    else:
        metrics = retrain_and_test(config, space, data, best_params, folder, extra=extra)
        report = build_report(folder)
        model = export_study(folder).model
    costs = {k: v for k, v in objective_values(best, config.objectives).items() if k != config.objective}
    return SearchOutcome(folder, config, best_params, float(quality(best) or math.nan), best.number,
                         state_counts(study), metrics, report, model, time.perf_counter() - start,
                         reduced=_reduced(space, budget), pruned_at=pruned_epochs(study),
                         front=[t.number for t in pareto_front(study, config.objectives)] if config.objectives else [],
                         best_costs=costs)


def _reduced(space: SearchSpace, budget: str) -> dict[str, Any]:
    """The settings where this run departs from the study's own (``full``) budget."""
    full = space.budgets.get("full")
    if budget == "full" or full is None:
        return {}
    out = {k: v for k, v in space.budgets[budget].fixed.items() if full.fixed.get(k) != v}
    if space.base["epochs"] != full.epochs:
        out["epochs"] = space.base["epochs"]
    return out


#: Settings that make two runs' trials comparable, with the option that sets each.
RESUME_KEYS = {"model": "--model", "dataset": "--data", "engine": "--engine", "objectives": "--objectives",
               "sampler": "--sampler",
               "pruner": "--pruner", "objective": "--objective", "epochs": "--epochs", "seed": "--seed",
               "repeats": "--repeats", "cv": "--cv", "storage": "--storage", "precision": "--precision",
               "backend": "--backend", "space": "--space"}


def _check_resume(folder: Path, old: StudyConfig, config: StudyConfig) -> None:
    """A second run of a study must ask for the same thing, or its trials would not be comparable (a maximised
    study receiving val_loss values, a TPE study continued by random draws, images changed in place)."""
    if old.split_version != config.split_version:
        raise StudyError(f"{folder} holds a study whose images were split by an earlier version of the toolkit "
                         f"(split version {old.split_version}, now {config.split_version}), so resumed trials would "
                         "be scored on other images; pass --study NEW_NAME for a new study")
    for key in RESUME_KEYS:
        was, now = getattr(old, key), getattr(config, key)
        if was == now:
            continue
        if key == "objectives" and not was:
            shown, hint = f"one objective, not objectives {','.join(now)}", "no --objectives"
        elif key == "space":
            differ = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
            shown = f"a search space that differs in {', '.join(differ)}"
            hint = "the same --space, --preset and --params"
        else:
            raise StudyError(_resume_message(folder, key, was, now))
        raise StudyError(f"{folder} holds a study with {shown}; rerun with {hint} to resume it, "
                         "or pass --study NEW_NAME for a new study")
    if old.dataset_sha256 and old.dataset_sha256 != config.dataset_sha256:
        raise StudyError(f"{folder}: the images in {config.dataset}/raw (or their groups) changed since the study "
                         "started (content "
                         f"sha256 {old.dataset_sha256[:12]}, now {config.dataset_sha256[:12]}); restore them to "
                         "resume, or pass --study NEW_NAME to search the new data")


def _resume_message(folder: Path, key: str, was: Any, now: Any) -> str:
    """A resume asking for another value of ``key`` than the study has: both values and the option to fix it."""
    return (f"{folder} holds a study with {key} {_shown(key, was)}, not {_shown(key, now)}; rerun with "
            f"{RESUME_KEYS[key]} {_shown(key, was, bare=True)} to resume it, or pass --study NEW_NAME for a new study")


def _shown(key: str, value: Any, *, bare: bool = False) -> str:
    if key == "storage":
        from tuning.engines._storage import mask_password

        value = mask_password(str(value))
    if key == "objectives":
        value = ",".join(value)
    return str(value) if bare else repr(value)


def describe_reduced(reduced: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in reduced.items())
