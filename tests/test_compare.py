"""``tuning compare``: paired test predictions of two studies, McNemar's test, and refusing unpaired ones."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.compare import compare_studies
from tuning.errors import StudyError
from tuning.evaluate import retrain_study
from tuning.metrics import mcnemar, wilson_interval


@pytest.fixture(scope="module")
def pair(study_copy: Path) -> tuple[Path, Path]:
    """A finished study and a copy retrained on train+val: two real models on one test split."""
    a, b = study_copy.parent / "runs" / "a", study_copy.parent / "runs" / "b"  # `compare a b` finds runs/a
    shutil.copytree(study_copy, a)
    shutil.copytree(study_copy, b)
    retrain_study(b, fit_on="train+val")
    return a, b


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "final" / "predictions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _write(folder: Path, rows: list[dict[str, str]]) -> None:
    with open(folder / "final" / "predictions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_paired_counts_intervals_and_p_value(pair: tuple[Path, Path]) -> None:
    a, b = pair
    c = compare_studies(a, b)
    rows_a = {r["file"]: r["true"] == r["predicted"] for r in _rows(a)}
    rows_b = {r["file"]: r["true"] == r["predicted"] for r in _rows(b)}
    assert c.only_a == sum(rows_a[f] and not rows_b[f] for f in rows_a)
    assert c.only_b == sum(rows_b[f] and not rows_a[f] for f in rows_a)
    assert c.both_right + c.only_a + c.only_b + c.both_wrong == c.a.n == len(rows_a)
    for side, folder in ((c.a, a), (c.b_side, b)):
        metrics = json.loads((folder / "final" / "metrics.json").read_text())
        assert side.accuracy == pytest.approx(metrics["accuracy"])
        assert side.ci95 == pytest.approx(tuple(metrics["accuracy_ci95"]))
        assert side.ci95 == wilson_interval(side.correct, side.n)
    assert c.p_exact == mcnemar(c.only_a, c.only_b) and c.p_mid <= c.p_exact


def test_a_study_against_itself_has_no_discordant_pair(pair: tuple[Path, Path]) -> None:
    a, _ = pair
    c = compare_studies(a, a)
    assert c.only_a == c.only_b == 0 and c.p_exact == 1.0 and c.difference == 0.0


def test_compare_cli_prints_both_accuracies_and_the_test(pair: tuple[Path, Path]) -> None:
    a, b = pair
    result = CliRunner().invoke(cli, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"A {a}: test accuracy") and "95% Wilson CI" in lines[0]
    assert lines[1].startswith(f"B {b}: test accuracy")
    assert "McNemar exact two-sided binomial test" in result.output and "mid-p" in result.output


def test_names_resolve_under_runs(pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = pair
    monkeypatch.chdir(a.parent.parent)
    result = CliRunner().invoke(cli, ["compare", "a", "b"])
    assert result.exit_code == 0, result.output


def test_different_test_files_are_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = pair
    other = tmp_path / "other"
    shutil.copytree(a / "final", other / "final")
    rows = _rows(other)
    rows[0]["file"] = "raw/Action/not_in_a.png"
    _write(other, rows)
    with pytest.raises(StudyError, match="tested on different images \\(2 not in both test splits\\)"):
        compare_studies(a, other)
    result = CliRunner().invoke(cli, ["compare", str(a), str(other)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ") and "same test split" in result.output


def test_relabelled_or_missing_predictions_are_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = pair
    other = tmp_path / "relabelled"
    shutil.copytree(a / "final", other / "final")
    rows = _rows(other)
    rows[0]["true"] = next(c for c in ("Action", "Anime") if c != rows[0]["true"])
    _write(other, rows)
    with pytest.raises(StudyError, match="label 1 test image\\(s\\) differently"):
        compare_studies(a, other)
    with pytest.raises(StudyError, match="no final/predictions.csv"):
        compare_studies(a, tmp_path / "empty")
