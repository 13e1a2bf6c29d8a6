from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tuning.cli import cli
from tuning.data.manifest import read_manifest, write_manifest
from tuning.data.stats import dataset_stats


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, sizes in (("cats", [(40, 30), (60, 50), (80, 20)]), ("dogs", [(30, 30), (50, 70)])):
        (root / "raw" / label).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "raw" / label / f"{i}.png")
    shutil.copyfile(root / "raw" / "cats" / "0.png", root / "raw" / "cats" / "0 copy.png")
    (root / "raw" / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "raw" / "dogs" / "text.jpg").write_text("no")
    (root / "raw" / "birds").mkdir()
    return root


def test_stats_count_classes_statuses_sizes_and_reasons(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d")
    st = dataset_stats(root)
    assert st.built_manifest and st.files == 8
    assert st.per_class == {"birds": {"files": 0, "ok": 0, "groups": 0, "largest_group_share": 0.0},
                            "cats": {"files": 4, "ok": 3, "groups": 3, "largest_group_share": pytest.approx(1 / 3)},
                            "dogs": {"files": 4, "ok": 2, "groups": 2, "largest_group_share": 0.5}}
    assert st.per_status == {"ok": 5, "unreadable": 2, "duplicate": 1}
    assert st.reasons == {"empty file": 1, "not an image (unknown format)": 1, "duplicate": 1}
    assert st.sizes is not None
    assert st.sizes.width == (30, 50, 80) and st.sizes.height == (20, 30, 70)
    assert st.duplicate_groups == 1
    rows = read_manifest(root)
    rows[0]["status"] = "rejected"
    write_manifest(root, rows)
    assert dataset_stats(root).per_status["rejected"] == 1 and not dataset_stats(root).built_manifest


def test_cli_stats_prints_json_and_a_table(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d")
    result = CliRunner().invoke(cli, ["data", "stats", str(root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["per_class"]["cats"]["ok"] == 3 and data["sizes"]["width"] == {"min": 30, "median": 50, "max": 80}
    result = CliRunner().invoke(cli, ["data", "stats", str(root)])
    assert result.exit_code == 0 and "Size (min/median/max): width 30/50/80, height 20/30/70 px" in result.output
    assert "Skipped 3 file(s)" in result.output
    result = CliRunner().invoke(cli, ["data", "stats", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no such dataset folder" in result.output


def test_stats_rescan_raw_instead_of_reading_a_stale_manifest(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d")
    dataset_stats(root)
    Image.new("RGB", (10, 10)).save(root / "raw" / "dogs" / "new.png")
    (root / "raw" / "cats" / ".DS_Store").write_bytes(b"\0")
    st = dataset_stats(root)
    assert st.files == 9 and st.per_class["dogs"]["ok"] == 3 and st.reasons["hidden file"] == 1


def test_stats_show_groups_per_class_and_the_largest_groups_share(tmp_path: Path) -> None:
    """Source groups (one show of 5 frames, two of 1) and whether a split can keep shows apart."""
    rng = np.random.default_rng(1)
    root = tmp_path / "d"
    layout = {"drama": {"big show": 5, "small": 1, "tiny": 1}, "comedy": {"a": 2, "b": 2, "c": 2}}
    for label, shows in layout.items():
        for show, n in shows.items():
            (root / "raw" / label / show).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)).save(
                    root / "raw" / label / show / f"{i}.png")
    st = dataset_stats(root)
    assert not st.source_grouped
    assert st.per_class["drama"]["groups"] == 7  # without --group-by every frame stands alone
    result = CliRunner().invoke(cli, ["data", "prepare", str(root), "--size", "8", "--group-by", "folder"])
    assert result.exit_code == 0, result.output
    st = dataset_stats(root)
    assert st.source_grouped
    assert st.per_class["drama"]["groups"] == 3
    assert st.per_class["drama"]["largest_group_share"] == pytest.approx(5 / 7)
    assert st.per_class["comedy"]["largest_group_share"] == pytest.approx(1 / 3)
    out = CliRunner().invoke(cli, ["data", "stats", str(root)])
    assert "Groups: source groups (--group-by) merged with near duplicates" in out.output
    assert out.output.count("71.4%") == 1 and " drama " in out.output
    as_json = json.loads(CliRunner().invoke(cli, ["data", "stats", str(root), "--json"]).output)
    assert as_json["source_grouped"] is True and as_json["per_class"]["comedy"]["groups"] == 3
