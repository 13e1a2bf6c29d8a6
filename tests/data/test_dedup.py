from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from tests.data._pictures import picture
from tuning.cli import cli
from tuning.data.dedup import dedup, duplicate_pairs, near_pairs
from tuning.data.hashing import HASH_KINDS, hash_files
from tuning.data.manifest import read_manifest, write_manifest
from tuning.data.prepare import prepare
from tuning.errors import DataError, UnknownNameError


def _edits(img: Image.Image) -> dict[str, tuple[Image.Image, dict[str, object]]]:
    w, h = img.size
    marked = img.copy()
    ImageDraw.Draw(marked).text((8, h - 20), "(c) sample", fill=(255, 255, 255))
    return {
        "resized.jpg": (img.resize((w // 2, h // 2), Image.Resampling.LANCZOS), {}),
        "recompressed.jpg": (img, {"quality": 40}),
        "converted.webp": (img, {}),
        "cropped.png": (img.crop((4, 3, w - 4, h - 3)), {}),
        "brighter.png": (ImageEnhance.Brightness(img).enhance(1.3), {}),
        "watermarked.jpg": (marked, {"quality": 90}),
        "mirrored.png": (ImageOps.mirror(img), {}),
    }


@pytest.fixture
def edited(tmp_path: Path) -> Path:
    """raw/a: one original with seven edited copies, a byte-identical copy, and unrelated pictures."""
    root = tmp_path / "edited"
    a, b = root / "raw" / "a", root / "raw" / "b" / "deep folder"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    original = picture(1)
    original.save(a / "poster.png")
    for name, (img, options) in _edits(original).items():
        img.save(a / name, **options)
    shutil.copyfile(a / "poster.png", b / "same bytes.png")
    for i in range(2, 8):
        picture(i).save((a if i % 2 else b) / f"other {i}.png")
    picture(9).save(a / "other 9.png")
    return root


def _rows(root: Path) -> dict[str, dict[str, str]]:
    return {r["path"]: r for r in read_manifest(root)}


def test_edited_copies_and_mirrors_are_one_group_that_keeps_the_largest(edited: Path) -> None:
    report = dedup(edited)
    rows = _rows(edited)
    kept = "raw/a/poster.png"
    members = {"raw/a/" + name for name in _edits(picture(1))} | {"raw/b/deep folder/same bytes.png"}
    assert rows[kept]["status"] == "ok" and rows[kept]["group"] == kept
    for path in members:
        assert rows[path]["status"] == f"duplicate-of:{kept}", path
        assert rows[path]["group"] == kept
    others = [p for p in rows if "other" in p]
    assert len(others) == 7
    for path in others:
        assert rows[path]["status"] == "ok" and rows[path]["group"] == path, path
    assert report.near_groups == 1 and report.exact_groups == 0 and report.duplicates == len(members)
    assert report.groups[0].labels == ("a", "b")


def test_exact_copies_alone_are_an_exact_group_and_statuses_of_people_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for label in ("x", "y"):
        (root / "raw" / label).mkdir(parents=True)
    picture(1).save(root / "raw" / "x" / "a.png")
    shutil.copyfile(root / "raw" / "x" / "a.png", root / "raw" / "x" / "a longer name.png")
    picture(2).save(root / "raw" / "y" / "b.png")
    picture(2).resize((80, 60)).save(root / "raw" / "y" / "b small.png")
    (root / "raw" / "y" / "broken.png").write_bytes(b"\x89PNG not really")
    report = dedup(root)
    assert report.exact_groups == 1 and report.near_groups == 1
    rows = read_manifest(root)
    for row in rows:
        if row["path"] == "raw/y/b.png":
            row["status"] = "rejected"
    write_manifest(root, rows)
    assert dedup(root).hashed == 0  # every hash comes from cache/hashes-phash-v2.npz, keyed by SHA-256
    rows_now = _rows(root)
    assert rows_now["raw/y/b.png"]["status"] == "rejected"
    assert rows_now["raw/y/b small.png"]["status"] == "ok"  # its kept image was rejected by a person
    assert rows_now["raw/y/broken.png"]["status"].startswith("unreadable:")
    assert rows_now["raw/x/a longer name.png"]["status"] == "duplicate-of:raw/x/a.png"


def test_prepare_keeps_the_groups_dedup_made(edited: Path) -> None:
    dedup(edited)
    before = {p: (r["status"], r["group"]) for p, r in _rows(edited).items()}
    picture(1).save(edited / "raw" / "b" / "late copy.png")  # new byte-identical copy of the kept original
    prepare(edited, size=16)
    after = _rows(edited)
    for path, (status, group) in before.items():
        assert (after[path]["status"], after[path]["group"]) == (status, group), path
    late = after["raw/b/late copy.png"]
    assert late["sha256"] == after["raw/a/poster.png"]["sha256"]
    assert late["status"] == "duplicate-of:raw/a/poster.png" and late["group"] == "raw/a/poster.png"


@pytest.mark.parametrize("kind", HASH_KINDS)
def test_every_hash_groups_copies_and_the_fine_ones_keep_different_pictures_apart(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "d"
    for label in ("x", "y"):
        (root / "raw" / label).mkdir(parents=True)
    for i in range(10):
        picture(100 + i).save(root / "raw" / ("x" if i % 2 else "y") / f"{i}.png")
    picture(100).save(root / "raw" / "x" / "copy.jpg", quality=95)
    report = dedup(root, kind=kind)
    assert report.hash == kind
    assert any(g.kept == "raw/y/0.png" and "raw/x/copy.jpg" in g.duplicates for g in report.groups)
    if kind in ("phash", "dhash"):  # the coarse hashes (ahash, whash, colorhash) may join plain gradients
        assert len(report.groups) == 1, report.groups


def test_unknown_hash_and_bad_threshold_are_one_line_errors(edited: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown hash 'md5'; known: ahash, colorhash, dhash, phash, whash"):
        dedup(edited, kind="md5")
    with pytest.raises(DataError, match="--threshold must be between 0 and 32"):
        dedup(edited, threshold=40)


def _planted(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    for i in range(0, 200, 2):
        flips = rng.choice(64, int(rng.integers(0, k + 1)), replace=False)
        h[i + 1] = h[i] ^ np.uint64(sum(1 << int(f) for f in flips))
    return h


def _brute(a: np.ndarray, b: np.ndarray, k: int, *, upper: bool) -> set[tuple[int, int]]:
    d = np.bitwise_count(a[:, None] ^ b[None, :])
    q, i = np.nonzero(d <= k)
    return {(x, y) for x, y in zip(q.tolist(), i.tolist()) if not upper or x < y}


@pytest.mark.parametrize("k", [0, 3, 10, 16])
def test_pair_search_finds_exactly_the_pairs_a_double_loop_finds(k: int) -> None:
    h = _planted(1500, k, seed=k)
    got = {tuple(p) for p in near_pairs(h, threshold=k).tolist()}
    assert got == _brute(h, h, k, upper=True)
    assert len(got) >= 100
    other = _planted(700, k, seed=k + 1)
    assert {tuple(p) for p in near_pairs(other, h, threshold=k).tolist()} == _brute(other, h, k, upper=False)


def test_pair_search_bounds_memory_with_huge_buckets() -> None:
    h = np.zeros(600, dtype=np.uint64)  # every hash equal: one bucket of 600
    pairs = near_pairs(h, threshold=2, max_candidates=1000)
    assert len(pairs) == 600 * 599 // 2


def test_mirror_hashes_join_pairs_in_both_directions() -> None:
    h = np.array([0, 2**64 - 1, 0x0F0F], dtype=np.uint64)
    flipped = np.array([2**64 - 1, 0xFFFF, 0xF0F0], dtype=np.uint64)
    assert duplicate_pairs(h, flipped, threshold=1).tolist() == [[0, 1]]
    assert duplicate_pairs(h, None, threshold=1).tolist() == []


def test_two_processes_hash_like_one(tmp_path: Path) -> None:
    files = []
    for i in range(50):
        files.append(tmp_path / f"{i}.png")
        picture(i, (64, 48)).save(files[-1])
    (tmp_path / "bad.jpg").write_text("nope")
    files.append(tmp_path / "bad.jpg")
    one = hash_files(files, workers=1)
    two = hash_files(files, workers=2)
    assert one == two and isinstance(two[-1], str) and all(isinstance(r, tuple) for r in two[:-1])


def test_cli_dedup_json_lists_groups(edited: Path) -> None:
    result = CliRunner().invoke(cli, ["data", "dedup", str(edited), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["near_groups"] == 1 and summary["threshold"] == 10 and summary["hash"] == "phash"
    assert summary["groups"][0]["kept"] == "raw/a/poster.png"
    result = CliRunner().invoke(cli, ["data", "dedup", str(edited), "--hash", "dhash", "--threshold", "40"])
    assert result.exit_code == 1 and result.output == "Error: --threshold must be between 0 and 32 bits, got 40\n"
    result = CliRunner().invoke(cli, ["data", "dedup", str(edited)])
    assert result.exit_code == 0 and "0 byte-identical group(s), 1 near-duplicate group(s)" in result.output


def test_fast_phash_is_bit_identical_to_imagehash_for_the_image_and_its_mirror() -> None:
    import imagehash

    from tuning.data.hashing import _to_uint, phash_pair

    for seed in range(12):
        img = picture(seed, (97 + seed, 131))
        value, flipped = phash_pair(img)
        assert value == _to_uint(imagehash.phash(img))
        assert flipped == _to_uint(imagehash.phash(ImageOps.mirror(img)))


def _cut(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(left * w), round(top * h), w - round(right * w), h - round(bottom * h)))


#: Crops of up to 10% per side: one-sided, all sides, off-centre (the cases section 4 of issue #12 names).
CROPS = {
    "left 10%.png": (0.1, 0, 0, 0), "top 10%.jpg": (0, 0.1, 0, 0), "right 10%.png": (0, 0, 0.1, 0),
    "bottom 10%.png": (0, 0, 0, 0.1), "all sides 10%.png": (0.05, 0.05, 0.05, 0.05),
    "each side 10%.jpg": (0.1, 0.1, 0.1, 0.1), "left and top 10%.png": (0.1, 0.1, 0, 0),
    "off centre.png": (0.07, 0.02, 0, 0.05),
}


@pytest.fixture
def cropped(tmp_path: Path) -> Path:
    """raw/a: one original and its crops; raw/b: pictures on the original's gradient with other shapes."""
    root = tmp_path / "cropped"
    (root / "raw" / "a").mkdir(parents=True)
    (root / "raw" / "b").mkdir(parents=True)
    original = picture(1, (240, 320))
    original.save(root / "raw" / "a" / "poster.png")
    for name, box in CROPS.items():
        _cut(original, *box).save(root / "raw" / "a" / name, **({"quality": 90} if name.endswith(".jpg") else {}))
    for i in range(6):
        picture(1, (240, 320), shapes=50 + i).save(root / "raw" / "b" / f"similar {i}.png")
    return root


def test_crops_up_to_ten_percent_from_any_side_join_their_original_and_similar_colours_do_not(cropped: Path) -> None:
    report = dedup(cropped)
    rows = _rows(cropped)
    for name in CROPS:
        assert rows[f"raw/a/{name}"]["status"] == "duplicate-of:raw/a/poster.png", name
    for i in range(6):
        assert rows[f"raw/b/similar {i}.png"]["status"] == "ok", i
    assert report.near_groups == 1 and report.crops and report.crop_joined >= 1
    assert report.crop_checked >= report.crop_joined


def test_crops_far_from_the_whole_hash_need_the_crop_check_and_no_crops_turns_it_off(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "raw" / "a").mkdir(parents=True)
    original = picture(1, (240, 320))
    original.save(root / "raw" / "a" / "poster.png")
    for name in ("left and top 10%.png", "each side 10%.jpg"):  # 20 and 22 bits from the whole poster's phash
        _cut(original, *CROPS[name]).save(root / "raw" / "a" / name)
    result = CliRunner().invoke(cli, ["data", "dedup", str(root), "--no-crops", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["crops"] is False and summary["crop_checked"] == 0 and summary["near_groups"] == 0
    report = dedup(root)
    assert report.near_groups == 1 and report.duplicates == 2
    assert report.crop_joined == report.crop_checked >= 2  # each crop with the whole (and maybe with each other)
    result = CliRunner().invoke(cli, ["data", "dedup", str(root)])
    n = report.crop_checked
    assert result.exit_code == 0 and f"crops: {n} of {n} candidate pair(s) joined" in result.output, result.output


def test_window_hashes_are_cached_by_sha256(cropped: Path) -> None:
    from tuning.data.hashing import WINDOWS

    first = dedup(cropped)
    cache = cropped / "cache" / "hashes-phash-v2.npz"
    with np.load(cache) as npz:
        assert npz["windows"].shape == (len(npz["sha256"]), len(WINDOWS)) == (15, 80)
        assert npz["windows"].dtype == np.uint64 and len(np.unique(npz["windows"][0])) > 10
    again = dedup(cropped)
    assert first.hashed == 15 and again.hashed == 0
    assert [g.duplicates for g in again.groups] == [g.duplicates for g in first.groups]
    with np.load(cache) as npz:  # a cache without window hashes (an older or damaged file) is hashed again
        np.savez(cache, sha256=npz["sha256"], hash=npz["hash"], mirror=npz["mirror"],
                 windows=np.zeros((15, 0), dtype=np.uint64))
    assert dedup(cropped).hashed == 15


def test_crop_check_skips_a_file_that_no_longer_decodes(tmp_path: Path) -> None:
    from tuning.data.dedup import check_crops

    whole = picture(2, (240, 320))
    whole.save(tmp_path / "whole.png")
    _cut(whole, 0.1, 0, 0, 0).save(tmp_path / "crop.png")
    (tmp_path / "gone.png").write_bytes(b"\x89PNG truncated since it was hashed")
    joined, scores = check_crops(np.array([[0, 1], [0, 2]]), [tmp_path / n for n in ("whole.png", "crop.png",
                                                                                       "gone.png")])
    assert joined.tolist() == [[0, 1]] and scores[0] >= 0.97 and scores[1] == -1.0
