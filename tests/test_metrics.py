from __future__ import annotations

import numpy as np
import pytest

from tuning.metrics import confusion_matrix, summarize, wilson_interval


def test_confusion_matrix_rows_are_true_classes() -> None:
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (8, 10, 0.4902, 0.9433),   # Wilson (1927) / Newcombe (1998) worked values
    (0, 10, 0.0, 0.2775),
    (81, 263, 0.2553, 0.3662),  # Newcombe (1998), table I example
])
def test_wilson_interval_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-4)


def test_summary_against_hand_computed_values() -> None:
    cm = np.array([[5, 1, 0], [2, 6, 2], [0, 0, 4]])
    s = summarize(cm, ["a", "b", "c"])
    assert s["n"] == 20
    assert s["accuracy"] == pytest.approx(15 / 20)
    assert s["balanced_accuracy"] == pytest.approx((5 / 6 + 6 / 10 + 4 / 4) / 3)
    assert s["per_class"]["a"]["precision"] == pytest.approx(5 / 7)
    assert s["per_class"]["b"]["recall"] == pytest.approx(6 / 10)
    assert s["per_class"]["c"]["f1"] == pytest.approx(2 * (4 / 6) * 1.0 / (4 / 6 + 1.0))
    low, high = s["accuracy_ci95"]
    assert low < 0.75 < high
