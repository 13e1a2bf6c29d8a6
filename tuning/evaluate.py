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
from tuning.train import EpochHook, TrialData, make_batches, train_trial
from tuning.trials import best_trial as _best_trial
from tuning.trials import direction

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

    def split_rows(self, image_size: int, scheme: str) -> dict[str, np.ndarray]:
        rows = super().split_rows(image_size, scheme)
        return {"train": np.concatenate([rows["train"], rows["val"]]), "val": rows["val"][:0], "test": rows["test"]}


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


def retrain_and_test(
    config: StudyConfig, space: SearchSpace, data: TrialData, params: Mapping[str, Any], folder: Path,
    *, fit_on: str = "train", seeds: int = 1, epochs: int | None = None, hooks: list[EpochHook] | None = None,
) -> dict[str, Any]:
    """Train ``params`` from scratch with ``seeds`` seeds, test each once, keep the first seed's model.

    ``fit_on="train"`` keeps the weights of the validation epoch best by the study's objective (lowest
    ``val_loss`` under ``--objective val_loss``); ``"train+val"`` has no validation set,
    so it trains for ``epochs`` (the best trial's best epoch count) and keeps the last weights. Several seeds
    show how much the test accuracy owes to the seed; the shipped model is always seed ``config.seed``.
    Writes ``final/model.keras``, ``metrics.json``, ``architecture.json`` and ``predictions.csv``.
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
        size = int(params["image_size"])
        split_rows = data.split_rows(size, str(params["split"]))
        test_rows = split_rows["test"]
        arrays = data.arrays(size)
        y, ids = arrays.y[test_rows], arrays.ids[test_rows]
        batches = make_batches(arrays.x, arrays.y, len(data.classes), 64, shuffle_seed=None, indices=test_rows)
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
            "split_sizes": {name: int(len(rows)) for name, rows in split_rows.items()},
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
    _io.write_json(final / "metrics.json", metrics)
    return metrics


def retrain_study(folder: Path, *, fit_on: str = "train", seeds: int = 1,
                  hooks: list[EpochHook] | None = None) -> dict[str, Any]:
    """``tuning retrain``: the finished study's best trial retrained and tested again, from its folder alone."""
    from tuning import runtime
    from tuning.engines.optuna_engine import load_study

    folder = Path(folder)
    config = read_config(folder)
    space = SearchSpace.from_dict(config.space, source=str(study_paths(folder)["config"]))
    best = best_trial(load_study(config), config.objective)
    epochs = None
    if fit_on == "train+val":
        epochs = best_epoch_count(best.user_attrs.get("history", {}), config.objective)
        if epochs == 0:
            raise StudyError(f"{folder}: best trial #{best.number} recorded no validation history, so the epoch "
                             "count for --fit-on train+val is unknown; use --fit-on train")
    data = TrialData.for_space(Path(config.dataset), space, seed=config.seed)
    with runtime.applied(config.runtime):  # the caller's dtype policy is back afterwards
        return retrain_and_test(config, space, data, space.resolve(best.params), folder, fit_on=fit_on,
                                seeds=seeds, epochs=epochs, hooks=hooks)


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
