"""The manifest: one row per raw file, the record every data step reads and writes.

``DIR/raw/<class>/**`` holds the originals, ``DIR/manifest.csv`` one row per raw file (see datasets/README.md).
Nothing is deleted: exclusion is a status (``ok``, ``duplicate-of:<path>``, ``rejected``, ``unreadable:<reason>``),
so every step can be undone and audited. This module is a floor: collect, import, dedup, review, stats and prepare
all stand on it, and it imports none of them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from tuning import _io
from tuning.data.hashing import DECODE_SIZE, phash_pair
from tuning.data.images import image_files, open_image, to_rgb, unreadable_reason
from tuning.errors import DataError

MANIFEST_COLUMNS = ("path", "label", "sha256", "phash", "width", "height", "group", "status", "source_url", "license",
                    "creator")
#: Columns a collector or a person fills in; re-describing a file never overwrites them.
PROVENANCE = ("source_url", "license", "creator")
Progress = Callable[[int, int], None]
StatusKind = Literal["ok", "duplicate", "rejected", "unreadable", "undescribed"]
#: The kinds that keep an image out of training (an undescribed row is only waiting for its description).
EXCLUDED: tuple[StatusKind, ...] = ("duplicate", "rejected", "unreadable")


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


def scan_raw(dataset: Path) -> list[tuple[str, str]]:
    """(manifest path, class) for every image file under raw/<class>/, nested folders included."""
    found: list[tuple[str, str]] = []
    for class_dir in class_dirs(dataset):
        found.extend((path.relative_to(dataset).as_posix(), class_dir.name) for path in image_files(class_dir))
    return found


def describe_file(dataset: Path, rel: str) -> dict[str, str]:
    """One manifest row: hashes and size, or an ``unreadable:<reason>`` status.

    The whole file is decoded (that is what proves it readable); the perceptual hash is then taken from a copy
    reduced to about 64 px, since the hash itself looks at 32 x 32 and shrinking the full image costs as much
    as decoding it.
    """
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


def build_manifest(dataset: Path, *, progress: Progress | None = None) -> list[dict[str, str]]:
    """Scan raw/, hash and check every file, mark byte-identical copies.

    Rows already in the manifest are kept as they are; rows without a hash (written by a collector) are
    described now, keeping their provenance columns and a person's ``rejected`` status.
    """
    dataset = Path(dataset)
    existing = {row["path"]: row for row in read_manifest(dataset)} if (dataset / "manifest.csv").is_file() else {}
    files = scan_raw(dataset)
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
    ``tuning data dedup`` survives every later manifest pass. The kept row is ``choose_kept``'s, the rule dedup
    uses too, so a new exact copy never displaces the image dedup kept. Only the statuses this step owns (``ok``,
    ``duplicate-of:``) are recomputed; a person's ``rejected`` and an ``unreadable:`` verdict stay as they are.
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
        kept = choose_kept(group)
        for row in group:
            row["status"] = "ok" if row is kept else f"duplicate-of:{kept['path']}"
            row["group"] = kept["path"]
    for row in rows:
        row["group"] = row["group"] or row["path"]


def row_pixels(row: Mapping[str, str]) -> int:
    try:
        return int(row["width"]) * int(row["height"])
    except ValueError:
        return 0


def check_writable(dataset: Path) -> None:
    """Fail before hours of decoding when the manifest and cache could not be saved afterwards."""
    dataset = Path(dataset)
    cache = dataset / "cache"
    if not os.access(dataset, os.W_OK) or (cache.exists() and not os.access(cache, os.W_OK)):
        raise DataError(read_only_message(dataset, "is read-only"))


def read_only_message(dataset: Path, why: str) -> str:
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
        why = f"manifest.csv cannot be saved ({exc.strerror or exc})"
        raise DataError(read_only_message(Path(dataset), why)) from None


def manifest_digest(dataset: Path) -> str:
    return hashlib.sha256((Path(dataset) / "manifest.csv").read_bytes()).hexdigest()


def manifest_files(dataset: Path) -> list[tuple[str, str]]:
    return [(r["path"], r["label"]) for r in read_manifest(dataset)]


def status_kind(status: str) -> StatusKind:
    """The kind of a manifest status, the one classification stats, review, report and collect share."""
    if status.startswith("duplicate-of:"):
        return "duplicate"
    if status.startswith("unreadable:"):
        return "unreadable"
    if status in ("ok", "rejected"):
        return status  # type: ignore[return-value]  # narrowed by the test above
    return "undescribed"


def choose_kept(group: Iterable[Mapping[str, str]]) -> Mapping[str, str]:
    """The one image of a duplicate group that trains; the others become ``duplicate-of:`` it.

    The largest (pixels) wins, since every other copy can be made from it; among equals the one that already
    leads most rows (so a new byte-identical copy never displaces the image kept before), then the shortest path.
    """
    group = list(group)
    leads: dict[str, int] = {}
    for row in group:
        leads[row["group"]] = leads.get(row["group"], 0) + 1
    return min(group, key=lambda r: (-row_pixels(r), -leads.get(r["path"], 0), len(r["path"]), r["path"]))
