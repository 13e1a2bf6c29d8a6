from __future__ import annotations

import csv
import os
import shutil
import struct
import time
import zlib
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
    assert skipped["raw/cats/text.jpg"] == "unreadable:not an image (unknown format)"  # stable, so stats can count
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
    report = prepare(messy, size=16, seed=0, balance="undersample")
    assert report.available == {"cats": 8, "dogs": 9}
    assert report.kept == {"cats": 8, "dogs": 8}
    data = load_prepared(messy, 16)
    assert data.x.shape == (16, 16, 16, 3) and data.x.dtype == np.uint8
    assert data.classes == ("cats", "dogs")
    assert np.bincount(data.y).tolist() == [8, 8]
    assert len(set(data.ids.tolist())) == 16


def test_the_cached_images_are_memory_mapped_read_only(messy: Path) -> None:
    data = load_prepared(messy, 16)
    assert isinstance(data.x, np.memmap) and not data.x.flags.writeable  # trials read batches, not the whole file
    with np.load(cache_path(messy, 16)) as npz:
        assert np.array_equal(data.x, npz["x"]) and data.x.dtype == np.uint8
    np.savez_compressed(cache_path(messy, 16), **dict(np.load(cache_path(messy, 16))))  # a compressed cache
    assert not isinstance(load_prepared(messy, 16).x, np.memmap)  # still read, just not mapped


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
    report = prepare(messy, size=16, seed=3, per_class=5)
    assert report.kept == {"cats": 5, "dogs": 5}
    other_size = load_prepared(messy, 8)  # a search asking for another size keeps the user's seed and count
    assert other_size.ids.tolist() == load_prepared(messy, 16).ids.tolist() and len(other_size.ids) == 10


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


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and header declaring ``width`` x ``height`` pixels, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_from_the_header(messy: Path) -> None:
    cats = messy / "raw" / "cats"
    (cats / "bomb.png").write_bytes(_png_header_only(20_000, 20_000))  # over twice the limit: Pillow refuses
    (cats / "warned bomb.png").write_bytes(_png_header_only(13_000, 13_000))  # Pillow would only warn, then decode
    start = time.perf_counter()
    report = prepare(messy, size=16)
    assert time.perf_counter() - start < 10
    skipped = dict(report.skipped)
    for name in ("bomb.png", "warned bomb.png"):
        assert skipped[f"raw/cats/{name}"].startswith("unreadable:") and "decompression bomb" in skipped[
            f"raw/cats/{name}"], name


def test_animated_gif_uses_its_first_frame(tmp_path: Path) -> None:
    root = tmp_path / "gif"
    for label in ("a", "b"):
        (root / "raw" / label).mkdir(parents=True)
        _noise((20, 20), ord(label)).save(root / "raw" / label / "noise.png")
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(root / "raw" / "a" / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    prepare(root, size=8, balance="weights")
    data = load_prepared(root, 8, balance="weights")
    pixel = data.x[data.ids.tolist().index("raw/a/anim.gif")][4, 4]
    assert pixel[0] > 200 and pixel[1] < 50 and pixel[2] < 50


def test_weights_keep_every_image_and_store_class_weights(messy: Path) -> None:
    report = prepare(messy, size=16, balance="weights")
    assert report.kept == report.available == {"cats": 8, "dogs": 9}
    assert report.class_weights == pytest.approx({"cats": 17 / 16, "dogs": 17 / 18})
    data = load_prepared(messy, 16, balance="weights")
    assert len(data.y) == 17 and data.class_weights == pytest.approx((17 / 16, 17 / 18))
    assert load_prepared(messy, 16).class_weights == data.class_weights  # no settings: the user's are kept
    undersampled = load_prepared(messy, 16, balance="undersample")  # rebuilt, plain weights
    assert undersampled.class_weights == (1.0, 1.0) and len(undersampled.y) == 16
    with pytest.raises(DataError, match="--per-class only applies to --balance undersample"):
        prepare(messy, size=16, balance="weights", per_class=3)
    with pytest.raises(DataError, match="unknown mode 'smote'; known: undersample, weights"):
        prepare(messy, size=16, balance="smote")


def test_an_empty_class_folder_is_named(messy: Path) -> None:
    (messy / "raw" / "birds" / "nested").mkdir(parents=True)
    with pytest.raises(DataError, match=r"class 'birds' has no readable image; add images or remove raw/birds/"):
        prepare(messy, size=16)


@pytest.mark.readonly
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; covered by the test below")
def test_read_only_dataset_says_to_use_a_writable_copy(messy: Path) -> None:
    messy.chmod(0o555)
    try:
        with pytest.raises(DataError, match="is read-only.*import a writable copy"):
            prepare(messy, size=16)
    finally:
        messy.chmod(0o755)


def test_unwritable_cache_or_manifest_is_a_one_line_error(messy: Path) -> None:
    (messy / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(DataError, match=r"cache/16px.npz cannot be saved .*import a writable copy") as err:
        prepare(messy, size=16)
    assert "\n" not in str(err.value)
    (messy / "cache").unlink()
    (messy / "manifest.csv").unlink()
    (messy / "manifest.csv").mkdir()
    with pytest.raises(DataError, match=r"manifest.csv cannot be saved"):
        prepare(messy, size=16)


def test_cli_prepare_with_weights_prints_them(messy: Path) -> None:
    from click.testing import CliRunner

    from tuning.cli import cli

    result = CliRunner().invoke(cli, ["data", "prepare", str(messy), "--size", "16", "--balance", "weights"])
    assert result.exit_code == 0, result.output
    assert "Prepared 17 images at 16 px" in result.output and "class weight 1.062" in result.output


def _bump(path: Path) -> None:
    """A later modification time, as any edit gives; set explicitly so the test never races the clock's tick."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_a_file_replaced_by_a_corrupt_one_is_skipped_by_name_and_a_repaired_one_is_used(messy: Path) -> None:
    prepare(messy, size=16)
    cat = messy / "raw" / "cats" / "cat 1.jpg"
    good = cat.read_bytes()
    cat.write_bytes(good[:300])
    _bump(cat)
    assert dict(prepare(messy, size=16).skipped)["raw/cats/cat 1.jpg"].startswith("unreadable:")
    cat.write_bytes(good)
    _bump(cat)
    assert "raw/cats/cat 1.jpg" not in dict(prepare(messy, size=16).skipped)
    assert _manifest(messy)["raw/cats/cat 1.jpg"]["status"] == "ok"


def test_a_corrupt_file_with_unchanged_size_and_time_is_a_skip_never_a_traceback(messy: Path) -> None:
    prepare(messy, size=16, balance="weights")
    dog = messy / "raw" / "dogs" / "nested folder" / "dög_2.png"
    st = dog.stat()
    data = bytearray(dog.read_bytes())
    data[60:len(data) - 20] = b"\xff" * (len(data) - 80)  # same size, pixels destroyed
    dog.write_bytes(bytes(data))
    os.utime(dog, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p or a restored backup would leave it
    report = prepare(messy, size=16, balance="weights")
    assert dict(report.skipped)["raw/dogs/nested folder/dög_2.png"].startswith("unreadable:")
    assert report.kept["dogs"] == 8


def test_the_cache_pixels_change_when_a_file_is_replaced_by_another_image(messy: Path) -> None:
    before = load_prepared(messy, 16, balance="weights")
    cat = messy / "raw" / "cats" / "cat 2.jpg"
    Image.new("RGB", (50, 40), (255, 255, 255)).save(cat)
    _bump(cat)
    after = load_prepared(messy, 16, balance="weights")
    i, j = before.ids.tolist().index("raw/cats/cat 2.jpg"), after.ids.tolist().index("raw/cats/cat 2.jpg")
    assert not np.array_equal(before.x[i], after.x[j]) and after.x[j].min() > 240


def test_old_manifests_without_file_stamps_are_described_once_keeping_statuses(messy: Path) -> None:
    prepare(messy, size=16)
    rows = list(_manifest(messy).values())
    rows[0]["status"] = "rejected"
    with open(messy / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[c for c in rows[0] if c not in ("bytes", "mtime_ns")],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    prepare(messy, size=16)
    again = _manifest(messy)
    assert again[rows[0]["path"]]["status"] == "rejected" and all(r["bytes"] and r["mtime_ns"] for r in again.values())


def test_by_default_every_image_is_kept_with_class_weights_and_per_class_alone_undersamples(messy: Path) -> None:
    """The default measured better on the posters (docs/recipes.md); --per-class asks for a size per class."""
    report = prepare(messy, size=16)
    assert report.balance == "weights" and report.kept == {"cats": 8, "dogs": 9}
    assert report.class_weights["cats"] > report.class_weights["dogs"]
    sized = prepare(messy, size=16, per_class=5)
    assert sized.balance == "undersample" and sized.kept == {"cats": 5, "dogs": 5}


def test_a_truncated_cache_is_rebuilt_and_stale_tmp_files_are_removed(messy: Path) -> None:
    load_prepared(messy, 16)
    path = cache_path(messy, 16)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    stale, fresh = messy / "cache" / ".16px.npz.killed.tmp", messy / "cache" / ".16px.npz.running.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    data = load_prepared(messy, 16)
    assert len(data.y) == 17  # every usable image: --balance weights is the default
    with np.load(path) as npz:
        assert npz["x"].shape == data.x.shape
    assert not stale.exists() and fresh.exists()  # a concurrent prepare's own file is left alone


def test_a_name_that_is_not_utf8_put_into_raw_is_skipped_with_the_reason(messy: Path) -> None:
    from tuning.data.dedup import dedup
    from tuning.data.images import SKIP_BAD_NAME
    from tuning.data.stats import dataset_stats

    bad = Path(os.fsdecode(os.path.join(os.fsencode(messy / "raw" / "cats"), b"bad\xffname.jpg")))
    _noise((30, 30), 77).save(bad, "JPEG")
    assert dict(prepare(messy, size=16).skipped)["raw/cats/bad\\xffname.jpg"] == SKIP_BAD_NAME
    (messy / "manifest.csv").read_bytes().decode("utf-8")
    dedup(messy)
    assert dataset_stats(messy).reasons[SKIP_BAD_NAME] == 1


def test_size_must_be_positive_and_per_class_above_a_class_warns(messy: Path) -> None:
    from click.testing import CliRunner

    from tuning.cli import cli

    for size in (0, -3):
        with pytest.raises(DataError, match=f"--size must be a positive number of pixels, got {size}"):
            prepare(messy, size=size)
        result = CliRunner().invoke(cli, ["data", "prepare", str(messy), "--size", str(size)])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and result.output.startswith("Error: ")
    report = prepare(messy, size=16, per_class=9)
    assert report.warnings == ["--per-class 9 is above the 8 usable image(s) of class 'cats': all of them are kept, "
                               "so the classes are not balanced"]
    result = CliRunner().invoke(cli, ["data", "prepare", str(messy), "--size", "16", "--per-class", "9"])
    assert result.exit_code == 0 and "Warning: --per-class 9 is above" in result.output


def test_undersampling_large_groups_still_fills_each_class_and_keeps_groups_whole() -> None:
    """Shows of 4 frames and a class of 6: whole shows while they fit, then part of one, never a short class."""
    from tuning.data.prepare import _balance

    labels = np.array([0] * 12 + [1] * 6)
    groups = np.array([f"show{i // 4}" for i in range(12)] + [f"x{i}" for i in range(6)], dtype=object)
    for seed in range(5):
        keep = _balance(labels, groups, 6, seed)
        assert np.sum(labels[keep] == 0) == 6 and np.sum(labels[keep] == 1) == 6
        kept_shows = groups[keep][labels[keep] == 0]
        counts = sorted(np.unique(kept_shows, return_counts=True)[1].tolist())
        assert counts == [2, 4]  # one whole show, then two frames of another
