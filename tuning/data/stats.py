"""What a dataset holds, from its manifest: per class and status, image sizes, and why files are left out.

The numbers someone checks before a long search: is a class too small, are many images tiny, how many files were
dropped and for what reason. Everything comes from manifest.csv, brought up to date first (only new or changed
files are described, one ``stat`` per file otherwise), so the numbers are never those of a stale manifest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuning.data.manifest import build_manifest, raw_dir, scan_raw, status_kind
from tuning.data.splits import union_groups


@dataclass(frozen=True)
class SizeSummary:
    """Min, median and max width and height in pixels of the usable (``ok``) images: what training sees."""

    width: tuple[int, int, int]
    height: tuple[int, int, int]


@dataclass(frozen=True)
class DatasetStats:
    """Counts per class (rows and usable images), per status kind, per skip reason, and the image sizes.

    ``per_class`` also holds each class's ``groups`` (what a split keeps together: near duplicates merged with
    source groups) and ``largest_group_share``, the share of its usable images the largest one holds: a class
    whose largest show holds 40% cannot get a 15% test share. ``reasons`` counts the manifest's excluded rows
    and the files the raw/ walk skipped (hidden, links out of the folder, names that are not UTF-8, ...), each
    by its reason.
    """

    dataset: Path
    files: int
    per_class: dict[str, dict[str, int]]
    per_status: dict[str, int]
    reasons: dict[str, int]
    duplicate_groups: int
    sizes: SizeSummary | None
    built_manifest: bool
    #: Whether any usable image has a source group (``--group-by``); else only near duplicates are grouped.
    source_grouped: bool = False

    def to_dict(self) -> dict[str, Any]:
        sizes = None if self.sizes is None else {
            "width": dict(zip(("min", "median", "max"), self.sizes.width)),
            "height": dict(zip(("min", "median", "max"), self.sizes.height)),
        }
        return {"dataset": str(self.dataset), "files": self.files, "per_class": self.per_class,
                "per_status": self.per_status, "skipped_reasons": self.reasons,
                "duplicate_groups": self.duplicate_groups, "source_grouped": self.source_grouped, "sizes": sizes}


def _reason(status: str) -> str:
    kind = status_kind(status)
    return status.removeprefix("unreadable:") if kind == "unreadable" else kind


def dataset_stats(dataset: Path) -> DatasetStats:
    """Summarise ``dataset``'s manifest after rescanning raw/ (the same scan and update prepare does)."""
    dataset = Path(dataset)
    raw_dir(dataset)
    built = not (dataset / "manifest.csv").exists()
    scan = scan_raw(dataset)
    rows = build_manifest(dataset, scan=scan)
    per_class: dict[str, dict[str, Any]] = {name: {"files": 0, "ok": 0} for name in scan.classes}
    for row in rows:
        entry = per_class.setdefault(row["label"], {"files": 0, "ok": 0})
        entry["files"] += 1
        entry["ok"] += row["status"] == "ok"
    usable = [r for r in rows if r["status"] == "ok"]
    merged = union_groups(np.array([r["group"] or r["path"] for r in usable], dtype=object),
                          np.array([r["source_group"] for r in usable], dtype=object)).tolist()
    for label, entry in per_class.items():
        sizes_of = Counter(g for g, r in zip(merged, usable) if r["label"] == label)
        entry["groups"] = len(sizes_of)
        entry["largest_group_share"] = max(sizes_of.values()) / entry["ok"] if entry["ok"] else 0.0
    per_status = Counter(status_kind(r["status"]) for r in rows)
    reasons = Counter(_reason(r["status"]) for r in rows if r["status"] != "ok")
    reasons.update(reason for _, reason in scan.skipped)
    readable = [r for r in rows if r["width"] and r["height"] and r["status"] == "ok"]
    sizes = None
    if readable:
        w = np.array([int(r["width"]) for r in readable])
        h = np.array([int(r["height"]) for r in readable])
        sizes = SizeSummary((int(w.min()), int(np.median(w)), int(w.max())),
                            (int(h.min()), int(np.median(h)), int(h.max())))
    group_sizes = Counter(r["group"] for r in rows if r["group"])
    return DatasetStats(dataset, len(rows), per_class, dict(per_status.most_common()), dict(reasons.most_common()),
                        sum(n > 1 for n in group_sizes.values()), sizes, built,
                        any(r["source_group"] for r in usable))
