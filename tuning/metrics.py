"""Test-set metrics computed from labels alone, so they can be checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return out


def wilson_interval(successes: int, n: int, *, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a proportion; honest for small test sets where the normal one is not."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(cm: np.ndarray, classes: tuple[str, ...] | list[str]) -> dict[str, object]:
    """Accuracy with its interval, balanced accuracy and per-class precision/recall/F1 from a confusion matrix."""
    n = int(cm.sum())
    correct = int(np.trace(cm))
    per_class = {}
    recalls = []
    for i, name in enumerate(classes):
        tp, support, predicted = int(cm[i, i]), int(cm[i].sum()), int(cm[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support:
            recalls.append(recall)
    low, high = wilson_interval(correct, n)
    return {
        "n": n,
        "accuracy": correct / n if n else math.nan,
        "accuracy_ci95": [low, high],
        "balanced_accuracy": float(np.mean(recalls)) if recalls else math.nan,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
