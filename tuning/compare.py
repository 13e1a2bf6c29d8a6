"""Two studies' final models on the same test images: both accuracies with intervals and McNemar's test.

Accuracies of two models measured on the same images are not independent, so comparing their two intervals
understates what the data can tell apart; McNemar's test uses the pairing (which images each got right).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuning.errors import StudyError
from tuning.evaluate import read_predictions
from tuning.metrics import mcnemar, wilson_interval


@dataclass(frozen=True)
class Side:
    folder: Path
    correct: int
    n: int
    ci95: tuple[float, float]

    @property
    def accuracy(self) -> float:
        return self.correct / self.n


@dataclass(frozen=True)
class Comparison:
    """``b``: images only A got right; ``c``: only B. ``p_exact`` is the exact two-sided binomial McNemar test."""

    a: Side
    b_side: Side
    both_right: int
    only_a: int
    only_b: int
    both_wrong: int
    p_exact: float
    p_mid: float

    @property
    def difference(self) -> float:
        return self.a.accuracy - self.b_side.accuracy


def compare_studies(a: Path, b: Path) -> Comparison:
    """Pair the two studies' test predictions by file; refuse when they were not tested on the same images."""
    rows_a, rows_b = read_predictions(a), read_predictions(b)
    truth_a = {r["file"]: r["true"] for r in rows_a}
    truth_b = {r["file"]: r["true"] for r in rows_b}
    if not truth_a:
        raise StudyError(f"{a}: final/predictions.csv lists no test image")
    if truth_a.keys() != truth_b.keys():
        only = len(truth_a.keys() - truth_b.keys()) + len(truth_b.keys() - truth_a.keys())
        raise StudyError(f"{a} and {b} were tested on different images ({only} not in both test splits); "
                         "McNemar's test needs the same test split (same dataset, seed and split)")
    relabelled = [f for f in truth_a if truth_a[f] != truth_b[f]]
    if relabelled:
        raise StudyError(f"{a} and {b} label {len(relabelled)} test image(s) differently (e.g. {relabelled[0]}); "
                         "they did not use the same dataset")
    right_a = {r["file"]: r["true"] == r["predicted"] for r in rows_a}
    right_b = {r["file"]: r["true"] == r["predicted"] for r in rows_b}
    pairs = [(right_a[f], right_b[f]) for f in truth_a]
    only_a = sum(x and not y for x, y in pairs)
    only_b = sum(y and not x for x, y in pairs)
    both = sum(x and y for x, y in pairs)
    n = len(pairs)

    def side(folder: Path, correct: int) -> Side:
        return Side(Path(folder), correct, n, wilson_interval(correct, n))

    return Comparison(side(a, both + only_a), side(b, both + only_b), both, only_a, only_b,
                      n - both - only_a - only_b, mcnemar(only_a, only_b), mcnemar(only_a, only_b, mid_p=True))
