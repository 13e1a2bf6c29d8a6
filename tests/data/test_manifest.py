"""The manifest floor's shared rules: which copy of a group is kept, and what kind a status is."""

from __future__ import annotations

import pytest

from tuning.data.manifest import EXCLUDED, choose_kept, status_kind


def _row(path: str, pixels: int, group: str = "") -> dict[str, str]:
    return {"path": path, "width": str(pixels), "height": "1", "group": group or path}


def test_the_largest_copy_is_kept() -> None:
    rows = [_row("raw/a/small.jpg", 10), _row("raw/a/a-much-longer-name-but-larger.jpg", 20)]
    assert choose_kept(rows)["path"] == "raw/a/a-much-longer-name-but-larger.jpg"


def test_among_equals_the_copy_that_already_leads_stays_kept() -> None:
    """A new byte-identical copy with a shorter name must not displace the image kept before."""
    rows = [_row("raw/a/zz-kept.jpg", 10), _row("raw/a/zz-copy.jpg", 10, group="raw/a/zz-kept.jpg"),
            _row("raw/a/a.jpg", 10)]
    assert choose_kept(rows)["path"] == "raw/a/zz-kept.jpg"


def test_then_the_shortest_path() -> None:
    assert choose_kept([_row("raw/a/bb.jpg", 10), _row("raw/a/c.jpg", 10)])["path"] == "raw/a/c.jpg"


def test_unreadable_sizes_lose_to_readable_ones() -> None:
    rows = [{"path": "raw/a/x.jpg", "width": "", "height": "", "group": "raw/a/x.jpg"}, _row("raw/a/longer.jpg", 1)]
    assert choose_kept(rows)["path"] == "raw/a/longer.jpg"


@pytest.mark.parametrize(("status", "kind"), [
    ("ok", "ok"), ("rejected", "rejected"), ("duplicate-of:raw/a/x.jpg", "duplicate"),
    ("unreadable:not an image (unknown format)", "unreadable"), ("", "undescribed"), ("rejectedX", "undescribed"),
])
def test_status_kind(status: str, kind: str) -> None:
    assert status_kind(status) == kind


def test_only_excluded_kinds_keep_an_image_out() -> None:
    assert set(EXCLUDED) == {"duplicate", "rejected", "unreadable"}
