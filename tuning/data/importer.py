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
from tuning.data.images import IMAGE_SUFFIXES
from tuning.data.manifest import build_manifest
from tuning.errors import DataError

Progress = Callable[[int, int], None]
SKIP_CONFLICT = "a different file is already at the destination"
SKIP_NOT_IMAGE = "not an image file"
SKIP_HIDDEN = "hidden file"
SKIP_UNREADABLE = "cannot be read"
SKIP_LOOSE = "not in a class folder"


@dataclass
class ImportReport:
    """Counts per class, what was skipped and why, and the manifest built afterwards."""

    source: Path
    dataset: Path
    copied: dict[str, int]
    present: dict[str, int]
    empty_classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def reasons(self) -> Counter[str]:
        """Skipped files per reason (files already imported are not skipped: they are in the dataset)."""
        return Counter(reason for _, reason in self.skipped)


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


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


def import_folder(source: Path, out: Path, *, progress: Progress | None = None) -> ImportReport:
    """Copy every image under ``source/<class>/**`` to ``out/raw/<class>/**`` and build ``out/manifest.csv``."""
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DataError(f"{source}: no such folder; give a folder with one sub-folder of images per class")
    src_real, out_real = source.resolve(), out.resolve()
    if out_real == src_real or out_real.is_relative_to(src_real) or src_real.is_relative_to(out_real / "raw"):
        raise DataError(f"--out {out}: must be outside {source}; choose a separate dataset folder")
    classes = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        found = ", ".join(p.name for p in classes) or "none"
        raise DataError(f"{source}: found {len(classes)} class folder(s) ({found}); put each class's images in "
                        f"its own sub-folder, {source}/<class>/, with at least two classes")
    plan: list[tuple[Path, Path, str]] = []
    skipped = [(p.name, SKIP_LOOSE) for p in sorted(source.iterdir()) if p.is_file() and not p.name.startswith(".")]
    empty: list[str] = []
    for class_dir in classes:
        n_images = 0
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(source)
            if _is_hidden(path.relative_to(class_dir)):
                skipped.append((rel.as_posix(), SKIP_HIDDEN))
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((rel.as_posix(), SKIP_NOT_IMAGE))
            else:
                plan.append((path, out / "raw" / rel, class_dir.name))
                n_images += 1
        if n_images == 0:
            empty.append(class_dir.name)
    copied = dict.fromkeys((c.name for c in classes), 0)
    present = dict.fromkeys((c.name for c in classes), 0)
    try:
        (out / "raw").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"--out {out}: cannot create the folder ({exc.strerror or exc}); "
                        "choose a writable one") from None
    for i, (src, dst, label) in enumerate(plan, start=1):
        name = src.relative_to(source).as_posix()
        try:
            if dst.exists():
                if dst.is_file() and _same_bytes(src, dst):
                    present[label] += 1
                else:
                    skipped.append((name, SKIP_CONFLICT))
            else:
                _copy(src, dst)
                copied[label] += 1
        except OSError as exc:
            if os.access(src, os.R_OK):
                raise DataError(f"--out {out}: cannot write {dst.parent} ({exc.strerror or exc}); "
                                "choose a writable folder") from None
            skipped.append((name, f"{SKIP_UNREADABLE}: {exc.strerror or type(exc).__name__}"))
        if progress:
            progress(i, len(plan))
    rows = build_manifest(out)
    unreadable = [(r["path"], r["status"].removeprefix("unreadable:")) for r in rows
                  if r["status"].startswith("unreadable:")]
    return ImportReport(source, out, copied, present, empty, skipped, unreadable, time.perf_counter() - started)


def _copy(src: Path, dst: Path) -> None:
    """Copy bytes and times through a temporary sibling, so the destination is whole or absent."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _io.atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        st = src.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # times only: the copy stays writable
