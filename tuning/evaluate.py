"""Retrain the best configuration from scratch and test it once on the split no trial has seen."""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.data.splits import summarize_split
from tuning.errors import StudyError, UnknownNameError
from tuning.metrics import confusion_matrix, macro_roc_auc, seed_summary, summarize
from tuning.models.describe import layer_table
from tuning.space import SearchSpace
from tuning.study import StudyConfig, read_config, study_paths
from tuning.train import EpochHook, TrialData, make_dataset, train_trial
from tuning.trials import best_first, completed, direction, objective_values, quality, real_trials, state_name
from tuning.trials import best_trial as _best_trial

#: What the final model may be fitted on; the test split is never among them.
FIT_ON = ("train", "train+val")


def save_model(model: Any, path: Path) -> None:
    """Keras insists on the .keras suffix, so the temporary file keeps it before the atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(tmp)
    os.replace(tmp, path)


def inference_model(model_name: str, params: Mapping[str, Any], trained: Any, n_classes: int) -> Any:
    """The trained network rebuilt without its augmentation layers, weights copied.

    Keras random layers also transform on a bare ``model(x)`` call (they default to training mode), so a
    shipped model must not contain them: then every way of calling it gives the same answer.
    """
    import keras

    from tuning.models import build_model
    from tuning.space import Augmentation

    size = int(params["image_size"])
    trained_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # mixed-precision training still ships a float32 model
    try:
        clean = build_model(model_name, {**params, "augmentation": Augmentation("none")}, (size, size, 3), n_classes)
    finally:
        keras.config.set_dtype_policy(trained_policy)
    clean.set_weights(trained.get_weights())
    return clean


class _TrainPlusVal(TrialData):
    """The same splits with validation merged into training and nothing left to validate on.

    ``train_trial`` then logs no ``val_*`` metric, so its best-weights callback never fires and the weights of
    the last epoch are kept: with no validation set, the epoch count chosen during the search is the stop rule.
    """

    def __init__(self, base: TrialData) -> None:
        super().__init__(base.dataset, seed=base.seed, test_fraction=base.test_fraction)
        self._arrays = base._arrays  # share the arrays already loaded

    def split(self, image_size: int, scheme: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        views = super().split(image_size, scheme)
        merged = tuple(np.concatenate([a, b]) for a, b in zip(views["train"], views["val"]))
        empty = tuple(a[:0] for a in views["val"])
        return {"train": merged, "val": empty, "test": views["test"]}  # type: ignore[dict-item]


def best_epoch_count(history: Mapping[str, list[float]], objective: str) -> int:
    """Epochs up to the trial's best validation epoch (1-based); 0 when no epoch was validated."""
    values = np.asarray(history.get(objective, []), dtype=np.float64)
    if not len(values) or np.all(np.isnan(values)):
        return 0
    return int(np.nanargmin(values) if direction(objective) == "minimize" else np.nanargmax(values)) + 1


def best_trial(study: Any, objective: str) -> Any:
    """The trial to retrain: ``tuning.trials.best_trial`` (the summary and the report name the same one), or an
    error when none completed."""
    best = _best_trial(study, objective)
    if best is None:
        raise StudyError(f"study '{study.study_name}': no trial completed, so there is nothing to retrain")
    return best


#: ``tuning retrain --pick``: which trial's configuration is retrained (see ``pick_trial``).
PICKS = ("best", "best:OBJECTIVE", "trial:N", "smallest-within:DELTA")


def parse_pick(pick: str) -> tuple[str, str]:
    """``--pick`` as (rule, argument), checked for its form only (the study checks the rest)."""
    rule, _, arg = pick.partition(":")
    ok = {"best": True, "trial": arg.isdigit(), "smallest-within": _is_number(arg)}.get(rule, False)
    if not ok or (rule != "best" and not arg) or (rule == "best" and pick.endswith(":")):
        raise StudyError(f"--pick '{pick}': choose {', '.join(PICKS)} (e.g. best:size_mb, trial:3, "
                         "smallest-within:0.01)")
    return rule, arg


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) >= 0
    except ValueError:
        return False


def pick_trial(study: Any, config: StudyConfig, pick: str = "best") -> Any:
    """The trial ``tuning retrain --pick`` names; an error that says why when it names none that finished.

    - ``best``: the best by the quality objective (a multi-objective study's first), as the summary names it;
    - ``best:OBJECTIVE``: the best by one of the study's objectives (``best:size_mb``: the smallest model);
    - ``trial:N``: trial number N, which must be complete;
    - ``smallest-within:DELTA``: for the phone, the cheapest model (by the study's first cost objective: the
      smallest under ``size_mb``, the fastest under ``latency_ms``) among the complete trials whose quality is
      within DELTA of the best (absolute, in the objective's units: 0.01 is one point of accuracy); ties go
      to the better quality, then the lower trial number.
    """
    rule, arg = parse_pick(pick)
    objectives = config.objectives or [config.objective]
    if rule == "best" and not arg:
        return best_trial(study, config.objective)
    if rule == "trial":
        trials = {t.number: t for t in real_trials(study)}
        if int(arg) not in trials:
            shown = f"trials {min(trials)}-{max(trials)}" if trials else "no trials"
            raise StudyError(f"--pick {pick}: study '{config.name}' has no trial #{arg} ({shown})")
        chosen = trials[int(arg)]
        if not completed([chosen]):
            raise StudyError(f"--pick {pick}: trial #{arg} is {state_name(chosen)}, not complete, so it has no "
                             "result to retrain; pick a complete one ('tuning report' lists them)")
        return chosen
    pool = completed(study)
    if not pool:
        raise StudyError(f"study '{config.name}': no trial completed, so there is nothing to retrain")
    if rule == "best":
        name = arg if arg in objectives else f"val_{arg}"  # the short names --objective takes: val_ + name
        if name not in objectives:
            raise UnknownNameError("--pick objective", arg, objectives)
        scored = [t for t in pool if math.isfinite(objective_values(t, objectives)[name])]
        sign = 1.0 if direction(name) == "minimize" else -1.0
        return min(scored, key=lambda t: (sign * objective_values(t, objectives)[name], t.number))
    if len(objectives) < 2:
        raise StudyError(f"--pick {pick}: study '{config.name}' has no cost objective to be smallest by; it was "
                         "searched for one objective (search with --objectives QUALITY,size_mb)")
    cost, delta = objectives[1], float(arg)
    top = quality(best_first(pool, config.objective)[0])
    assert top is not None  # completed trials have a finite quality
    sign = 1.0 if direction(config.objective) == "minimize" else -1.0
    close = [t for t in pool if sign * (float(quality(t) or 0.0) - top) <= delta
             and math.isfinite(objective_values(t, objectives)[cost])]
    return min(close, key=lambda t: (objective_values(t, objectives)[cost], sign * float(quality(t) or 0.0),
                                     t.number))


def retrain_and_test(
    config: StudyConfig, space: SearchSpace, data: TrialData, params: Mapping[str, Any], folder: Path,
    *, fit_on: str = "train", seeds: int = 1, epochs: int | None = None, hooks: list[EpochHook] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``params`` from scratch with ``seeds`` seeds, test each once, keep the first seed's model.

    ``fit_on="train"`` keeps the weights of the validation epoch best by the study's objective (lowest
    ``val_loss`` under ``--objective val_loss``); ``"train+val"`` has no validation set,
    so it trains for ``epochs`` (the best trial's best epoch count) and keeps the last weights. Several seeds
    show how much the test accuracy owes to the seed; the shipped model is always seed ``config.seed``.
    Writes ``final/model.keras``, ``metrics.json``, ``architecture.json`` and ``predictions.csv``; ``extra``
    goes into ``metrics.json`` as it is (which trial was retrained, and why).
    """
    if fit_on not in FIT_ON:
        raise UnknownNameError("--fit-on value", fit_on, FIT_ON)
    if seeds < 1:
        raise StudyError(f"--seeds must be >= 1, got {seeds}")
    if fit_on == "train+val" and not epochs:
        raise StudyError("--fit-on train+val needs the epoch count to train for (the best trial's best epoch)")
    n_epochs = int(epochs or config.epochs)
    view = _TrainPlusVal(data) if fit_on == "train+val" else data
    final = study_paths(folder)["final"]
    accuracies: list[float] = []
    metrics: dict[str, Any] = {}
    for k in range(seeds):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(ran out of data|conditioned on metric).*")
            result = train_trial(config.model, params, view, space, epochs=n_epochs, seed=config.seed + k,
                                 hooks=hooks or (), keep_model=True, objective=config.objective)
        if result.status != "complete":
            raise StudyError(f"retraining the best configuration (seed {config.seed + k}) {result.status}: "
                             f"{result.reason}")
        views = data.split(int(params["image_size"]), str(params["split"]))
        x, y, ids = views["test"]
        batches = make_dataset(x, y, len(data.classes), 64, shuffle_seed=None)
        shipped = inference_model(config.model, params, result.model, len(data.classes))  # tested as shipped
        probs = np.asarray(shipped.predict(batches, verbose=0), dtype=np.float64)
        pred = probs.argmax(axis=1)
        accuracies.append(float((pred == y).mean()) if len(y) else math.nan)
        if k:
            continue
        auc, auc_per_class = macro_roc_auc(y, probs)
        metrics = summarize(confusion_matrix(y, pred, len(data.classes)), data.classes)
        metrics |= {
            "classes": list(data.classes),
            "params": dict(params),
            "fit_on": fit_on,
            "epochs_trained": result.epochs,
            "best_epoch": result.best_epoch + 1 if fit_on == "train" else n_epochs,
            "val_accuracy": result.val_accuracy,
            "roc_auc_macro": auc,
            "roc_auc_per_class": dict(zip(data.classes, auc_per_class)),
            "split_sizes": {name: int(len(v[1])) for name, v in views.items()},
            "history": result.history,
            "seconds": result.seconds,
            "seed": config.seed,
        }
        arrays = data.arrays(int(params["image_size"]))  # group-disjointness and class-share drift of this split
        metrics |= summarize_split(arrays.y, arrays.groups, str(params["split"]), seed=data.seed,
                                   test_fraction=data.test_fraction, classes=data.classes,
                                   scored_val=data.scored_val, source_groups=arrays.source_groups)
        save_model(shipped, final / "model.keras")
        _io.write_json(final / "architecture.json", layer_table(result.model))
        _io.write_text(final / "predictions.csv", _predictions_csv(ids, y, pred, probs, data.classes))
    metrics["seeds"] = seed_summary(accuracies)
    metrics |= dict(extra or {})
    _io.write_json(final / "metrics.json", metrics)
    return metrics


def retrain_study(folder: Path, *, fit_on: str = "train", seeds: int = 1,
                  hooks: list[EpochHook] | None = None, pick: str = "best") -> dict[str, Any]:
    """``tuning retrain``: the finished study's best trial (or the one ``pick`` names, see ``pick_trial``)
    retrained and tested again, from its folder alone."""
    from tuning import runtime
    from tuning.engines.optuna_engine import load_study

    folder = Path(folder)
    config = read_config(folder)
    space = SearchSpace.from_dict(config.space, source=str(study_paths(folder)["config"]))
    best = pick_trial(load_study(config), config, pick)
    epochs = None
    if fit_on == "train+val":
        epochs = best_epoch_count(best.user_attrs.get("history", {}), config.objective)
        if epochs == 0:
            raise StudyError(f"{folder}: best trial #{best.number} recorded no validation history, so the epoch "
                             "count for --fit-on train+val is unknown; use --fit-on train")
    data = TrialData.for_space(Path(config.dataset), space, seed=config.seed)
    with runtime.applied(config.runtime):  # the caller's dtype policy is back afterwards
        return retrain_and_test(config, space, data, space.resolve(best.params), folder, fit_on=fit_on,
                                seeds=seeds, epochs=epochs, hooks=hooks, extra={"trial": best.number, "pick": pick})


def _predictions_csv(ids: np.ndarray, y: np.ndarray, pred: np.ndarray, probs: np.ndarray,
                     classes: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "true", "predicted", *(f"p_{c}" for c in classes)])
    for file, t, p, row in zip(ids, y, pred, probs):
        writer.writerow([file, classes[t], classes[p], *(f"{v:.6f}" for v in row)])
    return buf.getvalue()


def read_predictions(folder: Path) -> list[dict[str, str]]:
    """``final/predictions.csv`` of a study as rows (file, true, predicted, p_<class>...)."""
    path = study_paths(folder)["final"] / "predictions.csv"
    if not path.exists():
        raise StudyError(f"{folder}: no final/predictions.csv; run 'tuning search' or 'tuning retrain' first")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
