"""Prepare a dataset folder: manifest of every raw file, then a balanced uint8 cache per image size.

Layout (see datasets/README.md): ``DIR/raw/<class>/**`` originals, ``DIR/manifest.csv`` one row per raw file,
``DIR/cache/<size>px.npz`` the arrays every trial loads. Nothing is deleted: exclusion is a manifest status.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tuning import _io
from tuning.data.images import IMAGE_SUFFIXES, load_rgb, to_rgb
from tuning.errors import DataError

MANIFEST_COLUMNS = ("path", "label", "sha256", "phash", "width", "height", "group", "status", "source_url", "license",
                    "creator")
#: Columns a collector or a person fills in; re-describing a file never overwrites them.
PROVENANCE = ("source_url", "license", "creator")
CACHE_VERSION = 1
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


@dataclass
class PrepareReport:
    """What preparing did: per-class counts before/after balancing and every skipped file with its reason."""

    dataset: Path
    size: int
    available: dict[str, int]
    kept: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cache: Path | None = None


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


def _scan(dataset: Path) -> list[tuple[str, str]]:
    """(manifest path, class) for every image file under raw/<class>/, nested folders included."""
    raw = raw_dir(dataset)
    found = []
    for class_dir in sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                found.append((path.relative_to(dataset).as_posix(), class_dir.name))
    return found


def describe_file(dataset: Path, rel: str) -> dict[str, str]:
    """One manifest row: hashes and size, or an ``unreadable:<reason>`` status."""
    import imagehash

    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    data = (dataset / rel).read_bytes()
    row["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = to_rgb(img)
        row["width"], row["height"] = str(rgb.width), str(rgb.height)
        row["phash"] = str(imagehash.phash(rgb))
        row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason to skip, never to crash
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        row["status"] = f"unreadable:{reason}" if data else "unreadable:empty file"
    return row


def build_manifest(dataset: Path, *, progress: Progress | None = None) -> list[dict[str, str]]:
    """Scan raw/, hash and check every file, mark byte-identical copies.

    Rows already in the manifest are kept as they are; rows without a hash (written by a collector) are
    described now, keeping their provenance columns and a person's ``rejected`` status.
    """
    dataset = Path(dataset)
    existing = {row["path"]: row for row in read_manifest(dataset)} if (dataset / "manifest.csv").exists() else {}
    files = _scan(dataset)
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
    """Byte-identical readable files form one group; the shortest path is kept, the others point to it.

    Only the statuses this step owns (``ok``, ``duplicate-of:``) are recomputed; a person's ``rejected``
    and an ``unreadable:`` verdict stay as they are.
    """
    automatic = [r for r in rows if r["status"] == "ok" or r["status"].startswith("duplicate-of:")]
    by_sha: dict[str, list[dict[str, str]]] = {}
    for row in automatic:
        by_sha.setdefault(row["sha256"], []).append(row)
    for copies in by_sha.values():
        kept = min(copies, key=lambda r: (len(r["path"]), r["path"]))
        for row in copies:
            row["status"] = "ok" if row is kept else f"duplicate-of:{kept['path']}"
            row["group"] = kept["path"]
    for row in rows:
        row["group"] = row["group"] or row["path"]


def read_manifest(dataset: Path) -> list[dict[str, str]]:
    with open(Path(dataset) / "manifest.csv", newline="", encoding="utf-8") as fh:
        return [{c: row.get(c) or "" for c in MANIFEST_COLUMNS} for row in csv.DictReader(fh)]


def write_manifest(dataset: Path, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _io.write_text(Path(dataset) / "manifest.csv", buf.getvalue())


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
    dataset: Path, *, size: int, seed: int = 0, per_class: int | None = None, progress: Progress | None = None
) -> PrepareReport:
    """Manifest, balance and cache ``size`` px arrays. Skipped files are counted with their reason."""
    dataset = Path(dataset)
    rows = build_manifest(dataset, progress=progress)
    skipped = [(r["path"], r["status"]) for r in rows if r["status"] != "ok"]
    usable = [r for r in rows if r["status"] == "ok"]
    classes = tuple(sorted({r["label"] for r in rows}))
    available = {c: sum(r["label"] == c for r in usable) for c in classes}
    if len(classes) < 2:
        raise DataError(f"{dataset}: found {len(classes)} class folder(s) under raw/; a classifier needs at least two")
    empty = [c for c, n in available.items() if n == 0]
    if empty:
        raise DataError(f"{dataset}: class '{empty[0]}' has no readable image; add images or remove raw/{empty[0]}/")
    labels = np.array([classes.index(r["label"]) for r in usable])
    groups = np.array([r["group"] for r in usable])
    target = min(available.values()) if per_class is None else per_class
    if target < 1:
        raise DataError(f"--per-class must be >= 1, got {per_class}")
    keep = _balance(labels, groups, target, seed)
    with ThreadPoolExecutor(max_workers=2) as pool:
        x = np.stack(list(pool.map(lambda i: load_rgb(dataset / usable[i]["path"], size), keep)))
    ids = np.array([usable[i]["path"] for i in keep])
    out = cache_path(dataset, size)
    with _io.atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x=x, y=labels[keep].astype(np.int16), ids=ids, groups=groups[keep], classes=np.array(classes),
                     meta=np.array([CACHE_VERSION, seed, target, size]), manifest=np.array(_manifest_digest(dataset)))
    kept = {c: int((labels[keep] == i).sum()) for i, c in enumerate(classes)}
    return PrepareReport(dataset, size, available, kept, skipped, out)


def _manifest_digest(dataset: Path) -> str:
    return hashlib.sha256((Path(dataset) / "manifest.csv").read_bytes()).hexdigest()


def load_prepared(dataset: Path, size: int, *, seed: int = 0, per_class: int | None = None) -> Prepared:
    """The cached arrays for ``size``, (re)built when missing or made from another manifest or setting."""
    dataset = Path(dataset)
    raw_dir(dataset)
    path = cache_path(dataset, size)
    if not (path.exists() and (dataset / "manifest.csv").exists() and _is_fresh(dataset, path, seed, per_class)):
        prepare(dataset, size=size, seed=seed, per_class=per_class)
    with np.load(path) as npz:
        return Prepared(npz["x"], npz["y"].astype(np.int64), npz["ids"], npz["groups"],
                        tuple(npz["classes"].tolist()), size)


def _is_fresh(dataset: Path, path: Path, seed: int, per_class: int | None) -> bool:
    """Whether the cache was made by this code version and settings from the current manifest and files."""
    with np.load(path) as npz:
        version, cache_seed, cache_per_class, _ = npz["meta"].tolist()
        digest = str(npz["manifest"])
    return (
        version == CACHE_VERSION and cache_seed == seed and per_class in (None, cache_per_class)
        and digest == _manifest_digest(dataset) and _scan(dataset) == _manifest_files(dataset)
    )


def _manifest_files(dataset: Path) -> list[tuple[str, str]]:
    return [(r["path"], r["label"]) for r in read_manifest(dataset)]
