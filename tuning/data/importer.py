"""Import a folder of images, one sub-folder per class, into a dataset folder the toolkit owns.

People keep pictures as ``SRC/<class>/<show or film>/<file>``; the copy keeps that sub-path under
``DIR/raw/<class>/`` (names with spaces or non-ASCII letters unchanged), so any image can be traced back to its
original. Files are copied, never moved, and the source is never written to. Each copy lands atomically, so a
killed import leaves no half file, and a second run skips what is already there with the same bytes: an
interrupted import of thousands of photos resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuning import _io
from tuning.data.groups import GroupingReport, apply_groups, parse_group_by
from tuning.data.images import (
    SKIP_HIDDEN,
    SKIP_LOOSE,
    SKIP_NOT_IMAGE,
    printable,
    safe_name,
    scan_class_folders,
)
from tuning.data.manifest import build_manifest, write_manifest
from tuning.errors import DataError

__all__ = ["SKIP_CONFLICT", "SKIP_HIDDEN", "SKIP_LOOSE", "SKIP_NOT_IMAGE", "SKIP_UNREADABLE", "ImportReport",
           "import_folder"]

Progress = Callable[[int, int], None]
SKIP_CONFLICT = "a different file is already at the destination"
SKIP_UNREADABLE = "cannot be read"


@dataclass
class ImportReport:
    """Counts per class, what was skipped or renamed and why, and the manifest built afterwards."""

    source: Path
    dataset: Path
    copied: dict[str, int]
    present: dict[str, int]
    empty_classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: (source path with bad bytes escaped, manifest path it was copied to) for names that were not UTF-8.
    renamed: list[tuple[str, str]] = field(default_factory=list)
    #: (source path, manifest path) of files not copied because different bytes already have their name.
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    #: What ``--group-by`` did (None without it: the source groups already in the manifest stay).
    grouping: GroupingReport | None = None

    def reasons(self) -> Counter[str]:
        """Skipped files per reason (files already imported are not skipped: they are in the dataset)."""
        return Counter(reason for _, reason in self.skipped)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return _digest(a) == _digest(b)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safe_rel(rel: Path) -> Path:
    """``rel`` with every name that is not valid UTF-8 replaced by ``images.safe_name`` (bad bytes to ``_``
    plus a hash of them), so the manifest, which is UTF-8 text, can name the copy and every step can open it."""
    return Path(*(safe_name(part) for part in rel.parts))


def import_folder(source: Path, out: Path, *, group_by: str | None = None,
                  progress: Progress | None = None) -> ImportReport:
    """Copy every image under ``source/<class>/**`` to ``out/raw/<class>/**`` and build ``out/manifest.csv``.

    What is an image is ``images.scan_class_folders``'s rule, the one prepare applies to raw/ too; links out of
    ``source``, linked folders, FIFOs and hidden files are skipped with their reason, never followed or opened.
    ``group_by`` (``tuning/data/groups.py``) records each file's source group in the manifest; the copy keeps
    the sub-paths, so the rule sees the same path below the class folder as in ``source``.
    """
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    rule = parse_group_by(group_by) if group_by is not None else None  # a bad rule fails before any copy
    if not source.is_dir():
        raise DataError(f"{source}: no such folder; give a folder with one sub-folder of images per class")
    src_real, out_real = source.resolve(), out.resolve()
    if out_real == src_real or out_real.is_relative_to(src_real) or src_real.is_relative_to(out_real / "raw"):
        raise DataError(f"--out {out}: must be outside {source}; choose a separate dataset folder")
    scan = scan_class_folders(source)
    classes = scan.classes
    if len(classes) < 2:
        found = ", ".join(printable(p.name) for p in classes) or "none"
        raise DataError(f"{source}: found {len(classes)} class folder(s) ({found}); put each class's images in "
                        f"its own sub-folder, {source}/<class>/, with at least two classes")
    skipped = list(scan.skipped)
    labels = {c.name: safe_name(c.name) for c in classes}
    plan: list[tuple[Path, Path, str]] = []
    renamed: list[tuple[str, str]] = []
    conflicts: list[tuple[str, str]] = []
    for path, label in scan.files:
        rel = path.relative_to(source)
        safe = _safe_rel(rel)
        if safe != rel:
            renamed.append((printable(rel.as_posix()), f"raw/{safe.as_posix()}"))
        plan.append((path, out / "raw" / safe, labels[label]))
    used = {label for _, _, label in plan}
    empty = [labels[c.name] for c in classes if labels[c.name] not in used]
    copied = dict.fromkeys(labels.values(), 0)
    present = dict.fromkeys(labels.values(), 0)
    try:
        (out / "raw").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"--out {out}: cannot create the folder ({exc.strerror or exc}); "
                        "choose a writable one") from None
    for i, (src, dst, label) in enumerate(plan, start=1):
        name = printable(src.relative_to(source).as_posix())
        try:
            if dst.exists() or dst.is_symlink():
                if dst.is_file() and not dst.is_symlink() and _same_bytes(src, dst):
                    present[label] += 1
                else:
                    skipped.append((name, SKIP_CONFLICT))
                    conflicts.append((name, dst.relative_to(out).as_posix()))
            else:
                _copy(src, dst)
                copied[label] += 1
        except OSError as exc:
            if os.access(src, os.R_OK):
                raise DataError(f"--out {out}: cannot write {printable(str(dst.parent))} "
                                f"({exc.strerror or exc}); choose a writable folder") from None
            skipped.append((name, f"{SKIP_UNREADABLE}: {exc.strerror or type(exc).__name__}"))
        if progress:
            progress(i, len(plan))
    rows = build_manifest(out)
    grouping = None
    if rule is not None:
        grouping = apply_groups(rows, rule)
        write_manifest(out, rows)
    unreadable = [(r["path"], r["status"].removeprefix("unreadable:")) for r in rows
                  if r["status"].startswith("unreadable:")]
    return ImportReport(source, out, copied, present, empty, skipped, unreadable, time.perf_counter() - started,
                        renamed, conflicts, grouping)


def _copy(src: Path, dst: Path) -> None:
    """Copy bytes and times through a temporary sibling, so the destination is whole or absent."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _io.atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        st = src.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # times only: the copy stays writable
