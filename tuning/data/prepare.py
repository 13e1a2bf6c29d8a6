"""Prepare a dataset folder: manifest of every raw file, then a balanced uint8 cache per image size.

Layout (see datasets/README.md): ``DIR/raw/<class>/**`` originals, ``DIR/manifest.csv`` one row per raw file,
``DIR/cache/<size>px.npz`` the arrays every trial loads. Nothing is deleted: exclusion is a manifest status.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from tuning import _io
from tuning.data.images import image_files, load_rgb, open_image, to_rgb
from tuning.errors import DataError

MANIFEST_COLUMNS = ("path", "label", "sha256", "phash", "width", "height", "group", "status", "source_url", "license",
                    "creator")
#: Columns a collector or a person fills in; re-describing a file never overwrites them.
PROVENANCE = ("source_url", "license", "creator")
CACHE_VERSION = 3
#: How ``prepare`` evens out the classes: drop images down to the smallest class, or keep all and weight them.
BALANCE_MODES = ("undersample", "weights")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Prepared:
    """The balanced arrays of one image size; ``ids`` are manifest paths, ``groups`` keep duplicates together."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    groups: np.ndarray
    classes: tuple[str, ...]
    size: int
    #: Loss weight per class index (n / (classes * n_class)); all 1.0 after undersampling, so training can
    #: always pass them on.
    class_weights: tuple[float, ...] = ()


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


def raw_dir(dataset: Path) -> Path:
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise DataError(
            f"{dataset}: no such dataset folder; make one with 'tuning data demo --out {dataset}' "
            f"or put images in {dataset}/raw/<class>/"
        )
    raw = dataset / "raw"
    if not raw.is_dir():
        raise DataError(f"{dataset}: no raw/ folder; put the images in {dataset}/raw/<class>/ (one folder per class)")
    return raw


def class_dirs(dataset: Path) -> list[Path]:
    """The class folders under raw/, empty ones included (hidden folders are not classes)."""
    raw = raw_dir(dataset)
    return sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(dataset: Path) -> list[tuple[str, str]]:
    """(manifest path, class) for every image file under raw/<class>/, nested folders included."""
    found = []
    for class_dir in class_dirs(dataset):
        found.extend((path.relative_to(dataset).as_posix(), class_dir.name) for path in image_files(class_dir))
    return found


def describe_file(dataset: Path, rel: str) -> dict[str, str]:
    """One manifest row: hashes and size, or an ``unreadable:<reason>`` status.

    The whole file is decoded (that is what proves it readable); the perceptual hash is then taken from a copy
    reduced to about 64 px, since the hash itself looks at 32 x 32 and shrinking the full image costs as much
    as decoding it.
    """
    from tuning.data.dedup import DECODE_SIZE, phash_pair

    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    data = (dataset / rel).read_bytes()
    row["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        with open_image(io.BytesIO(data)) as img:
            img.load()
            rgb = to_rgb(img)
        row["width"], row["height"] = str(rgb.width), str(rgb.height)
        factor = min(rgb.width, rgb.height) // DECODE_SIZE
        row["phash"] = f"{phash_pair(rgb.reduce(factor) if factor >= 2 else rgb)[0]:016x}"
        row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason to skip, never to crash
        row["status"] = f"unreadable:{unreadable_reason(exc)}" if data else "unreadable:empty file"
    return row


def unreadable_reason(exc: BaseException) -> str:
    """A short, stable reason: the same failure reads the same in every row, so stats can count reasons."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (unknown format)"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"<[^<>]* at 0x[0-9a-f]+>", "file", text)[:120]


def build_manifest(dataset: Path, *, progress: Progress | None = None) -> list[dict[str, str]]:
    """Scan raw/, hash and check every file, mark byte-identical copies.

    Rows already in the manifest are kept as they are; rows without a hash (written by a collector) are
    described now, keeping their provenance columns and a person's ``rejected`` status.
    """
    dataset = Path(dataset)
    existing = {row["path"]: row for row in read_manifest(dataset)} if (dataset / "manifest.csv").is_file() else {}
    files = _scan(dataset)
    check_writable(dataset)
    todo = [rel for rel, _ in files if not existing.get(rel, {}).get("sha256")]
    described: dict[str, dict[str, str]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, (rel, row) in enumerate(zip(todo, pool.map(lambda r: describe_file(dataset, r), todo)), start=1):
            described[rel] = row
            if progress:
                progress(i, len(todo))
    rows = [_merge(existing.get(rel), described.get(rel), rel, label) for rel, label in files]
    _mark_exact_copies(rows)
    write_manifest(dataset, rows)
    return rows


def _merge(old: dict[str, str] | None, new: dict[str, str] | None, rel: str, label: str) -> dict[str, str]:
    if new is None:
        return old  # type: ignore[return-value]  # described rows are exactly those missing from ``old``
    row = {**new, "path": rel, "label": label}
    if old:
        row.update({k: old[k] for k in PROVENANCE if old.get(k)})
        if old.get("status") == "rejected":
            row["status"] = "rejected"
    return row


def _mark_exact_copies(rows: list[dict[str, str]]) -> None:
    """Byte-identical readable files join one group; groups already there (dedup's near duplicates) are kept.

    Rows sharing a SHA-256 or a ``group`` id are merged, never split, so a near-duplicate group made by
    ``tuning data dedup`` survives every later manifest pass. In a group the kept row is the one that already
    leads the most rows, then the largest (pixels), then the shortest path: a new exact copy never displaces
    the image dedup kept. Only the statuses this step owns (``ok``, ``duplicate-of:``) are recomputed; a
    person's ``rejected`` and an ``unreadable:`` verdict stay as they are.
    """
    automatic = [r for r in rows if r["status"] == "ok" or r["status"].startswith("duplicate-of:")]
    parent = list(range(len(automatic)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, row in enumerate(automatic):
        for key in (("sha", row["sha256"]), ("group", row["group"])):
            if key[1]:
                j = first.setdefault(key, i)
                parent[find(i)] = find(j)
    members: dict[int, list[dict[str, str]]] = {}
    for i, row in enumerate(automatic):
        members.setdefault(find(i), []).append(row)
    for group in members.values():
        leads = {}
        for row in group:
            leads[row["group"]] = leads.get(row["group"], 0) + 1
        kept = min(group, key=lambda r: (-leads.get(r["path"], 0), -row_pixels(r), len(r["path"]), r["path"]))
        for row in group:
            row["status"] = "ok" if row is kept else f"duplicate-of:{kept['path']}"
            row["group"] = kept["path"]
    for row in rows:
        row["group"] = row["group"] or row["path"]


def row_pixels(row: dict[str, str]) -> int:
    try:
        return int(row["width"]) * int(row["height"])
    except ValueError:
        return 0


def check_writable(dataset: Path) -> None:
    """Fail before hours of decoding when the manifest and cache could not be saved afterwards."""
    dataset = Path(dataset)
    cache = dataset / "cache"
    if not os.access(dataset, os.W_OK) or (cache.exists() and not os.access(cache, os.W_OK)):
        raise DataError(_read_only(dataset, "is read-only"))


def _read_only(dataset: Path, why: str) -> str:
    return (f"{dataset}: {why}, so manifest.csv and cache/ cannot be written; import a writable copy with "
            f"'tuning data import {dataset / 'raw'} --out COPY' and use COPY")


def read_manifest(dataset: Path) -> list[dict[str, str]]:
    path = Path(dataset) / "manifest.csv"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [{c: row.get(c) or "" for c in MANIFEST_COLUMNS} for row in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc}); "
                        "move it aside and rerun to rebuild it") from None


def write_manifest(dataset: Path, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    try:
        _io.write_text(Path(dataset) / "manifest.csv", buf.getvalue())
    except OSError as exc:
        raise DataError(_read_only(Path(dataset), f"manifest.csv cannot be saved ({exc.strerror or exc})")) from None


def _balance(labels: np.ndarray, groups: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of a seeded, group-aware undersample with at most ``per_class`` items per class."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        uniq = np.unique(groups[idx])
        taken = 0
        for g in rng.permutation(uniq):
            members = idx[groups[idx] == g]
            if taken + len(members) <= per_class:
                chosen.extend(members.tolist())
                taken += len(members)
            if taken == per_class:
                break
    return np.array(sorted(chosen), dtype=np.int64)


def cache_path(dataset: Path, size: int) -> Path:
    return Path(dataset) / "cache" / f"{size}px.npz"


def prepare(
    dataset: Path, *, size: int, seed: int = 0, per_class: int | None = None, balance: str = "undersample",
    progress: Progress | None = None,
) -> PrepareReport:
    """Manifest, balance and cache ``size`` px arrays. Skipped files are counted with their reason.

    ``balance="undersample"`` drops images (whole duplicate groups at a time) down to the smallest class or
    ``per_class``; ``"weights"`` keeps every usable image and stores per-class loss weights instead, which
    wastes nothing when one class is much smaller than the others.
    """
    dataset = Path(dataset)
    if balance not in BALANCE_MODES:
        raise DataError(f"--balance: unknown mode '{balance}'; known: {', '.join(BALANCE_MODES)}")
    if balance == "weights" and per_class is not None:
        raise DataError("--per-class only applies to --balance undersample; drop it or use undersample")
    if per_class is not None and per_class < 1:
        raise DataError(f"--per-class must be >= 1, got {per_class}")
    raw_dir(dataset)
    check_writable(dataset)
    rows = build_manifest(dataset, progress=progress)
    skipped = [(r["path"], r["status"]) for r in rows if r["status"] != "ok"]
    usable = [r for r in rows if r["status"] == "ok"]
    classes = tuple(d.name for d in class_dirs(dataset))
    available = {c: sum(r["label"] == c for r in usable) for c in classes}
    if len(classes) < 2:
        raise DataError(f"{dataset}: found {len(classes)} class folder(s) under raw/; a classifier needs at least "
                        f"two (put each class's images in raw/<class>/)")
    empty = [c for c, n in available.items() if n == 0]
    if empty:
        raise DataError(f"{dataset}: class '{empty[0]}' has no readable image; add images or remove raw/{empty[0]}/")
    labels = np.array([classes.index(r["label"]) for r in usable])
    groups = np.array([r["group"] for r in usable])
    if balance == "weights":
        target = 0
        keep = np.arange(len(usable), dtype=np.int64)
        weights = np.array([len(usable) / (len(classes) * available[c]) for c in classes])
    else:
        target = min(available.values()) if per_class is None else per_class
        keep = _balance(labels, groups, target, seed)
        weights = np.ones(len(classes))
    with ThreadPoolExecutor(max_workers=2) as pool:
        x = np.stack(list(pool.map(lambda i: load_rgb(dataset / usable[i]["path"], size), keep)))
    ids = np.array([usable[i]["path"] for i in keep])
    out = cache_path(dataset, size)
    try:
        with _io.atomic_path(out) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x, y=labels[keep].astype(np.int16), ids=ids, groups=groups[keep],
                         classes=np.array(classes), class_weights=weights.astype(np.float64),
                         meta=np.array([CACHE_VERSION, seed, target, size, BALANCE_MODES.index(balance),
                                        per_class or 0]),
                         manifest=np.array(_manifest_digest(dataset)))
    except OSError as exc:
        raise DataError(_read_only(dataset, f"{out} cannot be saved ({exc.strerror or exc})")) from None
    kept = {c: int((labels[keep] == i).sum()) for i, c in enumerate(classes)}
    return PrepareReport(dataset, size, available, kept, skipped, out, balance,
                         {c: round(float(w), 6) for c, w in zip(classes, weights)})


def _manifest_digest(dataset: Path) -> str:
    return hashlib.sha256((Path(dataset) / "manifest.csv").read_bytes()).hexdigest()


def load_prepared(
    dataset: Path, size: int, *, seed: int | None = None, per_class: int | None = None, balance: str | None = None
) -> Prepared:
    """The cached arrays for ``size``, (re)built when missing or made from another manifest or setting.

    Without settings it keeps the user's: those of the newest cache in the dataset (so a search honours
    ``tuning data prepare --balance weights --seed 3``, and another image size is prepared the same way), else
    seed 0, undersampled to the smallest class.
    """
    dataset = Path(dataset)
    raw_dir(dataset)
    if seed is None and per_class is None and balance is None:
        seed, per_class, balance = cache_settings(dataset) or (0, None, "undersample")
    seed = 0 if seed is None else seed
    balance = balance or "undersample"
    path = cache_path(dataset, size)
    if not (path.exists() and (dataset / "manifest.csv").exists()
            and _is_fresh(dataset, path, seed, per_class, balance)):
        prepare(dataset, size=size, seed=seed, per_class=per_class, balance=balance)
    with np.load(path) as npz:
        return Prepared(npz["x"], npz["y"].astype(np.int64), npz["ids"], npz["groups"],
                        tuple(npz["classes"].tolist()), size, tuple(float(w) for w in npz["class_weights"]))


def cache_settings(dataset: Path) -> tuple[int, int | None, str] | None:
    """(seed, per_class, balance) of the newest cache this code made, if any (its images may have changed since:
    the settings still hold)."""
    for path in sorted((Path(dataset) / "cache").glob("*px.npz"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            with np.load(path) as npz:
                meta = npz["meta"].tolist()
        except (OSError, ValueError, KeyError):
            continue  # a half-written or foreign file: not a setting to follow
        if len(meta) == 6 and meta[0] == CACHE_VERSION:
            _, seed, _, _, mode, asked = meta  # asked: --per-class, 0 when it was the smallest class
            return int(seed), int(asked) or None, BALANCE_MODES[mode]
    return None


def _is_fresh(dataset: Path, path: Path, seed: int, per_class: int | None, balance: str) -> bool:
    """Whether the cache was made by this code version and settings from the current manifest and files."""
    with np.load(path) as npz:
        meta = npz["meta"].tolist()
        digest = str(npz["manifest"])
    if len(meta) != 6 or meta[0] != CACHE_VERSION:
        return False
    _, cache_seed, cache_per_class, _, mode, _ = meta
    return (
        cache_seed == seed and per_class in (None, cache_per_class) and BALANCE_MODES[mode] == balance
        and digest == _manifest_digest(dataset) and _scan(dataset) == _manifest_files(dataset)
    )


def _manifest_files(dataset: Path) -> list[tuple[str, str]]:
    return [(r["path"], r["label"]) for r in read_manifest(dataset)]
