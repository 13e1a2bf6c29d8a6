from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tuning.cli import cli
from tuning.data.groups import NO_MATCH, NO_SUBFOLDER, NOT_LISTED, apply_groups, parse_group_by
from tuning.data.importer import import_folder
from tuning.data.manifest import MANIFEST_COLUMNS, read_manifest
from tuning.data.prepare import load_prepared, prepare
from tuning.errors import DataError


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def shows(tmp_path: Path) -> Path:
    """SRC/<genre>/<show>/<frame>: 2 genres x 4 shows x 3 frames, plus one frame loose in a class folder."""
    src = tmp_path / "src"
    seed = 0
    for genre in ("Drama", "Comedy"):
        for show in range(4):
            for frame in range(3):
                seed += 1
                _png(src / genre / f"{genre} show {show}" / f"s{show}_e{frame}.png", seed)
    _png(src / "Drama" / "loose.png", 999)
    return src


def _groups(dataset: Path) -> dict[str, str]:
    return {r["path"]: r["source_group"] for r in read_manifest(dataset)}


def test_import_group_by_folder_records_the_show_and_counts_what_it_cannot_group(shows: Path, tmp_path: Path) -> None:
    report = import_folder(shows, tmp_path / "d", group_by="folder")
    groups = _groups(tmp_path / "d")
    assert groups["raw/Drama/Drama show 2/s2_e1.png"] == "Drama show 2"
    assert groups["raw/Drama/loose.png"] == ""
    assert report.grouping is not None
    assert (report.grouping.grouped, report.grouping.groups) == (24, 8)
    assert report.grouping.ungrouped == [("raw/Drama/loose.png", NO_SUBFOLDER)]


def test_source_groups_survive_rescans_touches_and_changed_bytes(shows: Path, tmp_path: Path) -> None:
    import_folder(shows, tmp_path / "d", group_by="folder")
    frame = tmp_path / "d" / "raw" / "Comedy" / "Comedy show 1" / "s1_e0.png"
    os.utime(frame, ns=(1, 1))
    _png(tmp_path / "d" / "raw" / "Comedy" / "Comedy show 1" / "s1_e1.png", 4242)  # new bytes, same name
    prepare(tmp_path / "d", size=8)
    groups = _groups(tmp_path / "d")
    assert groups["raw/Comedy/Comedy show 1/s1_e0.png"] == "Comedy show 1"
    assert groups["raw/Comedy/Comedy show 1/s1_e1.png"] == "Comedy show 1"
    import_folder(shows, tmp_path / "d")  # a second import without --group-by keeps them
    assert _groups(tmp_path / "d")["raw/Drama/Drama show 0/s0_e0.png"] == "Drama show 0"


def test_an_old_manifest_without_the_column_loads_and_prepare_sets_groups_later(shows: Path, tmp_path: Path) -> None:
    import_folder(shows, tmp_path / "d")
    manifest = tmp_path / "d" / "manifest.csv"
    rows = list(csv.DictReader(manifest.open(encoding="utf-8")))
    old = [c for c in MANIFEST_COLUMNS if c != "source_group"]
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=old, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert set(_groups(tmp_path / "d").values()) == {""}
    report = prepare(tmp_path / "d", size=8, group_by="regex:show (\\d)")
    assert report.grouping is not None and report.grouping.groups == 4  # one name across classes: "0".."3"
    assert _groups(tmp_path / "d")["raw/Comedy/Comedy show 3/s3_e2.png"] == "3"
    data = load_prepared(tmp_path / "d", 8)
    assert data.source_groups is not None
    by_id = dict(zip(data.ids.tolist(), data.groups.tolist()))
    assert by_id["raw/Drama/Drama show 3/s3_e0.png"] == by_id["raw/Comedy/Comedy show 3/s3_e2.png"]
    assert report.split is not None and report.split["grouped_by"] == "source"


def test_prepare_group_by_none_clears_and_the_cache_follows(shows: Path, tmp_path: Path) -> None:
    import_folder(shows, tmp_path / "d", group_by="folder")
    prepare(tmp_path / "d", size=8, balance="weights")  # keeps every image, so every group is counted
    grouped = load_prepared(tmp_path / "d", 8)
    assert len(set(grouped.groups.tolist())) == 9  # 8 shows and the loose frame
    prepare(tmp_path / "d", size=8, balance="weights", group_by="none")
    assert set(_groups(tmp_path / "d").values()) == {""}
    assert len(set(load_prepared(tmp_path / "d", 8).groups.tolist())) == 25


def test_regex_names_the_group_by_its_first_group_or_the_whole_match(shows: Path, tmp_path: Path) -> None:
    rows = [{"path": "raw/Drama/Drama show 1/s1_e0.png"}, {"path": "raw/Drama/x.png"}]
    report = apply_groups(rows, parse_group_by("regex:s\\d"))
    assert rows[0]["source_group"] == "s1" and rows[1]["source_group"] == ""
    assert report.ungrouped == [("raw/Drama/x.png", NO_MATCH)]
    apply_groups(rows, parse_group_by("regex:^(\\w+) show"))
    assert rows[0]["source_group"] == "Drama"


def test_csv_groups_count_unlisted_files_and_rows_naming_no_file(shows: Path, tmp_path: Path) -> None:
    table = tmp_path / "groups.csv"
    table.write_text("path,group\nDrama/Drama show 0/s0_e0.png,anna\nraw/Comedy/Comedy show 0/s0_e1.png,anna\n"
                     "Drama/gone.png,bob\n", encoding="utf-8")
    report = import_folder(shows, tmp_path / "d", group_by=f"csv:{table}")
    groups = _groups(tmp_path / "d")
    assert groups["raw/Drama/Drama show 0/s0_e0.png"] == groups["raw/Comedy/Comedy show 0/s0_e1.png"] == "anna"
    assert report.grouping is not None
    assert report.grouping.unknown == ["Drama/gone.png"]
    assert report.grouping.reasons() == {NOT_LISTED: 23, "csv row names no file of the dataset": 1}


@pytest.mark.parametrize(("rule", "content", "message"), [
    ("regex:([", None, "Error: --group-by regex:([: not a regular expression ("),
    ("regex:", None, "Error: --group-by regex: needs a pattern"),
    ("regex:nothing-like-this", None, "Error: --group-by regex:nothing-like-this: groups none of the 25 files"),
    ("csv:{dir}/missing.csv", None, "Error: --group-by csv:{dir}/missing.csv: no such file"),
    ("csv:{dir}/t.csv", "file,show\na,b\n", "Error: --group-by csv:{dir}/t.csv: needs a header with the columns "
                                            "path,group (found: file,show)"),
    ("csv:{dir}/t.csv", "path,group\nDrama/a.png,x\nDrama/a.png,y\n", "Error: --group-by csv:{dir}/t.csv line 3: "
                                                                      "Drama/a.png is listed again"),
    ("csv:{dir}/t.csv", "path,group\nDrama/a.png,\n", "line 2: needs both a path and a group"),
    ("csv:{dir}/t.csv", "path,group\nDrama/nope.png,x\n", "groups none of the 25 files"),
    ("session", None, "Error: --group-by: unknown rule 'session'; known: folder, regex:PATTERN, csv:FILE, none"),
])
def test_bad_rules_are_one_line_errors_and_nothing_is_copied(shows: Path, tmp_path: Path, rule: str,
                                                             content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "t.csv").write_text(content, encoding="utf-8")
    rule, message = rule.format(dir=tmp_path), message.format(dir=tmp_path)
    result = CliRunner().invoke(cli, ["data", "import", str(shows), "--out", str(tmp_path / "d"), "--group-by", rule])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    if "groups none" not in message:
        assert not (tmp_path / "d").exists()  # refused before any copy


def test_prepare_refuses_a_bad_rule_before_touching_the_manifest(shows: Path, tmp_path: Path) -> None:
    import_folder(shows, tmp_path / "d", group_by="folder")
    before = (tmp_path / "d" / "manifest.csv").read_bytes()
    with pytest.raises(DataError, match="groups none of the 25 files"):
        prepare(tmp_path / "d", size=8, group_by="regex:zzz")
    assert (tmp_path / "d" / "manifest.csv").read_bytes() == before


def test_cli_import_and_prepare_print_groups_reasons_and_the_split_drift(shows: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["data", "import", str(shows), "--out", str(tmp_path / "d"), "--group-by", "folder"])
    assert out.exit_code == 0, out.output
    assert "Grouped by folder: 24 file(s) in 8 group(s)" in out.output
    assert f"not grouped: {NO_SUBFOLDER}" in out.output
    out = runner.invoke(cli, ["data", "prepare", str(tmp_path / "d"), "--size", "8", "--split", "50/25/25"])
    assert out.exit_code == 0, out.output
    assert "Split 50/25/25 preview (seed 0), kept together: source groups merged with near duplicates" in out.output
    assert "largest class-share drift" in out.output


def test_prepare_warns_when_a_class_has_fewer_groups_than_splits(tmp_path: Path) -> None:
    for i in range(6):
        _png(tmp_path / "d" / "raw" / "a" / ("one" if i < 3 else "two") / f"{i}.png", i)
        _png(tmp_path / "d" / "raw" / "b" / f"show{i}" / f"{i}.png", 10 + i)
    out = CliRunner().invoke(cli, ["data", "prepare", str(tmp_path / "d"), "--size", "8", "--group-by", "folder"])
    assert out.exit_code == 0, out.output
    assert ("Warning: split 70/15/15 cannot be made: class 'a' has 2 image group(s) (an image with its "
            "near-duplicates, or a --group-by group), fewer than the 3 splits (train, val, test) need") in out.output


def test_prepare_refuses_a_bad_preview_split_in_one_line(shows: Path, tmp_path: Path) -> None:
    import_folder(shows, tmp_path / "d")
    out = CliRunner().invoke(cli, ["data", "prepare", str(tmp_path / "d"), "--split", "70/30"])
    assert out.exit_code == 1
    assert out.output == ("Error: split: '70/30' is not a split; write train/val/test percentages summing to 100, "
                          "e.g. 70/15/15\n")
