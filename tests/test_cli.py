"""The command line as a user meets it: exit codes and the exact one-line errors."""

from __future__ import annotations

import re
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
    assert out == ("Error: unknown model 'vgg19'; known: alexnet, efficientnetv2_b0, mobilenet_v3_large, "
                   "mobilenet_v3_small, vgg16, vgg16_imagenet\n")


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


@pytest.mark.slow
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


def test_unknown_preset_is_a_one_line_error_and_writes_nothing(tiny_dataset: Path, tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "p"
    code, out = _run("search", "--model", "vgg16", "--data", str(tiny_dataset), "--preset", "fast",
                     "--study", str(folder))
    assert code == 1
    assert out == "Error: unknown preset 'fast'; known: modern\n"
    assert not (tmp_path / "runs").exists()


def test_preset_is_recorded_and_resuming_without_it_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    """``--preset modern`` lands in config.toml's space (its base values and its name); a rerun without it asks
    for another space, so it is refused before anything is written."""
    from tuning.pipeline import SearchRequest, resolve_config
    from tuning.study import study_paths, write_config

    folder = tmp_path / "runs" / "modern"
    request = SearchRequest(model="vgg16", data=tiny_dataset, preset="modern", budget="quick", study=str(folder))
    config = resolve_config(request)
    assert config.space["preset"] == "modern"
    assert config.space["base"]["batch_norm"] is True and config.space["base"]["schedule"] == "cosine"
    assert config.space["base"]["image_size"] == 64  # the quick budget still pins its values
    write_config(folder, config)
    written = study_paths(folder)["config"].read_bytes()
    code, out = _run("search", "--model", "vgg16", "--data", str(tiny_dataset), "--budget", "quick",
                     "--study", str(folder))
    assert code == 1
    assert out.startswith(f"Error: {folder} holds a study with a search space that differs in base, preset; rerun "
                          "with the same --space, --preset and --params to resume it") and out.count("\n") == 1
    assert study_paths(folder)["config"].read_bytes() == written


@pytest.mark.slow
def test_a_modern_preset_search_ships_models_that_every_format_reproduces(tiny_dataset: Path,
                                                                          tmp_path: Path) -> None:
    """``tuning search --preset modern`` end to end on tiny images (BatchNorm, gap head, flip, crop, AdamW,
    label smoothing, cosine): the shipped model has no augmentation layer, and every export format answers
    the raw test files as the tested model did."""
    import csv

    import numpy as np

    from tuning.data.images import load_raw_rgb
    from tuning.export import export_study, parse_formats
    from tuning.inference import load_predictor
    from tuning.study import read_config

    folder = tmp_path / "runs" / "modern"
    code, out = _run("search", "--model", "alexnet", "--data", str(tiny_dataset), "--budget", "quick", "--preset",
                     "modern", "--trials", "1", "--epochs", "2", "--pruner", "none", "--study", str(folder))
    assert code == 0, out
    assert read_config(folder).space["preset"] == "modern"
    import keras

    names = [layer.name for layer in keras.models.load_model(folder / "final" / "model.keras").layers]
    assert "conv1_bn" in names and "gap" in names and not any(n.startswith("aug_") for n in names)
    result = export_study(folder, formats=parse_formats("keras,savedmodel,tflite,onnx"))
    with open(folder / "final" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = [load_raw_rgb(tiny_dataset / r["file"]) for r in rows]
    recorded = np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])
    keras_file = load_predictor(result.files["keras"])
    assert keras_file.n_classes == 3
    formats = {"keras", "savedmodel", "tflite"} | ({"onnx"} if "onnx" in result.files else set())
    for fmt in formats:
        probs = load_predictor(result.files[fmt]).run(images)
        assert np.abs(probs - recorded).max() < 1e-4, fmt


# ----- progress of the long data steps -----------------------------------------------------------------------
class _Terminal:
    """A stderr that says it is a terminal and keeps what was written."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_a_progress_bar_redraws_one_line_on_a_terminal_and_ends_with_the_count() -> None:
    from tuning.cli import ProgressBar

    term = _Terminal()
    bar = ProgressBar("prepare", stream=term, interval=0.0)
    for i in range(1, 6):
        bar(i, 5)
    bar.done()
    bar.done()  # once only
    lines = term.text.split("\r")[1:]
    assert len(lines) == 6  # five redraws and the final line, each from the line's start
    assert lines[0].startswith("  prepare 1/5 images ") and "\n" not in "".join(lines[:-1])
    assert re.fullmatch(r"  prepare 5/5 images \d+/s\x1b\[K\n", lines[-1])


def test_a_progress_bar_off_a_terminal_writes_only_the_final_line() -> None:
    import io

    from tuning.cli import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar("import", "files", stream=stream, interval=0.0)
    for i in range(1, 101):
        bar(i, 100)
    bar.done()
    assert re.fullmatch(r"  import 100/100 files \d+/s\n", stream.getvalue())


def test_import_prepare_and_dedup_end_with_their_counts_and_no_carriage_returns(tmp_path: Path) -> None:
    from tuning.data.demo import make_demo

    make_demo(tmp_path / "src", per_class=6, size=32, seed=0)
    dataset = tmp_path / "ds"
    steps = [
        (["data", "import", str(tmp_path / "src"), "--out", str(dataset)], r"  import 18/18 files \d+/s"),
        (["data", "prepare", str(dataset), "--size", "16"], r"  prepare 16px 18/18 images \d+/s"),
        (["data", "dedup", str(dataset)], r"  dedup hash 18/18 images \d+/s"),
    ]
    for args, final in steps:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert re.search(f"^{final}$", result.stderr, re.M), result.stderr
        assert "\r" not in result.output  # not a terminal: no redrawn lines
        assert not re.search(final, result.stdout)  # stdout keeps the results only


def test_predict_on_a_folder_ends_with_its_count(finished_study: Path, tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        Image.new("RGB", (40, 30), (40 * i, 20, 200)).save(images / f"{i}.png")
    result = CliRunner().invoke(cli, ["predict", str(finished_study / "export" / "model.keras"), str(images)])
    assert result.exit_code == 0, result.output
    assert re.search(r"^  predict 5/5 images \d+/s$", result.stderr, re.M)
    assert "\r" not in result.output and len(result.stdout.splitlines()) == 5
