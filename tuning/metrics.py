"""Test-set metrics computed from labels alone, so they can be checked against hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

#: A model "beats" the trivial baseline when the one-sided test rejects "no better than it" at this level.
BASELINE_ALPHA = 0.05


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
    majority = int(np.argmax(cm.sum(axis=1))) if n else 0
    return {
        "n": n,
        "accuracy": correct / n if n else math.nan,
        "accuracy_ci95": [low, high],
        "balanced_accuracy": float(np.mean(recalls)) if recalls else math.nan,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "baseline": baseline_test(correct, n, int(cm[majority].sum()) / n if n else math.nan,
                                  majority_class=str(classes[majority]) if len(classes) else "",
                                  n_classes=len(classes)),
    }


def baseline_test(correct: int, n: int, majority_share: float, *, majority_class: str = "",
                  n_classes: int = 0) -> dict[str, Any]:
    """Is ``correct`` out of ``n`` better than always answering the test split's majority class?

    Exact one-sided binomial test of "the model is right with probability ``majority_share`` at most"
    (``scipy.stats.binomtest``, alternative ``greater``): P(X >= correct) for X ~ Binomial(n, majority share).
    A 0.72 on a test split that is 70% one class is not a result, and the headline says so. Balanced
    accuracy's trivial baseline is chance, 1 / classes (``balanced_chance``).
    """
    from scipy.stats import binomtest

    if n == 0 or math.isnan(majority_share):
        p_value = math.nan
    elif majority_share >= 1.0:
        p_value = 1.0  # one class only: nothing can beat always answering it
    else:
        p_value = float(binomtest(int(correct), int(n), float(majority_share), alternative="greater").pvalue)
    return {"accuracy": majority_share, "majority_class": majority_class, "correct": int(correct), "n": int(n),
            "p_value": p_value, "beats": bool(p_value < BASELINE_ALPHA),
            "balanced_chance": 1.0 / n_classes if n_classes else math.nan, "test": "exact one-sided binomial"}


def headline_notes(metrics: Mapping[str, Any]) -> list[str]:
    """The sentences that go right under the test-accuracy headline in the summary and the report.

    Whether the test split is group-disjoint, by what groups, and how far its class shares drifted; and the
    headline held against the trivial baseline, with a plain warning when the model does not beat it. Older
    metrics files without these fields get no sentence rather than a guess.
    """
    notes: list[str] = []
    if "group_disjoint" in metrics:
        groups = metrics.get("groups") or {}
        drift = metrics.get("split_max_drift")
        drifted = f"; class shares within {100 * drift:.1f} points of the split asked" if drift is not None else ""
        if not metrics["group_disjoint"]:
            notes.append("Warning: the test split is NOT group-disjoint: some group has images on two sides, so "
                         "this figure is optimistic.")
        elif metrics.get("grouped_by") == "source":
            notes.append(f"Group-disjoint test split: its {groups.get('test', '?')} group(s) (source groups merged "
                         f"with near duplicates) are in neither training ({groups.get('train', '?')} groups) nor "
                         f"validation ({groups.get('val', '?')}){drifted}.")
        else:
            notes.append("Test split disjoint by near-duplicate groups only: no source groups were given, so images "
                         "of one show, person or session may sit on both sides and this figure may be optimistic "
                         "(set them with 'tuning data prepare DATASET --group-by folder|regex:...|csv:...').")
    base = metrics.get("baseline")
    if base and not math.isnan(float(base.get("p_value", math.nan))):
        shown = (f"always '{base.get('majority_class')}', accuracy {float(base['accuracy']):.3f}; exact one-sided "
                 f"binomial p = {float(base['p_value']):.3g}")
        if base.get("beats"):
            notes.append(f"Beats the trivial baseline ({shown}).")
        else:
            notes.append(f"Warning: the model does not beat the trivial baseline ({shown} >= {BASELINE_ALPHA}): "
                         "this test accuracy is no evidence that it learned anything.")
    return notes


def balanced_accuracy_interval(y_true: np.ndarray, y_pred: np.ndarray, *, draws: int = 20000,
                               seed: int = 0) -> list[float]:
    """95% interval of balanced accuracy: its posterior under a uniform prior on each class's recall.

    Balanced accuracy is a mean of per-class recalls, each a proportion over its own class, so it has no
    Wilson form; a bootstrap collapses to a point wherever a recall is 0 or 1 (a model that always answers
    one class would get the interval 1/3-1/3). Each recall's posterior is Beta(right + 1, wrong + 1), and the
    mean of draws from them is balanced accuracy's (Brodersen, Ong, Stephan & Buhmann 2010, "The balanced
    accuracy and its posterior distribution"). Seeded: the same predictions give the same interval.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    if not len(classes):
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    recalls = np.empty((draws, len(classes)))
    for j, c in enumerate(classes):
        right = int((y_pred[y_true == c] == c).sum())
        recalls[:, j] = rng.beta(right + 1, int((y_true == c).sum()) - right + 1, size=draws)
    low, high = np.percentile(recalls.mean(axis=1), [2.5, 97.5])
    return [float(low), float(high)]


def mcnemar(b: int, c: int, *, mid_p: bool = False) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs only.

    ``b`` counts images the first model got right and the second wrong, ``c`` the reverse. Concordant pairs
    carry no information about which model is better, which is why only ``b + c`` enters. The exact test is
    conservative for small ``b + c``; ``mid_p`` subtracts half the probability of the observed count, the
    usual less conservative variant (Fagerland, Lydersen & Laake 2013).
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got (b={b}, c={c})")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    if mid_p:
        return min(1.0, (2 * tail - math.comb(n, k)) / 2**n)
    return min(1.0, 2 * tail / 2**n)


#: Two-sided 95% Student t quantiles for 1-30 degrees of freedom (scipy.stats.t.ppf(0.975, df)).
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
         2.200985, 2.178813, 2.160369, 2.144787, 2.13145, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
         2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.04523, 2.042272)


def t_quantile_975(df: int) -> float:
    """The 97.5% t quantile without scipy (not a dependency): a table, then the Cornish-Fisher series."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def seed_summary(accuracies: list[float]) -> dict[str, object]:
    """Mean, sample std and a 95% t-interval of test accuracy across retraining seeds.

    The Wilson interval says how much the test sample limits what we know; this one says how much the
    result moves with the seed alone. With one seed the spread is unknown, so it is NaN, not zero.
    """
    k = len(accuracies)
    mean = float(np.mean(accuracies)) if k else math.nan
    std = float(np.std(accuracies, ddof=1)) if k > 1 else math.nan
    if k > 1:
        half = t_quantile_975(k - 1) * std / math.sqrt(k)
        ci = [mean - half, mean + half]
    else:
        ci = [math.nan, math.nan]
    return {"k": k, "accuracies": [float(a) for a in accuracies], "mean": mean, "std": std, "ci95": ci}


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (what the Mann-Whitney form of AUC needs)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the probability a random positive outscores a random negative (ties half)."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_roc_auc(y_true: np.ndarray, probs: np.ndarray) -> tuple[float, list[float]]:
    """One-vs-rest AUC per class and their unweighted mean over the classes present in ``y_true``."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    per_class = [roc_auc(y_true == i, probs[:, i]) for i in range(probs.shape[1])]
    defined = [a for a in per_class if not math.isnan(a)]
    return (float(np.mean(defined)) if defined else math.nan), per_class
