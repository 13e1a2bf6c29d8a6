from __future__ import annotations

import numpy as np
import pytest

from tuning.data.splits import TEST, TRAIN, VAL, assign_splits, parse_split
from tuning.errors import SpaceError


def _labels_groups(n_per_class: int = 200, classes: int = 3, dup_every: int = 7) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(classes), n_per_class)
    groups = np.array([f"g{i}" for i in range(len(labels))], dtype=object)
    for i in range(0, len(labels) - 2, dup_every):  # every 7th item has two copies beside it
        if labels[i] == labels[i + 2]:
            groups[i + 1] = groups[i + 2] = groups[i]
    return labels, groups


@pytest.mark.parametrize("scheme", ["70/15/15", "80/10/10", "60/20/20", "50/25/25"])
def test_splits_are_disjoint_cover_everything_and_are_stratified(scheme: str) -> None:
    labels, groups = _labels_groups()
    codes = assign_splits(labels, groups, scheme, seed=3)
    assert set(np.unique(codes)) == {TRAIN, VAL, TEST}
    assert len(codes) == len(labels)  # one code per item: disjoint and complete by construction
    shares = parse_split(scheme)
    for label in np.unique(labels):
        mine = codes[labels == label]
        for code, share in zip((TRAIN, VAL, TEST), shares):
            assert abs((mine == code).mean() - share) < 0.03, (scheme, label, code)


def test_duplicate_groups_never_straddle_splits() -> None:
    labels, groups = _labels_groups(dup_every=3)
    for seed in range(5):
        codes = assign_splits(labels, groups, "70/15/15", seed=seed)
        for g in np.unique(groups):
            assert len(set(codes[groups == g])) == 1


def test_seed_fixes_the_split_and_another_seed_changes_it() -> None:
    labels, groups = _labels_groups()
    a = assign_splits(labels, groups, "70/15/15", seed=1)
    assert np.array_equal(a, assign_splits(labels, groups, "70/15/15", seed=1))
    assert not np.array_equal(a, assign_splits(labels, groups, "70/15/15", seed=2))


def test_a_fixed_test_share_keeps_the_test_set_identical_across_schemes() -> None:
    """When the split is searched, no scheme may move a test image into training or validation."""
    labels, groups = _labels_groups()
    tests = [assign_splits(labels, groups, s, seed=0, test_fraction=0.2) == TEST
             for s in ("70/15/15", "80/10/10", "60/20/20")]
    assert all(np.array_equal(tests[0], t) for t in tests)
    assert abs(tests[0].mean() - 0.2) < 0.02
    codes = assign_splits(labels, groups, "80/10/10", seed=0, test_fraction=0.2)
    assert abs((codes == VAL).mean() - 0.10) < 0.02


@pytest.mark.parametrize("bad", ["70/30", "70/20/20", "a/b/c", "100/0/0", ""])
def test_bad_split_scheme_says_how_to_write_one(bad: str) -> None:
    with pytest.raises(SpaceError, match="train/val/test percentages summing to 100"):
        parse_split(bad)


def test_scored_validation_images_are_the_same_for_every_scheme() -> None:
    """The staged study's split stage compares schemes on one set of validation images: each scheme trains
    on its own share, but only the first ``scored_val`` ranks of its validation band are scored."""
    from tuning.data.splits import UNUSED

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 600)
    groups = labels * 1000 + rng.integers(0, 130, 600)  # near-duplicate groups live within a class
    schemes = ("70/15/15", "80/10/10", "60/20/20")
    codes = {s: assign_splits(labels, groups, s, seed=0, test_fraction=0.2, scored_val=0.10) for s in schemes}
    val = {s: set(np.flatnonzero(c == VAL)) for s, c in codes.items()}
    assert val["70/15/15"] == val["80/10/10"] == val["60/20/20"] and 40 < len(val["80/10/10"]) < 80
    assert len({frozenset(np.flatnonzero(c == TEST)) for c in codes.values()}) == 1
    train = {s: int((c == TRAIN).sum()) for s, c in codes.items()}
    assert train["60/20/20"] < train["70/15/15"] < train["80/10/10"]  # each still trains on its own share
    assert not (codes["80/10/10"] == UNUSED).any() and (codes["60/20/20"] == UNUSED).sum() > 0
    for c in codes.values():  # no near-duplicate group straddles the scored and the unused images
        for g in np.unique(groups):
            assert len(set(c[groups == g])) == 1


def test_cv_folds_partition_train_and_val_stratified_with_groups_whole_and_the_test_fixed() -> None:
    from tuning.data.splits import assign_folds

    rng = np.random.default_rng(11)
    labels = np.repeat([0, 1, 2], [300, 200, 100])
    groups = labels * 1000 + rng.integers(0, 90, 600)
    test = assign_splits(labels, groups, "70/15/15", seed=4, test_fraction=0.2) == TEST
    folds = [assign_folds(labels, groups, folds=5, fold=k, seed=4, test_fraction=0.2) for k in range(5)]
    for codes in folds:
        assert np.array_equal(codes == TEST, test)  # the same test images as the fixed split
        for g in np.unique(groups):
            assert len(set(codes[groups == g])) == 1
    in_val = np.sum([codes == VAL for codes in folds], axis=0)
    assert np.array_equal(in_val, (~test).astype(int))  # every train+val image validates exactly once
    for label, n in ((0, 300), (1, 200), (2, 100)):
        shares = [np.sum((codes == VAL) & (labels == label)) for codes in folds]
        assert max(shares) - min(shares) <= 3 * np.bincount(groups[labels == label]).max()
        assert abs(sum(shares) - 0.8 * n) <= np.bincount(groups[labels == label]).max()
    with pytest.raises(ValueError, match="fold 5 of 5"):
        assign_folds(labels, groups, folds=5, fold=5, seed=4, test_fraction=0.2)
