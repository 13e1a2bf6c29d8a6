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
    on its own share, but only a ``scored_val`` share of validation images, chosen from that share alone, is
    scored."""
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


# ----- group splits ----------------------------------------------------------------------------------------
from tuning.data.splits import SPLIT_NAMES, split_shares, split_summary, union_groups  # noqa: E402
from tuning.errors import DataError  # noqa: E402


def _random_layout(rng: np.random.Generator, *, mixed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Random classes, group counts and heavy-tailed group sizes; ``mixed`` lets a group span classes."""
    labels, groups = [], []
    n_classes = int(rng.integers(2, 6))
    for c in range(n_classes):
        for g in range(int(rng.integers(1, 40))):
            size = int(min(rng.pareto(1.2) * 3 + 1, 200))
            labels += [c] * size
            name = f"g{g}" if mixed and rng.random() < 0.5 else f"c{c}g{g}"  # shared names: one person, two classes
            groups += [name] * size
    return np.array(labels), np.array(groups, dtype=object)


def _measured_drift(labels: np.ndarray, codes: np.ndarray, shares: tuple[float, float, float]) -> float:
    worst = 0.0
    for c in np.unique(labels):
        mine = codes[labels == c]
        for code, share in zip((TRAIN, VAL, TEST), shares):
            worst = max(worst, abs(np.sum(mine == code) / len(mine) - share))
    return worst


@pytest.mark.parametrize("mixed", [False, True])
def test_group_split_properties_over_many_random_layouts(mixed: bool) -> None:
    """No group on two sides, every class in every split when it has >= 3 groups (single-class groups: it
    cannot always hold when groups span classes), and the drift reported is the drift measured."""
    rng = np.random.default_rng(12)
    tried = 0
    for case in range(300):
        labels, groups = _random_layout(rng, mixed=mixed)
        scheme = ["70/15/15", "80/10/10", "60/20/20"][case % 3]
        few = [c for c in np.unique(labels) if len(np.unique(groups[labels == c])) < 3]
        if few:
            with pytest.raises(DataError, match=r"has \d image group\(s\) .*, fewer than the 3 splits"):
                assign_splits(labels, groups, scheme, seed=case)
            continue
        tried += 1
        codes = assign_splits(labels, groups, scheme, seed=case)
        for g in np.unique(groups):
            assert len(set(codes[groups == g].tolist())) == 1, (case, g)
        if not mixed:
            for c in np.unique(labels):
                assert set(codes[labels == c].tolist()) == {TRAIN, VAL, TEST}, (case, c)
        shares = split_shares(scheme)
        summary = split_summary(labels, groups, codes, shares, classes=[f"k{i}" for i in range(10)])
        assert summary["group_disjoint"] is True
        assert summary["split_max_drift"] == pytest.approx(_measured_drift(labels, codes, shares))
        for c in np.unique(labels):
            for name, code, share in zip(SPLIT_NAMES, (TRAIN, VAL, TEST), shares):
                got = summary["split_drift"][f"k{c}"][name]
                assert got == pytest.approx(np.mean(codes[labels == c] == code) - share)
        assert summary["groups"] == {name: len(np.unique(groups[codes == code]))
                                     for name, code in zip(SPLIT_NAMES, (TRAIN, VAL, TEST))}
    assert tried > 100


def test_large_groups_are_balanced_by_items_not_by_group_count() -> None:
    """Shows of very different sizes: the test split gets about 15% of each class's frames, not 15% of its
    shows (a random pick of shows would put 1 or 3 of the largest in test and miss by 20 points)."""
    rng = np.random.default_rng(0)
    labels, groups = [], []
    for c in range(3):
        sizes = [400, 300, 200, 150, 100, 80, 60, 50, 40, 30, 20, 20, 10, 10, 5, 5]
        for g, size in enumerate(sizes):
            labels += [c] * size
            groups += [f"show{c}-{g}"] * size
    labels_a, groups_a = np.array(labels), np.array(groups, dtype=object)
    for seed in range(10):
        codes = assign_splits(labels_a, groups_a, "70/15/15", seed=seed)
        drift = _measured_drift(labels_a, codes, (0.7, 0.15, 0.15))
        assert drift < 0.02, (seed, drift)
    del rng


def test_a_class_with_fewer_groups_than_splits_is_named_with_its_count() -> None:
    labels = np.array([0] * 10 + [1] * 10)
    groups = np.array(["a"] * 5 + ["b"] * 5 + [f"s{i}" for i in range(10)], dtype=object)
    with pytest.raises(DataError) as info:
        assign_splits(labels, groups, "70/15/15", seed=0, classes=["Drama", "Comedy"])
    assert str(info.value).startswith("class 'Drama' has 2 image group(s) (an image with its near-duplicates, or a "
                                      "--group-by group), fewer than the 3 splits (train, val, test) need")
    assert "raw/Drama/" in str(info.value) and "--group-by" in str(info.value)


def test_union_groups_chains_near_duplicates_and_source_groups() -> None:
    near = np.array(["p1", "p2", "p3", "p4", "p5"], dtype=object)
    near[3] = "p2"  # p4 is a near copy of p2
    source = np.array(["showA", "showB", "showA", "", ""], dtype=object)
    got = union_groups(near, source)
    assert got[0] == got[2]  # one show
    assert got[1] == got[3]  # a near copy joins its original's group
    assert len({got[0], got[1], got[4]}) == 3
    assert union_groups(near[::-1], source[::-1])[::-1].tolist() == got.tolist()  # order does not name groups


def test_a_test_share_that_leaves_no_training_is_refused() -> None:
    with pytest.raises(SpaceError, match="leaves no training share"):
        split_shares("70/15/15", test_fraction=0.9)


def test_the_summary_of_a_split_with_unused_validation_images_asks_for_the_scored_share() -> None:
    from tuning.data.splits import UNUSED, summarize_split

    labels = np.repeat([0, 1], 300)
    groups = np.array([f"g{i // 3}" for i in range(600)], dtype=object)
    s = summarize_split(labels, groups, "60/20/20", seed=0, test_fraction=0.2, scored_val=0.1, classes=["a", "b"])
    codes = assign_splits(labels, groups, "60/20/20", seed=0, test_fraction=0.2, scored_val=0.1)
    assert (codes == UNUSED).sum() > 0
    assert s["split_shares"] == {"train": pytest.approx(0.6), "val": 0.1, "test": 0.2}
    assert s["split_drift"]["a"]["val"] == pytest.approx(np.mean(codes[labels == 0] == VAL) - 0.1)
    assert s["group_disjoint"] is True
