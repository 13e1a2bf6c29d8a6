"""Prepare a dataset folder: the manifest brought up to date, then a balanced uint8 cache per image size.

``DIR/cache/<size>px.npz`` holds the arrays every trial loads (see datasets/README.md); the manifest itself is
``tuning/data/manifest.py``'s.
"""

from __future__ import annotations

import struct
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.data.groups import GroupingReport, apply_groups, parse_group_by
from tuning.data.images import load_rgb, unreadable_reason
from tuning.data.manifest import (
    Progress,
    build_manifest,
    check_writable,
    manifest_digest,
    raw_dir,
    read_only_message,
    scan_raw,
    write_manifest,
)
from tuning.data.splits import assign_splits, split_shares, split_summary, union_groups
from tuning.errors import DataError

CACHE_VERSION = 3
#: How ``prepare`` evens out the classes: drop images down to the smallest class, or keep all and weight them.
BALANCE_MODES = ("undersample", "weights")
#: Keep every image and weight the loss (benchmarks/recipes.py, docs/recipes.md: on the posters the default quick
#: search reached test balanced accuracy 0.598 with weights against 0.520 undersampled (621 images), same test
#: images). ``--per-class`` asks for a size per class, so alone it means undersampling.
DEFAULT_BALANCE = "weights"


def balance_mode(balance: str | None, per_class: int | None) -> str:
    """The balancing a preparation uses: the one asked for, else undersample for ``--per-class``, else the default."""
    if balance is not None:
        return balance
    return "undersample" if per_class is not None else DEFAULT_BALANCE
#: A temporary file in cache/ untouched this long belongs to no running prepare (a writer touches its file
#: continuously), so it is what a killed one left.
STALE_TMP_SECONDS = 60
#: What ``np.load`` raises on a truncated, empty or foreign cache file: a reason to rebuild, never a traceback.
BAD_CACHE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


@dataclass(frozen=True)
class Prepared:
    """The balanced arrays of one image size; ``ids`` are manifest paths, ``groups`` what a split keeps together
    (near-duplicate groups merged with source groups), ``source_groups`` the source group alone ("" for none)."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    groups: np.ndarray
    classes: tuple[str, ...]
    size: int
    #: Loss weight per class index (n / (classes * n_class)); all 1.0 after undersampling, so training can
    #: always pass them on.
    class_weights: tuple[float, ...] = ()
    source_groups: np.ndarray | None = None


@dataclass
class PrepareReport:
    """What preparing did: per-class counts before/after balancing and every skipped file with its reason."""

    dataset: Path
    size: int
    available: dict[str, int]
    kept: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cache: Path | None = None
    balance: str = "undersample"
    class_weights: dict[str, float] = field(default_factory=dict)
    #: Things the user asked for that could not be done as asked (a --per-class above a class's size).
    warnings: list[str] = field(default_factory=list)
    #: What ``--group-by`` did, when given.
    grouping: GroupingReport | None = None
    #: ``splits.split_summary`` of ``preview_split`` on the kept images (seed 0), or why it cannot be made.
    split: dict[str, Any] | None = None
    split_error: str = ""
    preview_split: str = "70/15/15"


def _balance(labels: np.ndarray, groups: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of a seeded, group-aware undersample with at most ``per_class`` items per class.

    Whole groups are taken while they fit; when none fits any more (a show of 300 frames, 120 places left),
    the first that did not fit lends a seeded subset of its members, so the class still gets ``per_class``
    items. Part of a group is still one group: it cannot leak across a split.
    """
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        uniq = np.unique(groups[idx])
        taken = 0
        too_big: list[np.ndarray] = []
        for g in rng.permutation(uniq):
            members = idx[groups[idx] == g]
            if taken + len(members) <= per_class:
                chosen.extend(members.tolist())
                taken += len(members)
            else:
                too_big.append(members)
            if taken == per_class:
                break
        if taken < per_class and too_big:
            chosen.extend(rng.choice(too_big[0], per_class - taken, replace=False).tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def cache_path(dataset: Path, size: int) -> Path:
    return Path(dataset) / "cache" / f"{size}px.npz"


def check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise DataError(f"--size must be a positive number of pixels, got {size}")


def remove_stale_tmp(dataset: Path) -> list[Path]:
    """Delete the ``.*.tmp`` files a killed prepare (or manifest write) left in the dataset and its cache/.

    Only files older than ``STALE_TMP_SECONDS`` go: a prepare running beside this one is still writing its own.
    """
    now = time.time()
    removed = []
    for folder in (Path(dataset), Path(dataset) / "cache"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            try:
                if tmp.is_file() and not tmp.is_symlink() and now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()
                    removed.append(tmp)
            except OSError:
                continue  # gone already, or not ours to delete: the cache itself is unaffected
    return removed


def prepare(
    dataset: Path, *, size: int, seed: int = 0, per_class: int | None = None, balance: str | None = None,
    group_by: str | None = None, preview_split: str = "70/15/15", progress: Progress | None = None,
    resize_progress: Progress | None = None,
) -> PrepareReport:
    """Manifest, balance and cache ``size`` px arrays. Skipped files are counted with their reason.

    ``balance="undersample"`` drops images (whole duplicate groups at a time) down to the smallest class or
    ``per_class``; ``"weights"`` keeps every usable image and stores per-class loss weights instead, which
    wastes nothing when one class is much smaller than the others. ``group_by`` sets (or with ``"none"``
    clears) every file's source group in the manifest first, without re-importing. The report previews
    ``preview_split`` on the kept images: groups per split and how far the class shares drift.
    ``progress`` follows the manifest's description of new files, ``resize_progress`` the decoding and resizing.
    """
    dataset = Path(dataset)
    check_size(size)
    rule = parse_group_by(group_by) if group_by is not None else None
    split_shares(preview_split)
    balance = balance_mode(balance, per_class)
    if balance not in BALANCE_MODES:
        raise DataError(f"--balance: unknown mode '{balance}'; known: {', '.join(BALANCE_MODES)}")
    if balance == "weights" and per_class is not None:
        raise DataError("--per-class only applies to --balance undersample; drop it or use undersample")
    if per_class is not None and per_class < 1:
        raise DataError(f"--per-class must be >= 1, got {per_class}")
    raw_dir(dataset)
    check_writable(dataset)
    remove_stale_tmp(dataset)
    scan = scan_raw(dataset)
    rows = build_manifest(dataset, progress=progress, scan=scan)
    grouping = None
    if rule is not None:
        before = [r["source_group"] for r in rows]
        grouping = apply_groups(rows, rule)
        if before != [r["source_group"] for r in rows]:
            write_manifest(dataset, rows)
    classes = tuple(scan.classes)
    if len(classes) < 2:
        raise DataError(f"{dataset}: found {len(classes)} class folder(s) under raw/; a classifier needs at least "
                        f"two (put each class's images in raw/<class>/)")
    pixels: dict[str, np.ndarray] = {}
    while True:  # once, unless a file fails to decode although its manifest row says ok (see _decode)
        usable = [r for r in rows if r["status"] == "ok"]
        available = {c: sum(r["label"] == c for r in usable) for c in classes}
        empty = [c for c, n in available.items() if n == 0]
        if empty:
            raise DataError(f"{dataset}: class '{empty[0]}' has no readable image; add images or remove "
                            f"raw/{empty[0]}/")
        labels = np.array([classes.index(r["label"]) for r in usable])
        sources = np.array([r["source_group"] for r in usable], dtype=object)
        groups = union_groups(np.array([r["group"] for r in usable], dtype=object), sources).astype(str)
        if balance == "weights":
            target = 0
            keep = np.arange(len(usable), dtype=np.int64)
            weights = np.array([len(usable) / (len(classes) * available[c]) for c in classes])
        else:
            target = min(available.values()) if per_class is None else per_class
            keep = _balance(labels, groups, target, seed)
            weights = np.ones(len(classes))
        if not _decode(dataset, rows, [usable[i]["path"] for i in keep], size, pixels, progress=resize_progress):
            break
    skipped = scan.skipped + [(r["path"], r["status"]) for r in rows if r["status"] != "ok"]
    warnings = [f"--per-class {per_class} is above the {available[c]} usable image(s) of class '{c}': all of them "
                f"are kept, so the classes are not balanced" for c in classes
                if per_class is not None and available[c] < per_class]
    ungrouped = int(sum(not s for s in sources[keep]))
    if ungrouped and ungrouped < len(keep):
        warnings.append(f"{ungrouped} kept image(s) have no source group while the others have one (added after "
                        "--group-by, or the rule missed them): each is a group of its own; rerun with --group-by")
    x = np.stack([pixels[usable[i]["path"]] for i in keep])
    ids = np.array([usable[i]["path"] for i in keep])
    out = cache_path(dataset, size)
    try:
        with _io.atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x, y=labels[keep].astype(np.int16), ids=ids, groups=groups[keep],
                         source_groups=sources[keep].astype(str),
                         classes=np.array(classes), class_weights=weights.astype(np.float64),
                         meta=np.array([CACHE_VERSION, seed, target, size, BALANCE_MODES.index(balance),
                                        per_class or 0]),
                         manifest=np.array(manifest_digest(dataset)))
    except OSError as exc:
        raise DataError(read_only_message(dataset, f"{out} cannot be saved ({exc.strerror or exc})")) from None
    kept = {c: int((labels[keep] == i).sum()) for i, c in enumerate(classes)}
    report = PrepareReport(dataset, size, available, kept, skipped, out, balance,
                           {c: round(float(w), 6) for c, w in zip(classes, weights)}, warnings, grouping,
                           preview_split=preview_split)
    try:
        codes = assign_splits(labels[keep], groups[keep], preview_split, seed=0, classes=classes)
        report.split = split_summary(labels[keep], groups[keep], codes, split_shares(preview_split),
                                     classes=classes, source_groups=sources[keep])
    except DataError as exc:
        report.split_error = str(exc)
    return report


def _decode(dataset: Path, rows: list[dict[str, str]], paths: list[str], size: int,
            pixels: dict[str, np.ndarray], *, progress: Progress | None = None) -> bool:
    """Decode ``paths`` into ``pixels``; a file that fails is marked ``unreadable:`` in the manifest.

    The manifest re-describes files whose size or time changed, but a file replaced with both kept (``cp -p``,
    a restored backup) still reaches here with an ``ok`` row. Its failure is then recorded like any unreadable
    file, naming it, and the caller balances again without it. Returns whether any file failed.
    """
    todo = [p for p in paths if p not in pixels]

    def load(rel: str) -> np.ndarray | str:
        try:
            return load_rgb(dataset / rel, size)
        except Exception as exc:  # noqa: BLE001 - any decoder failure skips the file, never stops the run
            return unreadable_reason(exc)

    results: dict[str, np.ndarray | str] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for rel, loaded in zip(todo, pool.map(load, todo)):
            results[rel] = loaded
            if progress:
                progress(len(results), len(todo))
    failed = {rel: why for rel, why in results.items() if isinstance(why, str)}
    pixels.update({rel: arr for rel, arr in results.items() if not isinstance(arr, str)})
    for row in rows:
        if row["path"] in failed:
            row["status"] = f"unreadable:{failed[row['path']]}"
    if failed:
        write_manifest(dataset, rows)
    return bool(failed)


def load_prepared(
    dataset: Path, size: int, *, seed: int | None = None, per_class: int | None = None, balance: str | None = None
) -> Prepared:
    """The cached arrays for ``size``, (re)built when missing or made from another manifest or setting.

    Without settings it keeps the user's: those of the newest cache in the dataset (so a search honours
    ``tuning data prepare --balance weights --seed 3``, and another image size is prepared the same way), else
    seed 0, every image kept with class weights (``DEFAULT_BALANCE``).
    """
    dataset = Path(dataset)
    raw_dir(dataset)
    check_size(size)
    if seed is None and per_class is None and balance is None:
        seed, per_class, balance = cache_settings(dataset) or (0, None, DEFAULT_BALANCE)
    seed = 0 if seed is None else seed
    balance = balance_mode(balance, per_class)
    path = cache_path(dataset, size)
    if not (path.exists() and (dataset / "manifest.csv").exists()
            and _is_fresh(dataset, path, seed, per_class, balance)):
        prepare(dataset, size=size, seed=seed, per_class=per_class, balance=balance)
    try:
        return _read_cache(path, size)
    except BAD_CACHE:  # whole at its end (np.load read the zip directory) but damaged inside: make it again
        prepare(dataset, size=size, seed=seed, per_class=per_class, balance=balance)
        return _read_cache(path, size)


def _read_cache(path: Path, size: int) -> Prepared:
    """The cache's arrays; the images memory-mapped (read-only) where the file stores them uncompressed, as
    ``prepare`` writes them, so a trial's memory holds the batches it reads, not the whole dataset."""
    mapped = _mapped_member(path, "x")
    with np.load(path) as npz:
        sources = npz["source_groups"] if "source_groups" in npz.files else None  # older caches: none
        return Prepared(npz["x"] if mapped is None else mapped, npz["y"].astype(np.int64), npz["ids"], npz["groups"],
                        tuple(npz["classes"].tolist()), size, tuple(float(w) for w in npz["class_weights"]), sources)


def _mapped_member(path: Path, name: str) -> np.ndarray | None:
    """The npz member ``name`` memory-mapped read-only (``np.load``'s ``mmap_mode`` ignores npz files, but an
    uncompressed member is a plain .npy at an offset); None when it is compressed or not a plain array."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: damaged zip header of {name}.npy")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")


def _newest_cache(dataset: Path) -> tuple[list[Any], tuple[float, ...]] | None:
    """(meta, class weights) of the newest cache this code made, if any."""
    for path in sorted((Path(dataset) / "cache").glob("*px.npz"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            with np.load(path) as npz:
                meta = npz["meta"].tolist()
                weights = tuple(float(w) for w in npz["class_weights"])
        except BAD_CACHE:
            continue  # a half-written or foreign file: not a setting to follow
        if len(meta) == 6 and meta[0] == CACHE_VERSION:
            return meta, weights
    return None


def cache_settings(dataset: Path) -> tuple[int, int | None, str] | None:
    """(seed, per_class, balance) of the newest cache this code made, if any (its images may have changed since:
    the settings still hold)."""
    newest = _newest_cache(dataset)
    if newest is None:
        return None
    _, seed, _, _, mode, asked = newest[0]  # asked: --per-class, 0 when it was the smallest class
    return int(seed), int(asked) or None, BALANCE_MODES[mode]


def weighted_classes(dataset: Path) -> bool:
    """Whether the newest cache weights its classes unequally (``--balance weights`` on classes of unequal
    size): then plain accuracy would reward ignoring the small ones."""
    newest = _newest_cache(dataset)
    return newest is not None and any(abs(w - 1.0) > 1e-12 for w in newest[1])


def _is_fresh(dataset: Path, path: Path, seed: int, per_class: int | None, balance: str) -> bool:
    """Whether the cache was made by this code version and settings from the current manifest and files.

    The manifest is brought up to date first (cheap when nothing changed: one ``stat`` per file), so a file
    added, removed or replaced since the cache was made changes the digest and the cache is rebuilt. A cache
    ``np.load`` cannot read (truncated by a full disk, a foreign file) is simply not fresh.
    """
    try:
        with np.load(path) as npz:
            meta = npz["meta"].tolist()
            digest = str(npz["manifest"])
    except BAD_CACHE:
        return False
    if len(meta) != 6 or meta[0] != CACHE_VERSION:
        return False
    _, cache_seed, cache_per_class, _, mode, _ = meta
    if not (cache_seed == seed and per_class in (None, cache_per_class) and BALANCE_MODES[mode] == balance):
        return False
    build_manifest(dataset)
    return digest == manifest_digest(dataset)
