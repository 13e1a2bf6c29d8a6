from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
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
    assert st.per_class == {"birds": {"files": 0, "ok": 0}, "cats": {"files": 4, "ok": 3},
                            "dogs": {"files": 4, "ok": 2}}
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
