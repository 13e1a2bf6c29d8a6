"""Window hashes and the geometric check that dedup uses for cropped copies (tests/data/test_dedup.py groups)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data._pictures import picture
from tuning.data.hashing import (
    WINDOWS,
    crop_similarity,
    grey_thumbnail,
    hash_file,
    hash_file_windows,
    hash_files,
    phash_pair,
    window_phashes,
)


def _cut(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(left * w), round(top * h), w - round(right * w), h - round(bottom * h)))


def test_each_window_hash_is_the_phash_of_that_window_within_a_few_bits() -> None:
    img = picture(3, (75, 105))
    windows = window_phashes(img)
    assert windows.shape == (len(WINDOWS),) == (80,) and windows.dtype == np.uint64
    assert (0.0, 0.0, 0.0, 0.0) not in WINDOWS and len(set(WINDOWS)) == 80
    for k in (0, 17, 40, 79):
        cut = phash_pair(_cut(img, *WINDOWS[k]))[0]
        assert bin(int(windows[k]) ^ cut).count("1") <= 4, WINDOWS[k]
    others = np.bitwise_count(window_phashes(picture(4, (75, 105)))[:, None] ^ windows[None, :])
    assert others.min() > 8  # another picture's windows are far from all of these


def test_crop_similarity_tells_a_crop_from_another_picture_of_the_same_colours(tmp_path: Path) -> None:
    whole = picture(5, (240, 320))
    whole.save(tmp_path / "whole.png")
    _cut(whole, 0.1, 0.1, 0, 0).save(tmp_path / "crop.jpg", quality=85)
    picture(5, (240, 320), shapes=77).save(tmp_path / "other.png")
    w, c, o = (grey_thumbnail(tmp_path / n) for n in ("whole.png", "crop.jpg", "other.png"))
    assert crop_similarity(c, w) >= 0.97
    assert crop_similarity(w, w) >= 0.99
    assert crop_similarity(o, w) < 0.8
    assert crop_similarity(c[:, :10], w) == -1.0  # far narrower than any box of the whole: no box to try


def test_hash_files_with_windows_is_the_same_on_two_processes_and_reports_bad_files(tmp_path: Path) -> None:
    files = []
    for i in range(50):
        files.append(tmp_path / f"{i}.png")
        picture(i, (64, 48)).save(files[-1])
    (tmp_path / "bad.jpg").write_text("nope")
    files.append(tmp_path / "bad.jpg")
    one = hash_files(files, windows=True, workers=1)
    two = hash_files(files, windows=True, workers=2)
    assert isinstance(one[-1], str) and isinstance(two[-1], str)
    for a, b, f in zip(one[:-1], two[:-1], files):
        assert isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) == 3
        assert a[:2] == b[:2] == hash_file(f) and np.array_equal(a[2], b[2])
        assert np.array_equal(a[2], hash_file_windows(f)[2])
    with pytest.raises(ValueError, match="window hashes are phashes"):
        hash_files(files[:1], "dhash", windows=True)


def test_tiny_and_odd_shaped_images_still_hash_and_check(tmp_path: Path) -> None:
    for size in ((3, 2), (1, 40), (500, 7)):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            tmp_path / "t.png")
        value, _, windows = hash_file_windows(tmp_path / "t.png")
        assert windows.shape == (80,)
        thumb = grey_thumbnail(tmp_path / "t.png")
        assert -1.0 <= crop_similarity(thumb, thumb) <= 1.0 + 1e-6


@pytest.mark.parametrize(("size", "lo", "hi", "out"), [(95, 0, 95, 32), (95, 4.75, 90.25, 32), (20, 0, 20, 32),
                                                       (64, 3.2, 60.8, 16)])
def test_window_resampling_weights_are_pillows_lanczos(size: int, lo: float, hi: float, out: int) -> None:
    from tuning.data.hashing import _lanczos_rows

    row = np.random.default_rng(size).random(size) * 255
    img = Image.fromarray(np.tile(row, (2, 1)).astype(np.float32), mode="F")
    pillow = np.asarray(img.resize((out, 2), Image.Resampling.LANCZOS, box=(lo, 0, hi, 2)))[0]
    assert np.allclose(_lanczos_rows(size, lo, hi, out) @ row, pillow, atol=1e-3)
    many = _lanczos_rows(size, np.array([lo, 0.0]), np.array([hi, size]), out)
    assert many.shape == (2, out, size) and np.allclose(many[0] @ row, pillow, atol=1e-3)
