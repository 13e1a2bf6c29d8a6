"""Group byte-identical and near-duplicate images in the manifest, so splits never leak one picture across them.

A near duplicate is what a person would call the same picture: resized, re-compressed, converted, lightly cropped,
brightened, watermarked or mirrored. Each image gets a 64-bit perceptual hash of itself and of its mirror image;
two images are duplicates when their hashes differ in at most ``threshold`` bits, or one's hash and the other's
mirror hash in at most ``threshold - MIRROR_MARGIN`` bits.
Cropped copies (up to about 10% off any side, centred or not) are found through window hashes (phash only): a
pair is a candidate when one image's hash is within ``CROP_THRESHOLD`` bits of the hash of a sub-window of the
other (``tuning.data.hashing.WINDOWS``), and is joined only when a cheap geometric check on small grey decodes
agrees (the best normalised cross-correlation over crop boxes of the same aspect, at least ``CROP_SIMILARITY``).
The check costs a few milliseconds per candidate and candidates are rare (10 among the 3.9 million pairs of
2,777 distinct real posters), so the window hashes buy recall without costing precision.
Duplicates form groups transitively (connected components); per group the largest image is kept and the others
get ``duplicate-of:<kept path>``. Every row's ``group`` is its kept image's path, which is what splits and
balancing keep together. Nothing is deleted, and a person's ``rejected`` or an ``unreadable:`` verdict is never
overwritten.

The pair search is multi-index hashing (Norouzi et al.): the hash is cut into ``m`` bands; by the pigeonhole
principle two hashes within distance K agree within ``K // m`` bits on at least one band, so only hashes whose
band values are that close are compared in full. With ``m = K + 1`` this is exact band equality; a smaller
``m`` with a few probed bit flips is cheaper for 64-bit hashes and K near 10, so ``m`` is chosen by a cost
estimate. Everything is numpy over uint64 arrays: 100,000 hashes take seconds, not the hours of a double loop.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.data.hashing import WINDOWS, crop_similarity, grey_thumbnail, hash_files, hash_function, one_blas_thread
from tuning.data.manifest import build_manifest, check_writable, choose_kept, write_manifest
from tuning.errors import DataError

#: Hamming distance (bits of 64; colorhash has 42) at or below which two images are the same picture. Measured
#: on edited copies of real posters (``benchmarks/data_bench.py``, see BENCHMARKS.md): edits stay below, and
#: different posters above.
DEFAULT_THRESHOLDS = {"phash": 10, "dhash": 10, "ahash": 5, "whash": 5, "colorhash": 0}
#: Mirror matches must be this many bits closer than direct ones (see ``duplicate_pairs``).
MIRROR_MARGIN = 2
#: Bump when hashing changes (decode size, algorithm), so no cached hash from older code is compared with new ones.
#: Version 2 adds the window hashes (phash).
HASH_CACHE_VERSION = 2
#: An image's hash within this many bits of a window hash of another makes the pair a crop candidate: 1,099 of
#: 1,100 crops of up to 10% per side of real posters are, and 2 false pairs among 1,388 posters (calibration half
#: of ``benchmarks/data_bench.py``, see BENCHMARKS.md).
CROP_THRESHOLD = 8
#: A crop candidate is joined when its geometric check scores at least this (normalised cross-correlation).
CROP_SIMILARITY = 0.9
#: Widest band: its bucket table has 2**bits entries.
MAX_BAND_BITS = 22
StageProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DuplicateGroup:
    """One group of two or more images; ``exact`` when all are byte-identical, ``labels`` the classes met."""

    kept: str
    duplicates: tuple[str, ...]
    exact: bool
    labels: tuple[str, ...]


@dataclass
class DedupReport:
    """What dedup found and wrote; ``hashed`` counts images hashed now (the rest came from the hash cache)."""

    dataset: Path
    hash: str
    threshold: int
    mirror: bool
    images: int
    hashed: int
    groups: list[DuplicateGroup]
    unhashable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    mirror_threshold: int | None = None
    crops: bool = False
    crop_checked: int = 0
    crop_joined: int = 0

    @property
    def exact_groups(self) -> int:
        return sum(g.exact for g in self.groups)

    @property
    def near_groups(self) -> int:
        return sum(not g.exact for g in self.groups)

    @property
    def duplicates(self) -> int:
        return sum(len(g.duplicates) for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": str(self.dataset), "hash": self.hash, "threshold": self.threshold, "mirror": self.mirror,
            "mirror_threshold": self.mirror_threshold, "crops": self.crops, "crop_checked": self.crop_checked,
            "crop_joined": self.crop_joined,
            "images": self.images, "hashed": self.hashed, "exact_groups": self.exact_groups,
            "near_groups": self.near_groups, "duplicates": self.duplicates, "seconds": round(self.seconds, 3),
            "groups": [{"kept": g.kept, "duplicates": list(g.duplicates), "exact": g.exact, "labels": list(g.labels)}
                       for g in self.groups],
            "unhashable": [{"path": p, "reason": r} for p, r in self.unhashable],
        }


# ----- pair search ---------------------------------------------------------------------------------------
def _bands(bits: int, m: int) -> list[tuple[int, int]]:
    """(shift, width) of ``m`` near-equal bands covering ``bits`` bits."""
    widths = [bits // m + (i < bits % m) for i in range(m)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(shifts, widths))


def _plan(n_queries: int, n_index: int, threshold: int, bits: int) -> int:
    """The band count with the least estimated work: probes looked up plus candidate pairs verified."""
    fewest = -(-bits // MAX_BAND_BITS)  # more bands than K + 1 is still exact: then some band has no flip
    best, best_cost = fewest, math.inf
    for m in range(fewest, max(threshold + 1, fewest) + 1):
        width = bits // m
        probes = sum(math.comb(bits // m + 1, i) for i in range(threshold // m + 1))
        cost = m * probes * n_queries * (2.5 + n_index / 2.0**width)  # measured: a probe ~2.5 verifications
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def near_pairs(
    queries: np.ndarray, index: np.ndarray | None = None, *, threshold: int, bits: int = 64,
    max_candidates: int = 4_000_000,
) -> np.ndarray:
    """(q, i) rows with ``popcount(queries[q] ^ index[i]) <= threshold``, each pair once.

    Without ``index`` the queries are searched against themselves and only q < i is returned. Work is bounded
    by ``max_candidates`` pairs in memory at a time, whatever the bucket sizes.
    """
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    self_search = index is None
    index = queries if index is None else np.ascontiguousarray(index, dtype=np.uint64)
    found: list[np.ndarray] = []
    if len(queries) == 0 or len(index) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    m = _plan(len(queries), len(index), threshold, bits)
    radius = threshold // m
    for shift, width in _bands(bits, m):
        mask = np.uint64((1 << width) - 1)
        keys = ((index >> np.uint64(shift)) & mask).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        # bucket b holds order[starts[b]:starts[b + 1]]: a direct table, so each probe is two gathers
        starts = np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=1 << width))])
        qkeys = ((queries >> np.uint64(shift)) & mask).astype(np.int64)
        for flips in range(radius + 1):
            for positions in itertools.combinations(range(width), flips):
                look = qkeys ^ sum(1 << p for p in positions)
                found.extend(_verify(queries, index, order, starts[look], starts[look + 1], threshold, self_search,
                                     max_candidates))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    codes = np.unique(pairs[:, 0] * np.int64(len(index)) + pairs[:, 1])
    return np.stack([codes // len(index), codes % len(index)], axis=1)


def _verify(queries: np.ndarray, index: np.ndarray, order: np.ndarray, lo: np.ndarray, hi: np.ndarray,
            threshold: int, self_search: bool, max_candidates: int) -> list[np.ndarray]:
    """Expand the bucket ranges [lo, hi) to candidate pairs, in slices of bounded size, and keep the close ones."""
    counts = hi - lo
    hits = np.flatnonzero(counts)
    if len(hits) == 0:
        return []
    ends = np.cumsum(counts[hits])
    out = []
    start = 0
    while start < len(hits):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + max_candidates, side="right")), start + 1)
        q = hits[start:stop]
        c = counts[q]
        total = int(c.sum())
        qi = np.repeat(q, c)
        offsets = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
        ii = order[np.repeat(lo[q], c) + offsets]
        keep = np.bitwise_count(queries[qi] ^ index[ii]) <= threshold
        if self_search:
            keep &= qi < ii
        out.append(np.stack([qi[keep], ii[keep]], axis=1).astype(np.int64))
        start = stop
    return out


def duplicate_pairs(
    hashes: np.ndarray, mirrored: np.ndarray | None, *, threshold: int, mirror_threshold: int | None = None,
    bits: int = 64,
) -> np.ndarray:
    """(a, b) with a < b for images within ``threshold`` bits, or one within ``mirror_threshold`` of the other's
    mirror image (default ``threshold - MIRROR_MARGIN``).

    Mirror matches get a tighter bound: a mirrored copy lands within 2 bits of the flipped hash, while comparing
    every image with every mirror image doubles the chances for two different, symmetric-looking posters to meet
    by accident (at 10 bits, 4 such pairs among 2,777 real posters; none at 8).
    """
    n = len(hashes)
    pairs = near_pairs(hashes, threshold=threshold, bits=bits)
    if mirrored is None:
        return pairs
    limit = max(0, threshold - MIRROR_MARGIN) if mirror_threshold is None else mirror_threshold
    flips = near_pairs(hashes, mirrored, threshold=limit, bits=bits)
    flips = flips[flips[:, 0] != flips[:, 1]]
    both = np.concatenate([pairs, np.sort(flips, axis=1)])
    codes = np.unique(both[:, 0] * np.int64(n) + both[:, 1])
    return np.stack([codes // n, codes % n], axis=1)


def crop_candidates(hashes: np.ndarray, windows: np.ndarray, *, threshold: int = CROP_THRESHOLD) -> np.ndarray:
    """(a, b) rows with a < b where one image's hash is within ``threshold`` bits of a window hash of the other.

    ``windows`` is (images, windows) uint64. Every image's hash is searched among every window hash, so either
    image of a pair may be the crop (``check_crops`` tries both ways).
    """
    windows = np.ascontiguousarray(windows, dtype=np.uint64)
    if windows.ndim != 2 or len(windows) != len(hashes) or windows.shape[1] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    found = near_pairs(hashes, windows.ravel(), threshold=threshold)
    pairs = np.stack([found[:, 0], found[:, 1] // windows.shape[1]], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    n = np.int64(len(hashes))
    codes = np.unique(np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1]))
    return np.stack([codes // n, codes % n], axis=1)


def check_crops(
    candidates: np.ndarray, paths: list[Path], *, similarity: float = CROP_SIMILARITY,
) -> tuple[np.ndarray, np.ndarray]:
    """(joined pairs, score per candidate): each candidate's ``crop_similarity`` on grey decodes of its files,
    the better of the two ways round (either image may be the crop; the wrong way scores low or -1).

    Each file is decoded once however many candidates it is in; a file that cannot be decoded now (changed since
    it was hashed) scores -1 and joins nothing.
    """
    thumbs: dict[int, np.ndarray | None] = {}

    def thumb(i: int) -> np.ndarray | None:
        if i not in thumbs:
            try:
                thumbs[i] = grey_thumbnail(paths[i])
            except Exception:  # noqa: BLE001 - unreadable now: the pair is simply not joined
                thumbs[i] = None
        return thumbs[i]

    scores = np.full(len(candidates), -1.0)
    with one_blas_thread():
        for k, (i, j) in enumerate(candidates.tolist()):
            a, b = thumb(i), thumb(j)
            if a is not None and b is not None:
                scores[k] = max(crop_similarity(a, b), crop_similarity(b, a))
    return candidates[scores >= similarity], scores


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Component label per node (union-find over the pairs, transitive), by scipy's sparse graph search."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# ----- the manifest step ---------------------------------------------------------------------------------
def _hash_cache(dataset: Path, kind: str) -> Path:
    return dataset / "cache" / f"hashes-{kind}-v{HASH_CACHE_VERSION}.npz"


#: (hash, mirror hash, window hashes): what the cache holds per SHA-256; kinds without windows hold none.
CachedHash = tuple[int, int, np.ndarray]
_NO_WINDOWS = np.zeros(0, dtype=np.uint64)


def _load_hash_cache(path: Path) -> dict[str, CachedHash]:
    """SHA-256 -> (hash, mirror hash, window hashes) from an earlier run; a damaged cache is just recomputed."""
    try:
        with np.load(path) as npz:
            shas, hashes, mirrors, windows = npz["sha256"].tolist(), npz["hash"], npz["mirror"], npz["windows"]
            if windows.ndim != 2 or len(windows) != len(shas):
                return {}
            return {s: (int(h), int(f), w) for s, h, f, w in zip(shas, hashes, mirrors, windows)}
    except (OSError, KeyError, ValueError):
        return {}


def dedup(
    dataset: Path, *, kind: str = "phash", threshold: int | None = None, mirror: bool = True, crops: bool = True,
    workers: int = 2, progress: StageProgress | None = None,
) -> DedupReport:
    """Hash every readable image, group duplicates and write groups and statuses to manifest.csv.

    ``crops`` (phash only; other hashes have no window hashes) also joins cropped copies, see the module's doc.
    """
    started = time.perf_counter()
    dataset = Path(dataset)
    hash_function(kind)
    threshold = DEFAULT_THRESHOLDS[kind] if threshold is None else threshold
    if not 0 <= threshold <= 32:
        raise DataError(f"--threshold must be between 0 and 32 bits, got {threshold}")
    rows = build_manifest(dataset, progress=(lambda i, n: progress("describe", i, n)) if progress else None)
    check_writable(dataset)
    auto = [r for r in rows if r["status"] == "ok" or r["status"].startswith("duplicate-of:")]
    shas = sorted({r["sha256"] for r in auto})
    first_path: dict[str, Path] = {}
    for r in auto:
        first_path.setdefault(r["sha256"], dataset / r["path"])
    cache_file = _hash_cache(dataset, kind)
    cached = _load_hash_cache(cache_file) if cache_file.exists() else {}
    windowed = kind == "phash"  # phash caches always hold window hashes, so --no-crops never leaves a cache short
    todo = [s for s in shas if s not in cached or (windowed and len(cached[s][2]) != len(WINDOWS))]
    results = hash_files([first_path[s] for s in todo], kind, mirror=True, windows=windowed, workers=workers,
                         progress=(lambda i, n: progress("hash", i, n)) if progress else None)
    failed = {}
    for sha, result in zip(todo, results):
        if isinstance(result, str):
            failed[sha] = result
        else:
            cached[sha] = result if len(result) == 3 else (*result, _NO_WINDOWS)
    if todo:
        _save_hash_cache(cache_file, cached)
    unhashable = [(r["path"], failed[r["sha256"]]) for r in auto if r["sha256"] in failed]
    good = [s for s in shas if s not in failed]
    hashes = np.array([cached[s][0] for s in good], dtype=np.uint64)
    flipped = np.array([cached[s][1] for s in good], dtype=np.uint64) if mirror else None
    pairs = duplicate_pairs(hashes, flipped, threshold=threshold)
    comp = components(len(good), pairs)
    crops = crops and windowed
    checked = joined = 0
    if crops and good:
        candidates = crop_candidates(hashes, np.stack([cached[s][2] for s in good]))
        candidates = candidates[comp[candidates[:, 0]] != comp[candidates[:, 1]]]  # already one group: no check
        if len(candidates):
            if progress:
                progress("crops", 0, len(candidates))
            crop_pairs, _ = check_crops(candidates, [first_path[s] for s in good])
            checked, joined = len(candidates), len(crop_pairs)
            if progress:
                progress("crops", checked, checked)
            if joined:
                comp = components(len(good), np.concatenate([pairs, crop_pairs]))
    node_of = {s: i for i, s in enumerate(good)}
    members: dict[object, list[dict[str, str]]] = {}
    for r in auto:
        node = node_of.get(r["sha256"])
        members.setdefault(("c", int(comp[node])) if node is not None else ("s", r["sha256"]), []).append(r)
    groups = []
    for group in members.values():
        kept = choose_kept(group)
        for r in group:
            r["status"] = "ok" if r is kept else f"duplicate-of:{kept['path']}"
            r["group"] = kept["path"]
        if len(group) > 1:
            groups.append(DuplicateGroup(
                kept["path"], tuple(sorted(r["path"] for r in group if r is not kept)),
                len({r["sha256"] for r in group}) == 1, tuple(sorted({r["label"] for r in group}))))
    for r in rows:
        r["group"] = r["group"] or r["path"]
    write_manifest(dataset, rows)
    groups.sort(key=lambda g: g.kept)
    return DedupReport(dataset, kind, threshold, mirror, len(auto), len(todo), groups, unhashable,
                       time.perf_counter() - started, max(0, threshold - MIRROR_MARGIN) if mirror else None,
                       crops, checked, joined)


def _save_hash_cache(path: Path, cached: dict[str, CachedHash]) -> None:
    shas = sorted(cached)
    widths = {len(cached[s][2]) for s in shas}
    width = widths.pop() if len(widths) == 1 else 0  # mixed widths cannot happen within one kind; never stored
    windows = np.array([cached[s][2][:width] for s in shas], dtype=np.uint64).reshape(len(shas), width)
    try:
        with _io.atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, sha256=np.array(shas), hash=np.array([cached[s][0] for s in shas], dtype=np.uint64),
                         mirror=np.array([cached[s][1] for s in shas], dtype=np.uint64), windows=windows)
    except OSError:
        pass  # the cache only saves time; the manifest write right after reports a read-only folder
