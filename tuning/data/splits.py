"""Train/validation/test splits that are stratified group splits: seeded, and no group on two sides.

A group is everything that must stay together: a near-duplicate group (dedup) merged with a source group (a
show, a person, a session: ``tuning data import --group-by``) by ``union_groups``. Frames of one show on both
sides of a split let a model score on memory, not on the task (7 points of test accuracy in the case that made
us write this). Groups may hold several classes (one person, many emotions); they are then still kept whole.

Groups are placed largest first (a seeded jitter orders groups of similar size), each on the side where it
brings the per-class counts closest to the shares asked, then single groups are moved while that helps. The
test side is chosen first from the test share alone, so changing the split axis during a search (with the
test share held) never moves a test image into training or validation; the scored validation images are
chosen next from their share alone, so every scheme of a study is scored on the same ones; ``--cv`` folds cut
what is left after the test side the same way, one fold at a time. ``split_summary`` says how far the
class shares drifted from the shares asked: with large groups they cannot be exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tuning.errors import DataError, SpaceError

TRAIN, VAL, TEST = 0, 1, 2
#: Bumped whenever the same images, groups and seed would be split differently: a study keeps the version it
#: started with, and resuming it under another is refused (its trials would be scored on other images).
#: 1: per-group ranks; 2: stratified group placement balanced by items.
SPLIT_VERSION = 2
#: Validation images of a scheme beyond the validation share every compared scheme has (neither trained on nor
#: scored), so split schemes compared in one study are scored on the same images.
UNUSED = 3
SPLIT_NAMES = ("train", "val", "test")
#: A group is one whole unit, so a class needs one group per split at least.
MIN_GROUPS = len(SPLIT_NAMES)


def parse_split(scheme: str, *, where: str = "split") -> tuple[float, float, float]:
    """``"70/15/15"`` -> (0.70, 0.15, 0.15); three positive whole percentages that sum to 100."""
    parts = scheme.split("/")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 3 or min(numbers) <= 0 or sum(numbers) != 100:
        raise SpaceError(
            f"{where}: {scheme!r} is not a split; write train/val/test percentages summing to 100, e.g. 70/15/15"
        )
    return numbers[0] / 100, numbers[1] / 100, numbers[2] / 100


def split_shares(scheme: str, *, test_fraction: float | None = None) -> tuple[float, float, float]:
    """(train, val, test) shares asked for: the scheme's, with ``test_fraction`` replacing its test share and
    training taking what is left after validation."""
    _, val, test = parse_split(scheme)
    test = test if test_fraction is None else float(test_fraction)
    train = 1.0 - val - test
    if not 0 < test < 1 or train <= 1e-9:
        raise SpaceError(f"split {scheme}: a test share of {test:g} leaves no training share; use a smaller one")
    return train, val, test


def union_groups(*keys: np.ndarray) -> np.ndarray:
    """One group id per item: items sharing a non-empty value in any of ``keys`` are one group (transitively).

    ``union_groups(near_duplicate_group, source_group)`` keeps together every show and every near-duplicate
    set, and anything the two chain together (a frame of show A that is a near copy of a frame of show B joins
    A and B). The id is the smallest first-key value of the group, so it does not depend on the item order.
    """
    if not keys:
        raise ValueError("union_groups needs at least one key")
    n = len(keys[0])
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for key in keys:
        first: dict[str, int] = {}
        for i, value in enumerate(key.tolist()):
            if value is None or str(value) == "":
                continue
            j = first.setdefault(str(value), i)
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    names: dict[int, str] = {}
    firsts = [str(v) if str(v) else f"#{i}" for i, v in enumerate(keys[0].tolist())]
    for i in range(n):
        root = find(i)
        names[root] = min(names.get(root, firsts[i]), firsts[i])
    return np.array([names[find(i)] for i in range(n)], dtype=object)


def _class_counts(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group index per item, class values, groups x classes count matrix)."""
    _, gidx = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    values, lidx = np.unique(labels, return_inverse=True)
    counts = np.zeros((int(gidx.max()) + 1 if len(gidx) else 0, len(values)), dtype=np.int64)
    np.add.at(counts, (gidx, lidx), 1)
    return gidx, values, counts


def check_groups(labels: np.ndarray, groups: np.ndarray, *, classes: Sequence[str] | None = None) -> None:
    """Refuse a class with fewer groups than splits: one of train, val, test would lack it whatever the seed."""
    _, values, counts = _class_counts(labels, groups)
    for k, value in enumerate(values.tolist()):
        n = int((counts[:, k] > 0).sum())
        if n < MIN_GROUPS:
            name = classes[int(value)] if classes is not None else str(value)
            raise DataError(
                f"class '{name}' has {n} image group(s) (an image with its near-duplicates, or a --group-by group), "
                f"fewer than the {MIN_GROUPS} splits (train, val, test) need, since a group stays on one side; add "
                f"images to raw/{name}/ (from more shows, people or sessions when grouped), or group more finely "
                "('tuning data prepare DATASET --group-by ...')"
            )


def _place(counts: np.ndarray, order: np.ndarray, share: float, *, need_a: int, need_b: int) -> np.ndarray:
    """True per group for side A (``share`` of every class), False for side B (the rest).

    Seeds first: each class, fewest groups first, gets ``need_a`` of its smallest free groups on A and
    ``need_b`` on B, so every class with enough groups is on every side. Then the free groups, in ``order``,
    go to A when that narrows the squared gap to A's targets (relative to the class size) without taking a class
    past its target (first fit, largest first); then groups move one at a time while a move narrows the gap
    and keeps the seeds' guarantee.
    """
    g, k = counts.shape
    total = counts.sum(axis=0).astype(np.float64)
    weight = 1.0 / np.maximum(total, 1.0)
    target_a = share * total
    side = np.full(g, -1, dtype=np.int8)  # 1: A, 0: B
    rank = np.empty(g, dtype=np.int64)
    rank[order] = np.arange(g)
    present = counts > 0
    sizes = counts.sum(axis=1)
    for c in np.argsort(present.sum(axis=0), kind="stable"):
        mine = np.flatnonzero(present[:, c])
        mine = mine[np.lexsort((rank[mine], sizes[mine]))]  # smallest first, ties by the seeded order
        for want, need in ((1, need_a), (0, need_b)):
            have = int(np.sum(side[mine] == want))
            for gi in mine:
                if have >= need:
                    break
                if side[gi] == -1:
                    side[gi] = want
                    have += 1
    a = counts[side == 1].sum(axis=0).astype(np.float64)

    def gain(x: np.ndarray, a_now: np.ndarray, sign: int) -> float:
        """Change of the gap when ``x`` moves onto A (sign 1) or off it (sign -1)."""
        new = a_now + sign * x
        return float(np.sum(weight * ((new - target_a) ** 2 - (a_now - target_a) ** 2)))

    for gi in order:
        if side[gi] != -1:
            continue
        x = counts[gi]
        # A's gap decides alone: once all are placed, B = total - A misses its target by as much as A does.
        # First fit: no class past its target, so a large group early never leaves A overfull for good.
        if gain(x, a, 1) < 0 and np.all(a + x <= target_a + 1e-9):
            side[gi] = 1
            a += x
        else:
            side[gi] = 0
    groups_on = {1: (present & (side == 1)[:, None]).sum(axis=0), 0: (present & (side == 0)[:, None]).sum(axis=0)}
    needs = {1: need_a, 0: need_b}
    guaranteed = present.sum(axis=0) >= need_a + need_b
    for _ in range(3):
        moved = False
        for gi in order:
            x = counts[gi]
            here = int(side[gi])
            delta = gain(x, a, -1 if here == 1 else 1)
            if delta >= -1e-12:
                continue
            mine = present[gi]
            if np.any(mine & guaranteed & (groups_on[here] <= needs[here])):
                continue  # the move would take a class off this side below what the seeds guaranteed
            side[gi] = 1 - here
            groups_on[here] = groups_on[here] - mine
            groups_on[1 - here] = groups_on[1 - here] + mine
            a = a - x if here == 1 else a + x
            moved = True
        if not moved:
            break
    return side == 1


def _first_sides(labels: np.ndarray, groups: np.ndarray, *, seed: int, test: float,
                 classes: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(group index per item, groups x classes counts, the seeded placing order, test side per group).

    Everything that follows (validation, unused, folds) is placed among the groups left after the test side,
    which depends on the test share and the seed alone.
    """
    check_groups(labels, groups, classes=classes)
    gidx, _, counts = _class_counts(labels, groups)
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(0.75, 1.25, len(counts))
    order = np.lexsort((rng.permutation(len(counts)), -counts.sum(axis=1) * jitter))
    return gidx, counts, order, _place(counts, order, test, need_a=1, need_b=2)


def _among(counts: np.ndarray, order: np.ndarray, free: np.ndarray, share: float, *, need_a: int,
           need_b: int) -> np.ndarray:
    """``_place`` among the groups ``free`` (bool per group) only, in the same order; ``share`` of the free."""
    idx = np.flatnonzero(free)
    sub_order = np.argsort(np.argsort(order)[idx], kind="stable")
    side = np.zeros(len(counts), dtype=bool)
    if len(idx):
        side[idx] = _place(counts[idx], sub_order, share, need_a=need_a, need_b=need_b)
    return side


def assign_splits(
    labels: np.ndarray, groups: np.ndarray, scheme: str, *, seed: int, test_fraction: float | None = None,
    scored_val: float | None = None, classes: Sequence[str] | None = None,
) -> np.ndarray:
    """TRAIN/VAL/TEST (/UNUSED) code per item for ``scheme``; ``test_fraction`` overrides its test share.

    Every group lands on one side; each class's shares come as close to the asked ones as its groups allow.
    With the override, validation takes the scheme's share and training the rest. ``scored_val`` (at most the
    scheme's validation share) keeps only that share as VAL, chosen from it alone, and marks the rest of the
    scheme's validation share UNUSED: schemes of one study are then scored on the very same validation images
    while training on their own shares. ``classes`` names the label values in the error for a class with
    fewer than three groups.
    """
    _, val, test = split_shares(scheme, test_fraction=test_fraction)
    labels = np.asarray(labels)
    codes = np.full(len(labels), TRAIN, dtype=np.int8)
    if not len(labels):
        return codes
    gidx, counts, order, is_test = _first_sides(labels, groups, seed=seed, test=test, classes=classes)
    scored = val if scored_val is None or scored_val >= val else float(scored_val)
    is_val = _among(counts, order, ~is_test, scored / (1.0 - test), need_a=1, need_b=1)
    is_unused = np.zeros(len(counts), dtype=bool)
    if scored < val:
        is_unused = _among(counts, order, ~is_test & ~is_val, (val - scored) / (1.0 - test - scored),
                           need_a=0, need_b=1)
    codes[is_unused[gidx]] = UNUSED
    codes[is_val[gidx]] = VAL
    codes[is_test[gidx]] = TEST
    return codes


def assign_folds(
    labels: np.ndarray, groups: np.ndarray, *, folds: int, fold: int, seed: int, test_fraction: float,
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """TRAIN/VAL/TEST per item for fold ``fold`` of ``folds`` over everything but the test images (``--cv``).

    The test side is ``assign_splits``'s for the same ``test_fraction`` and seed; the groups left are cut into
    ``folds`` stratified parts of equal item counts (fold k takes 1/(folds-k) of what folds before it left),
    groups whole. The fold's part validates and the others train.
    """
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} of {folds}")
    labels = np.asarray(labels)
    codes = np.full(len(labels), TRAIN, dtype=np.int8)
    if not len(labels):
        return codes
    gidx, counts, order, is_test = _first_sides(labels, groups, seed=seed, test=float(test_fraction),
                                                classes=classes)
    free = ~is_test
    mine = free.copy()
    for k in range(fold + 1):
        if k == folds - 1:
            mine = free
            break
        mine = _among(counts, order, free, 1.0 / (folds - k), need_a=1, need_b=folds - k - 1)
        free = free & ~mine
    codes[mine[gidx]] = VAL
    codes[is_test[gidx]] = TEST
    return codes


def split_drift(labels: np.ndarray, codes: np.ndarray, shares: Sequence[float]) -> dict[Any, dict[str, float]]:
    """Per class value and split: the share of the class's items achieved minus the share asked."""
    labels = np.asarray(labels)
    out: dict[Any, dict[str, float]] = {}
    for value in np.unique(labels).tolist():
        mine = codes[labels == value]
        out[value] = {name: float(np.mean(mine == code)) - float(share)
                      for name, code, share in zip(SPLIT_NAMES, (TRAIN, VAL, TEST), shares)}
    return out


def split_summary(labels: np.ndarray, groups: np.ndarray, codes: np.ndarray, shares: Sequence[float], *,
                  classes: Sequence[str], source_groups: np.ndarray | None = None) -> dict[str, Any]:
    """What the metrics JSON, the report and the summary say about a split.

    ``group_disjoint``: no group on two sides (measured, not assumed); ``grouped_by``: ``"source"`` when source
    groups (show, person, session) were given, else ``"near-duplicates"`` (then images of one source may sit on
    both sides); ``groups``: groups per split; ``split_drift``: per class and split, share achieved minus asked,
    and ``split_max_drift`` its largest absolute value.
    """
    codes = np.asarray(codes)
    names = np.asarray(groups).astype(str)
    sides: dict[str, set[int]] = {}
    for g, c in zip(names.tolist(), codes.tolist()):
        sides.setdefault(g, set()).add(int(c))
    per_split = {name: len({g for g, s in sides.items() if code in s})
                 for name, code in zip(SPLIT_NAMES, (TRAIN, VAL, TEST))}
    drift = {classes[int(v)]: d for v, d in split_drift(labels, codes, shares).items()}
    grouped = source_groups is not None and any(str(s) for s in np.asarray(source_groups).tolist())
    return {
        "group_disjoint": all(len(s) == 1 for s in sides.values()),
        "grouped_by": "source" if grouped else "near-duplicates",
        "groups": per_split,
        "split_shares": dict(zip(SPLIT_NAMES, (float(s) for s in shares))),
        "split_drift": drift,
        "split_max_drift": max((abs(x) for d in drift.values() for x in d.values()), default=0.0),
    }


def summarize_split(labels: np.ndarray, groups: np.ndarray, scheme: str, *, seed: int,
                    test_fraction: float | None, classes: Sequence[str], scored_val: float | None = None,
                    source_groups: np.ndarray | None = None) -> dict[str, Any]:
    """``split_summary`` of the split ``assign_splits`` makes: what the final evaluation records.

    With ``scored_val`` below the scheme's validation share, validation is the scored share (the UNUSED
    images are on no side of the three, and the shares asked say so)."""
    codes = assign_splits(labels, groups, scheme, seed=seed, test_fraction=test_fraction, scored_val=scored_val,
                          classes=classes)
    train, val, test = split_shares(scheme, test_fraction=test_fraction)
    if scored_val is not None and scored_val < val:
        val = float(scored_val)
    return split_summary(labels, groups, codes, (train, val, test), classes=classes, source_groups=source_groups)
