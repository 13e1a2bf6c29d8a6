from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuning.data.prepare import cache_path, load_prepared, prepare
from tuning.errors import DataError


def _noise(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8), mode)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """Two classes of real files, with every kind of awkward image prepare must handle or skip."""
    root = tmp_path / "messy"
    a, b = root / "raw" / "cats", root / "raw" / "dogs" / "nested folder"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    for i in range(6):
        _noise((50, 40), i).save(a / f"cat {i}.jpg")
        _noise((40, 50), 100 + i).save(b / f"dög_{i}.png")
    shutil.copyfile(a / "cat 0.jpg", a / "cat 0 copy.jpg")  # byte-identical duplicate
    (a / "empty.jpg").write_bytes(b"")
    (a / "text.jpg").write_text("this is not an image")
    (a / "truncated.jpg").write_bytes((a / "cat 1.jpg").read_bytes()[:200])
    _noise((30, 30), 7, "RGBA").save(a / "alpha.png")
    _noise((30, 30), 8, "CMYK").save(a / "cmyk.jpg")
    pal = Image.new("P", (30, 30), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(b / "palette.png", transparency=0)
    Image.fromarray(np.arange(900, dtype=np.uint16).reshape(30, 30) * 70).convert("I;16").save(b / "deep.png")
    rotated = _noise((60, 20), 9)
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    rotated.save(b / "rotated.jpg", exif=exif)
    return root


def _manifest(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def test_prepare_skips_unreadable_files_with_reasons_and_marks_copies(messy: Path) -> None:
    report = prepare(messy, size=16, seed=0)
    rows = _manifest(messy)
    assert len(rows) == 21  # every raw file has a row, skipped ones too
    skipped = dict(report.skipped)
    assert skipped["raw/cats/empty.jpg"] == "unreadable:empty file"
    assert skipped["raw/cats/text.jpg"].startswith("unreadable:")
    assert skipped["raw/cats/truncated.jpg"].startswith("unreadable:")
    assert skipped["raw/cats/cat 0 copy.jpg"] == "duplicate-of:raw/cats/cat 0.jpg"
    assert len(skipped) == 4
    assert rows["raw/cats/cat 0 copy.jpg"]["group"] == rows["raw/cats/cat 0.jpg"]["group"]
    for path in ("raw/cats/alpha.png", "raw/cats/cmyk.jpg", "raw/dogs/nested folder/palette.png",
                 "raw/dogs/nested folder/deep.png", "raw/dogs/nested folder/dög_3.png"):
        assert rows[path]["status"] == "ok", path
    rotated = rows["raw/dogs/nested folder/rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == ("20", "60")  # EXIF orientation applied


def test_prepare_balances_classes_and_caches_rgb_uint8(messy: Path) -> None:
    report = prepare(messy, size=16, seed=0)
    assert report.available == {"cats": 8, "dogs": 9}
    assert report.kept == {"cats": 8, "dogs": 8}
    data = load_prepared(messy, 16)
    assert data.x.shape == (16, 16, 16, 3) and data.x.dtype == np.uint8
    assert data.classes == ("cats", "dogs")
    assert np.bincount(data.y).tolist() == [8, 8]
    assert len(set(data.ids.tolist())) == 16


def test_cache_is_reused_until_the_raw_files_change(messy: Path) -> None:
    load_prepared(messy, 16)
    stamp = cache_path(messy, 16).stat().st_mtime_ns
    load_prepared(messy, 16)
    assert cache_path(messy, 16).stat().st_mtime_ns == stamp
    _noise((40, 40), 55).save(messy / "raw" / "cats" / "new.jpg")
    data = load_prepared(messy, 16)
    assert "raw/cats/new.jpg" in _manifest(messy)
    assert np.bincount(data.y).tolist() == [9, 9]


def test_per_class_undersamples_to_the_number_asked(messy: Path) -> None:
    report = prepare(messy, size=16, seed=0, per_class=5)
    assert report.kept == {"cats": 5, "dogs": 5}


def test_missing_folder_single_class_and_unreadable_class_stop_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such dataset folder"):
        prepare(tmp_path / "nowhere", size=16)
    (tmp_path / "one" / "raw" / "only").mkdir(parents=True)
    _noise((20, 20), 1).save(tmp_path / "one" / "raw" / "only" / "a.png")
    with pytest.raises(DataError, match="at least two"):
        prepare(tmp_path / "one", size=16)
    (tmp_path / "one" / "raw" / "broken").mkdir()
    (tmp_path / "one" / "raw" / "broken" / "b.jpg").write_text("nope")
    with pytest.raises(DataError, match="class 'broken' has no readable image"):
        prepare(tmp_path / "one", size=16)
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no raw/ folder"):
        prepare(tmp_path / "flat", size=16)
