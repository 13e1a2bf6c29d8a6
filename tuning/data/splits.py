"""Train/validation/test splits that are stratified, seeded and keep near-duplicate groups together.

Every item gets a rank in [0, 1) within its class, drawn per group; a split scheme then cuts the ranks. The
test set is the lowest ranks up to the largest test share any trial could use, so changing the split axis
during a search never moves a test image into training or validation.
"""

from __future__ import annotations

import numpy as np

from tuning.errors import SpaceError

TRAIN, VAL, TEST = 0, 1, 2
#: Validation images of a scheme beyond the validation share every compared scheme has (neither trained on nor
#: scored), so split schemes compared in one study are scored on the same images.
UNUSED = 3


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


def group_ranks(labels: np.ndarray, groups: np.ndarray, *, seed: int) -> np.ndarray:
    """A rank in [0, 1) per item: its group's position in a seeded shuffle of its class's groups.

    Items of one group share a rank, so any cut of the ranks keeps a group on one side.
    """
    ranks = np.zeros(len(labels), dtype=np.float64)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        uniq, inverse, counts = np.unique(groups[idx], return_inverse=True, return_counts=True)
        order = rng.permutation(len(uniq))
        start = np.zeros(len(uniq))
        start[order] = (np.cumsum(counts[order]) - counts[order]) / len(idx)
        ranks[idx] = start[inverse]
    return ranks


def assign_folds(
    labels: np.ndarray, groups: np.ndarray, *, folds: int, fold: int, seed: int, test_fraction: float
) -> np.ndarray:
    """TRAIN/VAL/TEST per item for fold ``fold`` of ``folds`` over everything but the test images (``--cv``).

    The ranks above the test share are cut into ``folds`` equal bands; the fold's band validates and the others
    train. Ranks are drawn per class and per group, so every fold is stratified and keeps groups whole, and the
    test images are those of every split scheme with the same ``test_fraction``.
    """
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} of {folds}")
    ranks = group_ranks(labels, groups, seed=seed)
    width = (1.0 - test_fraction) / folds
    low, high = test_fraction + fold * width, test_fraction + (fold + 1) * width
    codes = np.full(len(labels), TRAIN, dtype=np.int8)
    codes[(ranks >= low - 1e-9) & (ranks < high - 1e-9 if fold < folds - 1 else ranks <= 1.0)] = VAL
    codes[ranks < test_fraction - 1e-9] = TEST
    return codes


def assign_splits(
    labels: np.ndarray, groups: np.ndarray, scheme: str, *, seed: int, test_fraction: float | None = None,
    scored_val: float | None = None,
) -> np.ndarray:
    """TRAIN/VAL/TEST code per item for ``scheme``; ``test_fraction`` overrides the scheme's test share.

    With the override, validation takes the scheme's share right after the test ranks and training the rest.
    ``scored_val`` (at most the scheme's validation share) keeps only the first ranks of that band as VAL and
    marks the rest UNUSED: every scheme's band starts at the same rank, so schemes of one study are then all
    scored on the very same validation images while training on their own shares.
    """
    _, val, test = parse_split(scheme)
    test = test if test_fraction is None else test_fraction
    ranks = group_ranks(labels, groups, seed=seed)
    codes = np.full(len(labels), TRAIN, dtype=np.int8)
    codes[ranks < test + val - 1e-9] = VAL
    if scored_val is not None and scored_val < val:
        codes[(ranks >= test + scored_val - 1e-9) & (codes == VAL)] = UNUSED
    codes[ranks < test - 1e-9] = TEST
    return codes
