"""Tests for the built-in demo dataset: layout, determinism, atomic writing and 'learnable, not by colour'."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuning.data.demo import CLASSES, DemoResult, make_demo
from tuning.errors import DataError

SIZE = 64


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _files(root: Path) -> list[tuple[int, int, Path]]:
    """(class index, image index within class, path) for every image."""
    out: list[tuple[int, int, Path]] = []
    for ci, name in enumerate(CLASSES):
        out += [(ci, j, p) for j, p in enumerate(sorted((root / name).iterdir()))]
    return out


def test_layout_sizes_and_formats(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = make_demo(out, per_class=12, size=SIZE, seed=3)
    assert isinstance(result, DemoResult)
    assert result.out == out
    assert result.counts == {name: 12 for name in CLASSES}
    assert sorted(p.name for p in out.iterdir()) == sorted(CLASSES)
    suffixes: set[str] = set()
    shapes: set[tuple[int, int]] = set()
    for name in CLASSES:
        files = sorted((out / name).iterdir())
        assert len(files) == 12
        for p in files:
            assert p.name.startswith(f"{name.lower()}_")
            suffixes.add(p.suffix)
            with Image.open(p) as im:
                im.load()
                assert im.mode == "RGB"
                assert min(im.size) >= SIZE
                shapes.add(im.size)
    assert ".jpg" in suffixes
    assert suffixes <= {".jpg", ".png"}
    assert len(shapes) > 1, "aspect ratio should vary so the resize step is exercised"


def test_both_formats_appear(tmp_path: Path) -> None:
    out = make_demo(tmp_path / "demo", per_class=30, size=32, seed=0).out
    suffixes = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert suffixes == {".jpg", ".png"}


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = _hashes(make_demo(tmp_path / "a", per_class=6, size=SIZE, seed=7).out)
    b = _hashes(make_demo(tmp_path / "b", per_class=6, size=SIZE, seed=7).out)
    c = _hashes(make_demo(tmp_path / "c", per_class=6, size=SIZE, seed=8).out)
    assert a == b
    assert len(a) == 18
    assert set(a.values()).isdisjoint(c.values())


def test_image_does_not_depend_on_count(tmp_path: Path) -> None:
    """Each image has its own RNG, so a bigger set starts with the same images."""
    small = _hashes(make_demo(tmp_path / "small", per_class=3, size=SIZE, seed=1).out)
    big = _hashes(make_demo(tmp_path / "big", per_class=6, size=SIZE, seed=1).out)
    assert all(big[k] == v for k, v in small.items())


def test_refuses_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists"):
        make_demo(out, per_class=2, size=SIZE)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_refuses_existing_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    with pytest.raises(DataError, match="already exists"):
        make_demo(out, per_class=2, size=SIZE)
    assert list(out.iterdir()) == []


def test_no_temp_left_and_parent_created(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "deeper" / "demo"
    make_demo(out, per_class=2, size=SIZE)
    assert [p.name for p in out.parent.iterdir()] == ["demo"]


def test_temp_removed_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tuning.data.demo as demo

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "_render", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        make_demo(tmp_path / "demo", per_class=2, size=SIZE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"per_class": 0}, "--per-class"),
        ({"per_class": -3}, "--per-class"),
        ({"size": 31}, "--size"),
        ({"size": 0}, "--size"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict[str, int], option: str) -> None:
    with pytest.raises(DataError, match=option):
        make_demo(tmp_path / "demo", **kwargs)
    assert list(tmp_path.iterdir()) == []


def _nearest_centroid_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    """Fit class means on the train half (features z-scored by train stats), score the other half."""
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
    z = (x - mu) / sd
    centroids = np.stack([z[train & (y == k)].mean(0) for k in range(len(CLASSES))])
    test = ~train
    pred = np.argmin(((z[test][:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == y[test]).mean())


def test_not_one_colour_per_class_but_learnable_from_structure(tmp_path: Path) -> None:
    out = make_demo(tmp_path / "demo", per_class=60, size=SIZE, seed=0).out
    colour, texture, labels, train = [], [], [], []
    for ci, j, p in _files(out):
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"), np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        gx, gy = np.abs(np.diff(gray, axis=1)), np.abs(np.diff(gray, axis=0))
        edges = float(((gx[:-1, :] + gy[:, :-1]) > 40).mean())
        colour.append(rgb.reshape(-1, 3).mean(0))
        texture.append([gx.mean() + gy.mean(), gray.std(), edges])
        labels.append(ci)
        train.append(j % 2 == 0)
    y, is_train = np.array(labels), np.array(train)
    colour_acc = _nearest_centroid_accuracy(np.array(colour), y, is_train)
    texture_acc = _nearest_centroid_accuracy(np.array(texture), y, is_train)
    assert colour_acc < 0.75, f"mean colour gives the class away ({colour_acc:.2f})"
    assert texture_acc > 0.6, f"classes not learnable from structure ({texture_acc:.2f})"
    assert texture_acc > colour_acc + 0.2


# ----- families (--groups) -------------------------------------------------------------------------------
def _pixels(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, groups = [], [], []
    for ci, name in enumerate(CLASSES):
        for p in sorted((root / name).rglob("*.*")):
            with Image.open(p) as im:
                x.append(np.asarray(im.convert("RGB").resize((16, 16)), np.float32).ravel())
            y.append(ci)
            groups.append(p.parent.name)
    return np.array(x), np.array(y), np.array(groups, dtype=object)


def test_groups_write_families_in_sub_folders_deterministically(tmp_path: Path) -> None:
    out = make_demo(tmp_path / "a", per_class=14, size=32, seed=2, family_size=5).out
    for name in CLASSES:
        families = sorted(p.name for p in (out / name).iterdir())
        assert families == [f"{name.lower()}_family_00{i}" for i in (1, 2, 3)]
        assert [len(list((out / name / f).iterdir())) for f in families] == [5, 5, 4]
    assert _hashes(out) == _hashes(make_demo(tmp_path / "b", per_class=14, size=32, seed=2, family_size=5).out)


def test_a_random_split_rewards_memorising_families_and_a_group_split_does_not(tmp_path: Path) -> None:
    """The point of --groups: 1-nearest-neighbour on raw pixels finds a sibling of each test image when its
    family is on both sides (a random split), and falls to about chance when families are kept apart."""
    from tuning.data.splits import TEST, assign_splits

    x, y, groups = _pixels(make_demo(tmp_path / "d", per_class=60, size=32, seed=0, family_size=6).out)

    def nearest_neighbour_accuracy(codes: np.ndarray) -> float:
        train, test = codes != TEST, codes == TEST
        d = ((x[test][:, None, :] - x[train][None, :, :]) ** 2).sum(-1)
        return float((y[train][d.argmin(1)] == y[test]).mean())

    alone = np.array([str(i) for i in range(len(y))], dtype=object)
    random_split = np.mean([nearest_neighbour_accuracy(assign_splits(y, alone, "60/20/20", seed=s)) for s in range(3)])
    group_split = np.mean([nearest_neighbour_accuracy(assign_splits(y, groups, "60/20/20", seed=s)) for s in range(3)])
    assert random_split > 0.6, random_split
    assert group_split < 0.5, group_split
    assert random_split > group_split + 0.2


def test_cli_demo_groups_then_prepare_group_by_folder(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tuning.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["data", "demo", "--out", str(tmp_path / "d"), "--per-class", "12", "--size", "32",
                              "--groups", "--family-size", "4"])
    assert out.exit_code == 0, out.output
    assert f"group them with: tuning data prepare {tmp_path / 'd'} --group-by folder" in out.output
    out = runner.invoke(cli, ["data", "prepare", str(tmp_path / "d"), "--size", "32", "--group-by", "folder"])
    assert out.exit_code == 0, out.output
    assert "Grouped by folder: 36 file(s) in 9 group(s)" in out.output  # 3 families per class
    bad = runner.invoke(cli, ["data", "demo", "--out", str(tmp_path / "e"), "--groups", "--family-size", "0"])
    assert bad.exit_code == 2 and "--family-size" in bad.output
