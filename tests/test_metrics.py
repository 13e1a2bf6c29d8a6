from __future__ import annotations

import numpy as np
import pytest

from tuning.metrics import balanced_accuracy_interval, confusion_matrix, summarize, wilson_interval


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


# ----- McNemar, seeds, ROC-AUC -------------------------------------------------------------------------------
from tuning.metrics import macro_roc_auc, mcnemar, roc_auc, seed_summary, t_quantile_975  # noqa: E402


def test_mcnemar_exact_matches_the_known_value_and_scipy() -> None:
    assert mcnemar(10, 2) == pytest.approx(0.0386, abs=5e-5)
    assert mcnemar(2, 10) == mcnemar(10, 2)
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(10, 2), (0, 5), (7, 3), (25, 14), (1, 0), (40, 60)]:
        assert mcnemar(b, c) == pytest.approx(stats.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)


def test_mcnemar_equal_or_no_discordant_pairs_is_one_and_mid_p_is_smaller() -> None:
    assert mcnemar(4, 4) == 1.0 and mcnemar(0, 0) == 1.0 and mcnemar(4, 4, mid_p=True) == 1.0
    # mid-p: the exact p minus the probability of the observed split, C(12, 2) / 2^12, once per tail
    assert mcnemar(10, 2, mid_p=True) == pytest.approx((2 * (1 + 12 + 66) - 66) / 4096)
    with pytest.raises(ValueError, match="b=-1"):
        mcnemar(-1, 2)


def test_t_quantile_matches_scipy_beyond_its_table() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 30, 31, 45, 100, 1000):
        assert t_quantile_975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=2e-5)


def test_seed_summary_by_hand() -> None:
    s = seed_summary([0.8, 0.9])
    assert s["k"] == 2 and s["mean"] == pytest.approx(0.85) and s["std"] == pytest.approx(0.0707107, abs=1e-6)
    half = 12.706205 * 0.0707107 / 2**0.5
    assert s["ci95"] == pytest.approx([0.85 - half, 0.85 + half], abs=1e-5)
    one = seed_summary([0.7])
    assert one["mean"] == 0.7 and np.isnan(one["std"]) and all(np.isnan(one["ci95"]))


def test_roc_auc_counts_pairs_and_halves_ties() -> None:
    # positives 0.9, 0.4; negatives 0.5, 0.1: 3 of 4 pairs ordered right
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    assert roc_auc(np.array([1, 0, 0]), np.array([0.5, 0.5, 0.1])) == pytest.approx(0.75)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_macro_roc_auc_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1],
                      [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7]])
    macro, per = macro_roc_auc(y, probs)
    # class 0: positives .8 .3 vs negatives .2 .5 .1 .1 -> (4 + 3) / 8; class 1: .7 .4 vs .1 .6 .1 .2 -> (4 + 3) / 8
    # class 2: .8 .7 vs .1 .1 .1 .1 -> 1
    assert per == pytest.approx([7 / 8, 7 / 8, 1.0])
    assert macro == pytest.approx((7 / 8 + 7 / 8 + 1.0) / 3)
    stats = pytest.importorskip("scipy.stats")  # Mann-Whitney U / (n_pos n_neg) is the same quantity
    u = stats.mannwhitneyu(probs[y == 0, 0], probs[y != 0, 0]).statistic
    assert per[0] == pytest.approx(u / 8)


# ----- the trivial baseline ---------------------------------------------------------------------------------
import math  # noqa: E402

from tuning.metrics import baseline_test, headline_notes  # noqa: E402


def _upper_tail(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_half_right_on_a_balanced_pair_does_not_beat_the_majority_class() -> None:
    s = summarize(np.array([[25, 25], [25, 25]]), ["a", "b"])
    base = s["baseline"]
    assert base["accuracy"] == 0.5 and base["majority_class"] == "a"
    assert base["p_value"] == pytest.approx(_upper_tail(50, 100, 0.5), rel=1e-9)
    assert base["p_value"] == pytest.approx(0.5397946, abs=1e-6)
    assert base["beats"] is False
    assert any(n.startswith("Warning: the model does not beat the trivial baseline (always 'a', accuracy 0.500; "
                            "exact one-sided binomial p = 0.54") for n in headline_notes(s))


def test_eighty_of_a_hundred_beats_it_and_the_majority_share_is_the_test_splits() -> None:
    s = summarize(np.array([[40, 10], [10, 40]]), ["a", "b"])
    assert s["baseline"]["p_value"] == pytest.approx(_upper_tail(80, 100, 0.5), rel=1e-9)
    assert s["baseline"]["beats"] is True
    assert headline_notes(s) == [f"Beats the trivial baseline (always 'a', accuracy 0.500; exact one-sided binomial "
                                 f"p = {_upper_tail(80, 100, 0.5):.3g})."]
    # 72% right where 70% of the test split is one class: not better than always answering it
    skewed = baseline_test(72, 100, 0.70)
    assert skewed["p_value"] == pytest.approx(_upper_tail(72, 100, 0.70), rel=1e-9) and not skewed["beats"]
    assert baseline_test(0, 0, math.nan)["beats"] is False
    assert baseline_test(10, 10, 1.0)["p_value"] == 1.0


def test_headline_notes_say_whether_the_test_split_is_group_disjoint() -> None:
    grouped = {"group_disjoint": True, "grouped_by": "source", "groups": {"train": 60, "val": 12, "test": 12},
               "split_max_drift": 0.021}
    assert headline_notes(grouped) == [
        "Group-disjoint test split: its 12 group(s) (source groups merged with near duplicates) are in neither "
        "training (60 groups) nor validation (12); class shares within 2.1 points of the split asked."]
    near = headline_notes({**grouped, "grouped_by": "near-duplicates"})
    assert near[0].startswith("Test split disjoint by near-duplicate groups only") and "--group-by" in near[0]
    assert headline_notes({**grouped, "group_disjoint": False})[0].startswith("Warning: the test split is NOT")
    assert headline_notes({}) == []  # an older metrics.json: nothing guessed


def test_balanced_accuracy_interval_covers_the_estimate_and_narrows_with_more_images() -> None:
    """Posterior interval (uniform prior per recall): seeded (same predictions, same interval), around the
    point estimate, several times narrower on 1200 images than on 12 of the same recalls, never a point where
    a recall is 0 or 1 (a one-class answerer: 1/3 inside a real interval); no images gives NaN."""
    y = np.repeat([0, 1, 2], 4)
    pred = np.array([0, 0, 0, 1, 1, 1, 0, 2, 2, 2, 2, 0])
    point = summarize(confusion_matrix(y, pred, 3), ["a", "b", "c"])["balanced_accuracy"]
    low, high = balanced_accuracy_interval(y, pred)
    assert low < point < high and 0.0 <= low and high <= 1.0
    assert balanced_accuracy_interval(y, pred) == [low, high]
    big_low, big_high = balanced_accuracy_interval(np.tile(y, 100), np.tile(pred, 100))
    assert big_high - big_low < (high - low) / 5 and big_low < point < big_high
    one_class_low, one_class_high = balanced_accuracy_interval(np.tile(y, 5), np.zeros(60, dtype=int))
    assert one_class_low < 1 / 3 < one_class_high and one_class_high - one_class_low > 0.05
    perfect_low, perfect_high = balanced_accuracy_interval(y, y)
    assert 0.6 < perfect_low < perfect_high < 1.0
    assert all(np.isnan(balanced_accuracy_interval(np.array([], dtype=int), np.array([], dtype=int))))
