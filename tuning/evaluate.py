"""Retrain the best configuration from scratch and test it once on the split no trial has seen."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.errors import StudyError
from tuning.metrics import confusion_matrix, summarize
from tuning.models.describe import layer_table
from tuning.space import SearchSpace
from tuning.study import StudyConfig, study_paths
from tuning.train import EpochHook, TrialData, make_dataset, train_trial


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
    from tuning.models import build_model
    from tuning.space import Augmentation

    size = int(params["image_size"])
    clean = build_model(model_name, {**params, "augmentation": Augmentation("none")}, (size, size, 3), n_classes)
    clean.set_weights(trained.get_weights())
    return clean


def retrain_and_test(
    config: StudyConfig, space: SearchSpace, data: TrialData, params: Mapping[str, Any], folder: Path,
    *, hooks: list[EpochHook] | None = None,
) -> dict[str, Any]:
    """Train ``params`` on the training split (best validation epoch kept), then evaluate on test once.

    Writes ``final/model.keras``, ``final/metrics.json`` and ``final/predictions.csv``; returns the metrics.
    """
    result = train_trial(config.model, params, data, space, epochs=config.epochs, seed=config.seed,
                         hooks=hooks or (), keep_model=True)
    if result.status != "complete":
        raise StudyError(f"retraining the best configuration {result.status}: {result.reason}")
    views = data.split(int(params["image_size"]), str(params["split"]))
    x, y, ids = views["test"]
    probs = np.asarray(result.model.predict(make_dataset(x, y, len(data.classes), 64, shuffle_seed=None), verbose=0))
    pred = probs.argmax(axis=1)
    metrics = summarize(confusion_matrix(y, pred, len(data.classes)), data.classes)
    metrics |= {
        "classes": list(data.classes),
        "params": dict(params),
        "best_epoch": result.best_epoch + 1,
        "val_accuracy": result.val_accuracy,
        "split_sizes": {name: int(len(v[1])) for name, v in views.items()},
        "history": result.history,
        "seconds": result.seconds,
    }
    final = study_paths(folder)["final"]
    save_model(inference_model(config.model, params, result.model, len(data.classes)), final / "model.keras")
    _io.write_json(final / "metrics.json", metrics)
    _io.write_json(final / "architecture.json", layer_table(result.model))
    _io.write_text(final / "predictions.csv", _predictions_csv(ids, y, pred, probs, data.classes))
    return metrics


def _predictions_csv(ids: np.ndarray, y: np.ndarray, pred: np.ndarray, probs: np.ndarray,
                     classes: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "true", "predicted", *(f"p_{c}" for c in classes)])
    for file, t, p, row in zip(ids, y, pred, probs):
        writer.writerow([file, classes[t], classes[p], *(f"{v:.6f}" for v in row)])
    return buf.getvalue()
