"""The one walking rule and the one decoding rule every data step shares, on real files made here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuning.data.images import (
    SKIP_BROKEN_LINK,
    SKIP_HIDDEN,
    SKIP_HIDDEN_FOLDER,
    SKIP_LINK_OUT,
    SKIP_LINKED_FOLDER,
    SKIP_LOOP,
    SKIP_LOOSE,
    SKIP_NOT_IMAGE,
    SKIP_SPECIAL,
    image_files,
    is_utf8,
    load_raw_rgb,
    printable,
    safe_name,
    scan_class_folders,
)


def _png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A class tree holding every kind of entry that is not an image to copy or train on."""
    root = tmp_path / "src"
    _png(root / "cats" / "a.png")
    _png(root / "cats" / "deep" / "b.png", 1)
    _png(root / "dogs" / "c.png", 2)
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0")
    (root / "cats" / "x.jpg").symlink_to(secret)  # a link named like an image, pointing out of the folder
    (root / "cats" / "alias.png").symlink_to(root / "cats" / "a.png")  # inside the folder: a usable image
    (root / "cats" / "loop1.jpg").symlink_to(root / "cats" / "loop2.jpg")
    (root / "cats" / "loop2.jpg").symlink_to(root / "cats" / "loop1.jpg")
    (root / "cats" / "gone.jpg").symlink_to(root / "cats" / "nowhere.jpg")
    (root / "cats" / "linked").symlink_to(root / "dogs", target_is_directory=True)
    (root / "cats" / "up").symlink_to(root, target_is_directory=True)  # would loop for ever if followed
    os.mkfifo(root / "dogs" / "pipe.jpg")  # opening it would block the import for ever
    _png(root / "dogs" / ".thumbnails" / "t.png")
    _png(root / "dogs" / "._c.png")
    (root / "dogs" / "notes.txt").write_text("x")
    _png(root / "loose.png")
    (root / "linked class").symlink_to(root / "dogs", target_is_directory=True)
    return root


def test_walk_keeps_images_and_names_every_skipped_entry_with_its_reason(hostile: Path) -> None:
    scan = scan_class_folders(hostile)
    assert [p.name for p in scan.classes] == ["cats", "dogs"]
    assert [(p.relative_to(hostile).as_posix(), label) for p, label in scan.files] == [
        ("cats/a.png", "cats"), ("cats/alias.png", "cats"), ("cats/deep/b.png", "cats"), ("dogs/c.png", "dogs")]
    assert dict(scan.skipped) == {
        "cats/x.jpg": SKIP_LINK_OUT, "cats/loop1.jpg": SKIP_LOOP, "cats/loop2.jpg": SKIP_LOOP,
        "cats/gone.jpg": SKIP_BROKEN_LINK, "cats/linked": SKIP_LINKED_FOLDER, "cats/up": SKIP_LINKED_FOLDER,
        "dogs/pipe.jpg": SKIP_SPECIAL, "dogs/.thumbnails": SKIP_HIDDEN_FOLDER, "dogs/._c.png": SKIP_HIDDEN,
        "dogs/notes.txt": SKIP_NOT_IMAGE, "loose.png": SKIP_LOOSE, "linked class": SKIP_LINKED_FOLDER,
    }
    assert image_files(hostile / "cats") == [p for p, label in scan.files if label == "cats"]


def test_names_with_bytes_that_are_not_utf8_get_a_safe_unique_name(tmp_path: Path) -> None:
    bad = os.fsdecode(b"bad\xffname.jpg")
    other = os.fsdecode(b"bad\xfename.jpg")
    assert not is_utf8(bad) and is_utf8("été.jpg")
    assert printable(bad) == "bad\\xffname.jpg"
    assert is_utf8(safe_name(bad)) and safe_name(bad).startswith("bad_name-") and safe_name(bad).endswith(".jpg")
    assert safe_name(bad) != safe_name(other) and safe_name(bad) == safe_name(bad)
    assert safe_name("été.jpg") == "été.jpg"
    folder = tmp_path / "cats"
    folder.mkdir()
    _png(Path(os.fsdecode(os.path.join(os.fsencode(folder), b"bad\xffname.png"))))
    assert [p.name for p in image_files(folder)] == [os.fsdecode(b"bad\xffname.png")]  # found; callers decide


def _saved(tmp_path: Path, name: str, array: np.ndarray) -> Path:
    path = tmp_path / name
    Image.fromarray(array).save(path)
    return path


def test_12_bit_data_in_a_16_bit_png_is_scaled_by_4095(tmp_path: Path) -> None:
    ramp = np.array([[0, 1024, 2048, 4095]], dtype=np.uint16)
    path = _saved(tmp_path, "sensor.png", ramp)
    assert Image.open(path).mode.startswith("I")
    assert load_raw_rgb(path)[0, :, 0].tolist() == [0, 64, 128, 255]
    full = _saved(tmp_path, "full.png", np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert load_raw_rgb(full)[0, :, 0].tolist() == [0, 128, 255]
    eight = _saved(tmp_path, "eight.png", np.array([[0, 100, 255]], dtype=np.uint16))
    assert load_raw_rgb(eight)[0, :, 0].tolist() == [0, 100, 255]


def test_int32_images_in_16_bit_range_scale_and_others_are_refused(tmp_path: Path) -> None:
    ten_bit = _saved(tmp_path, "ten.tif", np.array([[0, 512, 1023]], dtype=np.int32))
    assert Image.open(ten_bit).mode == "I"
    assert load_raw_rgb(ten_bit)[0, :, 0].tolist() == [0, 128, 255]
    labels = _saved(tmp_path, "labels.tif", np.array([[-5, 0, 70000]], dtype=np.int32))
    with pytest.raises(ValueError, match=r"values -5\.\.70000: outside 0\.\.65535"):
        load_raw_rgb(labels)


def test_float_images_scale_from_0_1_or_0_255_and_nan_or_odd_ranges_are_refused(tmp_path: Path) -> None:
    unit = _saved(tmp_path, "unit.tif", np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert Image.open(unit).mode == "F"
    assert load_raw_rgb(unit)[0, :, 0].tolist() == [0, 128, 255]
    bytes_ = _saved(tmp_path, "bytes.tif", np.array([[0.0, 100.0, 255.0]], dtype=np.float32))
    assert load_raw_rgb(bytes_)[0, :, 0].tolist() == [0, 100, 255]
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_raw_rgb(_saved(tmp_path, "nan.tif", np.array([[0.0, np.nan]], dtype=np.float32)))
    with pytest.raises(ValueError, match=r"values -1\.\.300: not 0\.\.1 or 0\.\.255"):
        load_raw_rgb(_saved(tmp_path, "hdr.tif", np.array([[-1.0, 300.0]], dtype=np.float32)))
