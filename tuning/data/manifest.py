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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tuning import _io
from tuning.data.hashing import DECODE_SIZE, phash_pair
from tuning.data.images import SKIP_BAD_NAME, is_utf8, open_image, scan_class_folders, to_rgb, unreadable_reason
from tuning.errors import DataError

MANIFEST_COLUMNS = ("path", "label", "sha256", "phash", "width", "height", "group", "source_group", "status",
                    "source_url", "license", "creator", "bytes", "mtime_ns")
#: What a row was described from: a file whose size or modification time differs is described again.
FILE_STAMP = ("bytes", "mtime_ns")
#: Columns a collector or a person fills in; re-describing a file never overwrites them.
PROVENANCE = ("source_url", "license", "creator")
#: What a file keeps when its bytes change: where it came from and its source group (show, person, session:
#: ``tuning/data/groups.py``), which only a new ``--group-by`` changes. Older manifests lack the column: empty.
KEPT_ON_CHANGE = (*PROVENANCE, "source_group")
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


@dataclass
class RawScan:
    """The image files under raw/ as (manifest path, class), the class names, and every other entry with why it
    is not used (paths relative to the dataset, like manifest paths)."""

    files: list[tuple[str, str]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan_raw(dataset: Path) -> RawScan:
    """Walk raw/ by the rule import walks its source with (``images.scan_class_folders``).

    A name that is not valid UTF-8 (put into raw/ by hand; import renames them) is skipped with the reason
    instead of reaching the manifest, which is UTF-8 text every step must be able to read and write.
    """
    scan = scan_class_folders(raw_dir(dataset))
    found = RawScan(skipped=[(f"raw/{rel}", reason) for rel, reason in scan.skipped])
    bad_classes = set()
    for class_dir in scan.classes:
        if is_utf8(class_dir.name):
            found.classes.append(class_dir.name)
        else:
            bad_classes.add(class_dir.name)
            found.skipped.append((f"raw/{os.fsencode(class_dir.name).decode('utf-8', 'backslashreplace')}/",
                                  SKIP_BAD_NAME))
    for path, label in scan.files:
        rel = path.relative_to(dataset).as_posix()
        if label in bad_classes:
            continue
        if is_utf8(rel):
            found.files.append((rel, label))
        else:
            found.skipped.append((os.fsencode(rel).decode("utf-8", "backslashreplace"), SKIP_BAD_NAME))
    return found


def class_dirs(dataset: Path) -> list[Path]:
    """The class folders under raw/, empty ones included (hidden, linked and non-UTF-8 folders are not classes)."""
    return [Path(dataset) / "raw" / name for name in scan_raw(dataset).classes]


def describe_file(dataset: Path, rel: str) -> dict[str, str]:
    """One manifest row: hashes and size, or an ``unreadable:<reason>`` status.

    The whole file is decoded (that is what proves it readable); the perceptual hash is then taken from a copy
    reduced to about 64 px, since the hash itself looks at 32 x 32 and shrinking the full image costs as much
    as decoding it.
    """
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    path = Path(dataset) / rel
    st = os.stat(path)  # before reading: a write after it changes the stamp, so the next pass looks again
    data = path.read_bytes()
    row["sha256"] = hashlib.sha256(data).hexdigest()
    row["bytes"], row["mtime_ns"] = str(st.st_size), str(st.st_mtime_ns)
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


def build_manifest(
    dataset: Path, *, progress: Progress | None = None, scan: RawScan | None = None
) -> list[dict[str, str]]:
    """Scan raw/, hash and check every new or changed file, mark byte-identical copies.

    A row is described again whenever its file's size or modification time differs from the row's (rows of
    older manifests, without those columns, once): a file replaced by a corrupt one, or a broken one repaired,
    is seen on the next pass of any step. If the SHA-256 is unchanged (a ``touch``), the old row stays, with
    its group; otherwise the new description replaces it, keeping provenance and a person's ``rejected``.
    Pass ``scan`` to learn what the walk skipped without walking twice. The manifest is written only when a
    row changed, so reading an up-to-date dataset needs no write access.
    """
    dataset = Path(dataset)
    manifest = dataset / "manifest.csv"
    old_rows = read_manifest(dataset) if manifest.is_file() else []
    existing = {row["path"]: row for row in old_rows}
    scan = scan_raw(dataset) if scan is None else scan
    files = []
    todo = []
    for rel, label in scan.files:
        try:
            st = os.stat(dataset / rel)
        except OSError as exc:  # removed or replaced by something else since the walk
            scan.skipped.append((rel, f"cannot be read: {exc.strerror or type(exc).__name__}"))
            continue
        files.append((rel, label))
        old = existing.get(rel, {})
        if not old.get("sha256") or (old.get("bytes"), old.get("mtime_ns")) != (str(st.st_size), str(st.st_mtime_ns)):
            todo.append(rel)
    if todo:
        check_writable(dataset)
    described: dict[str, dict[str, str]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for i, (rel, row) in enumerate(zip(todo, pool.map(lambda r: _describe_or_reason(dataset, r), todo)), start=1):
            if isinstance(row, str):
                scan.skipped.append((rel, row))
            else:
                described[rel] = row
            if progress:
                progress(i, len(todo))
    waiting = set(todo)
    rows = [_merge(existing.get(rel), described.get(rel), rel, label) for rel, label in files
            if rel in described or rel not in waiting]
    _mark_exact_copies(rows)
    if rows != old_rows or not manifest.is_file():
        check_writable(dataset)
        write_manifest(dataset, rows)
    return rows


def _describe_or_reason(dataset: Path, rel: str) -> dict[str, str] | str:
    """The row, or why the file could not even be opened (removed since the walk, no read permission)."""
    try:
        return describe_file(dataset, rel)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or type(exc).__name__}"


def _merge(old: dict[str, str] | None, new: dict[str, str] | None, rel: str, label: str) -> dict[str, str]:
    if new is None:
        return {**old, "label": label}  # type: ignore[dict-item]  # rows not described are exactly those in ``old``
    if old and old.get("sha256") == new["sha256"]:
        return {**old, "label": label, **{k: new[k] for k in FILE_STAMP}}  # same bytes: same verdict and group
    row = {**new, "path": rel, "label": label}
    if old:
        row.update({k: old[k] for k in KEPT_ON_CHANGE if old.get(k)})
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
    """Write the rows as UTF-8 CSV, atomically; a value that is not valid text is refused before anything is
    written (the scan keeps such names out, so this guards the file, not the user)."""
    for row in rows:
        if not all(is_utf8(str(v)) for v in row.values() if v):
            name = os.fsencode(str(row.get("path", ""))).decode("utf-8", "backslashreplace")
            raise DataError(f"{Path(dataset) / 'manifest.csv'}: row {name} holds text that is not valid UTF-8; "
                            "rename the file and rerun")
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
