from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tuning.cli import cli
from tuning.data.images import SKIP_HIDDEN_FOLDER, SKIP_LINK_OUT, SKIP_LINKED_FOLDER, SKIP_LOOP, SKIP_SPECIAL
from tuning.data.importer import SKIP_CONFLICT, SKIP_HIDDEN, SKIP_LOOSE, SKIP_NOT_IMAGE, import_folder
from tuning.data.manifest import read_manifest
from tuning.data.prepare import load_prepared, prepare
from tuning.errors import DataError

FORMATS = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP", ".tiff": "TIFF"}


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A person's folder: classes with nested show/film folders, every format, odd names and some clutter."""
    src = tmp_path / "My Pictures"
    for i, (suffix, fmt) in enumerate(FORMATS.items()):
        folder = src / "Action" / ("Die Hard" if i % 2 else "Léon (1994)") / "stills"
        folder.mkdir(parents=True, exist_ok=True)
        _image(i).save(folder / f"frame {i}{suffix}", fmt)
    (src / "Romance" / "Amélie").mkdir(parents=True)
    for i in range(3):
        _image(10 + i).save(src / "Romance" / "Amélie" / f"été {i}.JPG", "JPEG")
    (src / "Romance" / "notes.txt").write_text("not an image")
    (src / "Romance" / ".DS_Store").write_bytes(b"\0\0")
    (src / "Romance" / "broken.png").write_text("not really a png")
    (src / "Empty class" / "sub").mkdir(parents=True)
    (src / "loose.jpg").write_bytes(b"")
    return src


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_import_copies_every_image_keeping_sub_paths_and_never_touches_the_source(source: Path,
                                                                                   tmp_path: Path) -> None:
    before = _snapshot(source)
    calls: list[tuple[int, int]] = []
    report = import_folder(source, tmp_path / "ds", progress=lambda i, n: calls.append((i, n)))
    assert _snapshot(source) == before
    assert report.copied == {"Action": 6, "Empty class": 0, "Romance": 4}
    assert report.empty_classes == ["Empty class"]
    assert dict(report.reasons()) == {SKIP_LOOSE: 1, SKIP_NOT_IMAGE: 1, SKIP_HIDDEN: 1}
    assert calls[-1] == (10, 10)
    raw = tmp_path / "ds" / "raw"
    assert (raw / "Action" / "Léon (1994)" / "stills" / "frame 0.jpg").read_bytes() == \
        (source / "Action" / "Léon (1994)" / "stills" / "frame 0.jpg").read_bytes()
    assert (raw / "Romance" / "Amélie" / "été 2.JPG").is_file()
    rows = {r["path"]: r for r in read_manifest(tmp_path / "ds")}
    assert len(rows) == 10
    assert rows["raw/Action/Die Hard/stills/frame 3.gif"]["status"] == "ok"
    assert rows["raw/Action/Die Hard/stills/frame 5.tiff"]["label"] == "Action"
    assert rows["raw/Romance/broken.png"]["status"].startswith("unreadable:")
    assert report.unreadable[0][0] == "raw/Romance/broken.png"


def test_a_second_import_skips_what_is_there_and_resumes_the_rest(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    import_folder(source, out)
    (out / "raw" / "Romance" / "Amélie" / "été 0.JPG").unlink()  # as if the first run was killed before it
    changed = out / "raw" / "Romance" / "Amélie" / "été 1.JPG"
    changed.write_bytes(b"edited by hand")
    report = import_folder(source, out)
    assert report.copied == {"Action": 0, "Empty class": 0, "Romance": 1}
    assert report.present == {"Action": 6, "Empty class": 0, "Romance": 2}
    assert report.reasons()[SKIP_CONFLICT] == 1
    assert changed.read_bytes() == b"edited by hand"  # a file someone changed is never overwritten
    assert not [p for p in out.rglob("*.tmp")]


def test_fewer_than_two_classes_or_out_inside_source_are_one_line_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "only").mkdir(parents=True)
    _image(0).save(src / "only" / "a.png")
    with pytest.raises(DataError, match=r"found 1 class folder\(s\) \(only\); put each class's images in its own"):
        import_folder(src, tmp_path / "out")
    with pytest.raises(DataError, match="no such folder"):
        import_folder(tmp_path / "missing", tmp_path / "out")
    (src / "other").mkdir()
    with pytest.raises(DataError, match="must be outside"):
        import_folder(src, src / "dataset")


@pytest.mark.readonly
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders, so nothing would fail")
def test_unwritable_out_is_a_one_line_error(source: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(DataError, match="choose a writable"):
            import_folder(source, locked / "ds")
    finally:
        locked.chmod(0o755)


def test_cli_import_prints_counts_per_class_and_skip_reasons(source: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["data", "import", str(source), "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "Imported 10 new image(s)" in result.output
    assert "Action" in result.output and "class folder 'Empty class' has no image file" in result.output
    assert SKIP_NOT_IMAGE in result.output and "Skipped 3 file(s)" in result.output
    result = CliRunner().invoke(cli, ["data", "import", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and result.output.startswith("Error: ")


def _bytes_path(folder: Path, name: bytes) -> Path:
    """A path whose last name holds raw bytes (``b"bad\\xffname.jpg"``), as the OS gives it to Python."""
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


def test_links_out_of_the_source_loops_fifos_and_linked_folders_are_skipped_with_reasons(source: Path,
                                                                                         tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash")
    action = source / "Action"
    (action / "x.jpg").symlink_to(secret)
    (action / "loop.jpg").symlink_to(action / "loop.jpg")
    (action / "more").symlink_to(source / "Romance", target_is_directory=True)
    os.mkfifo(action / "pipe.png")
    report = import_folder(source, tmp_path / "ds")
    raw = tmp_path / "ds" / "raw" / "Action"
    assert not (raw / "x.jpg").exists() and not (raw / "more").exists()
    assert report.copied["Action"] == 6
    reasons = dict(report.skipped)
    assert reasons["Action/x.jpg"] == SKIP_LINK_OUT and reasons["Action/loop.jpg"] == SKIP_LOOP
    assert reasons["Action/more"] == SKIP_LINKED_FOLDER and reasons["Action/pipe.png"] == SKIP_SPECIAL
    assert "root:x" not in "".join(p.read_text(errors="replace") for p in raw.rglob("*") if p.is_file())
    result = CliRunner().invoke(cli, ["data", "import", str(source), "--out", str(tmp_path / "ds2")])
    assert result.exit_code == 0, result.output
    assert SKIP_LINK_OUT in result.output and SKIP_SPECIAL in result.output and "Skipped 7 file(s)" in result.output


def test_a_name_that_is_not_utf8_is_copied_under_a_safe_name_and_every_step_works(source: Path,
                                                                                  tmp_path: Path) -> None:
    _image(40).save(_bytes_path(source / "Action", b"bad\xffname.jpg"), "JPEG")
    out = tmp_path / "ds"
    report = import_folder(source, out)
    assert report.copied["Action"] == 7
    [(old, new)] = report.renamed
    assert old == "Action/bad\\xffname.jpg" and new.startswith("raw/Action/bad_name-") and new.endswith(".jpg")
    assert (out / new).read_bytes() == _bytes_path(source / "Action", b"bad\xffname.jpg").read_bytes()
    (out / "manifest.csv").read_bytes().decode("utf-8")  # valid UTF-8, and it names the copy
    assert {r["path"]: r["status"] for r in read_manifest(out)}[new] == "ok"
    assert import_folder(source, out).present["Action"] == 7  # the safe name is stable: a rerun resumes
    result = CliRunner().invoke(cli, ["data", "import", str(source), "--out", str(tmp_path / "ds2")])
    assert result.exit_code == 0, result.output
    assert "Renamed 1 file(s) whose name was not valid UTF-8" in result.output and "bad\\xffname.jpg" in result.output
    assert prepare(out, size=8, balance="weights").kept == {"Action": 7, "Romance": 3}
    assert new in load_prepared(out, 8).ids.tolist()


def test_hidden_folders_and_loose_files_are_skipped_alike_by_import_and_prepare(source: Path,
                                                                                tmp_path: Path) -> None:
    _image(50).save(source / "Romance" / "Amélie" / "a.png")
    (source / "Romance" / ".thumbnails").mkdir()
    _image(51).save(source / "Romance" / ".thumbnails" / "t.png")
    out = tmp_path / "ds"
    imported = dict(import_folder(source, out).skipped)
    assert imported["Romance/.thumbnails"] == SKIP_HIDDEN_FOLDER and imported["loose.jpg"] == SKIP_LOOSE
    # the same clutter put into raw/ by hand is skipped by prepare for the same reasons
    shutil.copytree(source / "Romance" / ".thumbnails", out / "raw" / "Romance" / ".thumbnails")
    (out / "raw" / "loose.jpg").write_bytes(b"")
    report = prepare(out, size=8)
    prepared = dict(report.skipped)
    assert prepared["raw/Romance/.thumbnails"] == SKIP_HIDDEN_FOLDER and prepared["raw/loose.jpg"] == SKIP_LOOSE
    assert imported["Romance/notes.txt"] == SKIP_NOT_IMAGE
    assert not [r for r in read_manifest(out) if ".thumbnails" in r["path"]]


def test_cli_import_names_each_conflicting_file(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    import_folder(source, out)
    (out / "raw" / "Romance" / "Amélie" / "été 1.JPG").write_bytes(b"edited by hand")
    result = CliRunner().invoke(cli, ["data", "import", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert ("not copied: Romance/Amélie/été 1.JPG (a different file is already at raw/Romance/Amélie/été 1.JPG; "
            "rename one of them)") in result.output
