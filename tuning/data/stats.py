"""What a dataset holds, from its manifest: per class and status, image sizes, and why files are left out.

The numbers someone checks before a long search: is a class too small, are many images tiny, how many files were
dropped and for what reason. Everything comes from manifest.csv (built first when missing), so it is instant
even for a large set.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuning.data.manifest import build_manifest, class_dirs, raw_dir, read_manifest, status_kind


@dataclass(frozen=True)
class SizeSummary:
    """Min, median and max width and height in pixels of the usable (``ok``) images: what training sees."""

    width: tuple[int, int, int]
    height: tuple[int, int, int]


@dataclass(frozen=True)
class DatasetStats:
    """Counts per class (rows and usable images), per status kind, per skip reason, and the image sizes."""

    dataset: Path
    files: int
    per_class: dict[str, dict[str, int]]
    per_status: dict[str, int]
    reasons: dict[str, int]
    duplicate_groups: int
    sizes: SizeSummary | None
    built_manifest: bool

    def to_dict(self) -> dict[str, Any]:
        sizes = None if self.sizes is None else {
            "width": dict(zip(("min", "median", "max"), self.sizes.width)),
            "height": dict(zip(("min", "median", "max"), self.sizes.height)),
        }
        return {"dataset": str(self.dataset), "files": self.files, "per_class": self.per_class,
                "per_status": self.per_status, "skipped_reasons": self.reasons,
                "duplicate_groups": self.duplicate_groups, "sizes": sizes}


def _reason(status: str) -> str:
    kind = status_kind(status)
    return status.removeprefix("unreadable:") if kind == "unreadable" else kind


def dataset_stats(dataset: Path) -> DatasetStats:
    """Summarise ``dataset``'s manifest; a dataset without one gets it built (the same scan prepare does)."""
    dataset = Path(dataset)
    raw_dir(dataset)
    built = not (dataset / "manifest.csv").exists()
    rows = build_manifest(dataset) if built else read_manifest(dataset)
    per_class: dict[str, dict[str, int]] = {d.name: {"files": 0, "ok": 0} for d in class_dirs(dataset)}
    for row in rows:
        entry = per_class.setdefault(row["label"], {"files": 0, "ok": 0})
        entry["files"] += 1
        entry["ok"] += row["status"] == "ok"
    per_status = Counter(status_kind(r["status"]) for r in rows)
    reasons = Counter(_reason(r["status"]) for r in rows if r["status"] != "ok")
    readable = [r for r in rows if r["width"] and r["height"] and r["status"] == "ok"]
    sizes = None
    if readable:
        w = np.array([int(r["width"]) for r in readable])
        h = np.array([int(r["height"]) for r in readable])
        sizes = SizeSummary((int(w.min()), int(np.median(w)), int(w.max())),
                            (int(h.min()), int(np.median(h)), int(h.max())))
    group_sizes = Counter(r["group"] for r in rows if r["group"])
    return DatasetStats(dataset, len(rows), per_class, dict(per_status.most_common()), dict(reasons.most_common()),
                        sum(n > 1 for n in group_sizes.values()), sizes, built)
