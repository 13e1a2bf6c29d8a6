"""The command line as a user meets it: exit codes and the exact one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tuning.cli import cli


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_help_lists_the_commands() -> None:
    code, out = _run("--help")
    assert code == 0
    for command in ("data", "search", "report", "export", "predict", "spaces", "models"):
        assert command in out


def test_unknown_model_is_a_one_line_error(tiny_dataset: Path) -> None:
    code, out = _run("search", "--model", "vgg19", "--data", str(tiny_dataset))
    assert code == 1
    assert out == "Error: unknown model 'vgg19'; known: alexnet, vgg16\n"


def test_missing_data_folder_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    code, out = _run("search", "--model", "vgg16", "--data", str(missing))
    assert code == 1
    assert out == (f"Error: {missing}: no such dataset folder; make one with 'tuning data demo --out {missing}' "
                   f"or put images in {missing}/raw/<class>/\n")


def test_bad_budget_is_a_one_line_error(tiny_dataset: Path) -> None:
    code, out = _run("search", "--model", "vgg16", "--data", str(tiny_dataset), "--budget", "huge")
    assert code == 1
    assert out == "Error: unknown budget 'huge'; known: full, quick\n"


def test_unknown_search_parameter_is_a_one_line_error(tiny_dataset: Path) -> None:
    code, out = _run("search", "--model", "vgg16", "--data", str(tiny_dataset), "--params", "dropout,colour")
    assert code == 1
    assert out.startswith("Error: unknown parameter 'colour'; known: ") and out.count("\n") == 1


def test_report_of_a_missing_study_says_what_to_do(tmp_path: Path) -> None:
    code, out = _run("report", "--study", str(tmp_path / "none"))
    assert code == 1
    missing = tmp_path / "none"
    assert out == f"Error: {missing}: no study here (no config.toml); run 'tuning search --study NAME' first\n"


def test_demo_refuses_to_overwrite(tmp_path: Path) -> None:
    code, out = _run("data", "demo", "--out", str(tmp_path / "d"), "--per-class", "2", "--size", "32")
    assert code == 0 and "Wrote 6 images" in out
    code, out = _run("data", "demo", "--out", str(tmp_path / "d"), "--per-class", "2", "--size", "32")
    assert code == 1 and out.startswith("Error: ") and "already exists" in out


@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_spaces_show_prints_the_axes_and_staged_order(name: str) -> None:
    code, out = _run("spaces", "show", name)
    assert code == 0
    assert "learning_rate" in out and "momentum" in out and "optimizer in ['sgd']" in out
    assert "staged order: learning_rate -> " in out


def test_models_show_prints_the_layer_table_and_draws_it(tmp_path: Path) -> None:
    plot = str(tmp_path / "a.png")
    code, out = _run("models", "show", "alexnet", "--size", "64", "--budget", "quick", "--plot", plot)
    assert code == 0, out
    assert "conv5" in out and "Total params" in out
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_progress_and_summary_follow_a_val_loss_objective(
    fake_train: Any, tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """The per-trial line showed val_acc and kept the highest value as best whatever the objective; under
    --objective val_loss it shows val_loss, the lowest so far, and the summary names the lowest trial."""
    import re

    folder = tmp_path / "runs" / "loss"
    code, out = _run("search", "--model", "alexnet", "--data", str(tiny_dataset), "--space",
                     str(tiny_space("alexnet")), "--budget", "quick", "--trials", "4", "--pruner", "none",
                     "--precision", "float32", "--objective", "val_loss", "--study", str(folder))
    assert code == 0, out
    lines = re.findall(r"trial +(\d+) complete +val_loss ([0-9.]+) best ([0-9.]+)", out)
    assert len(lines) == 4
    values = [float(v) for _, v, _ in lines]
    assert [float(b) for _, _, b in lines] == [min(values[: i + 1]) for i in range(4)]
    assert len(set(values)) > 1  # the trials differ, so a max would have shown another best
    lowest = lines[values.index(min(values))][0]
    assert f"Best trial #{lowest}: validation loss {min(values):.3f}\n" in out
    assert "Trials: 4 complete\n" in out
