"""Export formats agree with the tested model, carry their model card, and refresh together."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.data.images import load_raw_rgb, load_rgb
from tuning.errors import ToolkitError, UnknownNameError
from tuning.export import ONNX_HINT, ExportResult, content_sha256, export_study, parse_formats
from tuning.inference import load_predictor


@pytest.fixture(scope="module")
def exported(study_copy: Path) -> tuple[ExportResult, Path]:
    folder = study_copy
    return export_study(folder, formats=parse_formats("keras,savedmodel,tflite,onnx")), folder


def _test_images(folder: Path, dataset: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The original test files, decoded at full size (the demo's are 32 to 40 px, some not square), and the
    probabilities the tested model gave their prepared 32 px versions."""
    with open(folder / "final" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    images = [load_raw_rgb(dataset / r["file"]) for r in rows]
    assert len({im.shape for im in images}) > 1  # several sizes: the resize inside the model is exercised
    return images, np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])


def test_every_format_takes_the_raw_files_and_answers_as_the_tested_model(exported: tuple[ExportResult, Path],
                                                                           tiny_dataset: Path) -> None:
    result, folder = exported
    images, recorded = _test_images(folder, tiny_dataset)
    formats = {"keras", "savedmodel", "tflite"} | ({"onnx"} if "onnx" in result.files else set())
    assert formats <= set(result.files)
    for fmt in formats:
        predictor = load_predictor(result.files[fmt])
        assert predictor.format == fmt and predictor.size is None and predictor.n_classes == 3
        probs = predictor.run(images)
        assert np.abs(probs - recorded).max() < 1e-4, fmt
        assert (probs.argmax(axis=1) == recorded.argmax(axis=1)).all(), fmt


def test_the_prepared_pixels_are_the_exported_models_own_resize(exported: tuple[ExportResult, Path],
                                                                 tiny_dataset: Path) -> None:
    """What the model resizes inside is what the dataset cache holds, and the unexported network agrees."""
    from tuning.resize import ResizeRGB

    result, folder = exported
    images, recorded = _test_images(folder, tiny_dataset)
    layer = ResizeRGB(32)
    with open(folder / "final" / "predictions.csv", newline="") as fh:
        files = [r["file"] for r in csv.DictReader(fh)]
    for file, image in zip(files, images):
        assert np.array_equal(np.asarray(layer(image[None]))[0], load_rgb(tiny_dataset / file, 32))
    final = load_predictor(folder / "final" / "model.keras")  # fixed 32 px input: predict resizes first
    assert final.size == 32
    probs = final.run(images)
    assert np.abs(probs - recorded).max() < 1e-4


def test_onnx_is_exported_or_explained(exported: tuple[ExportResult, Path]) -> None:
    result, _ = exported
    if "onnx" in result.files:
        assert result.files["onnx"].stat().st_size > 1000 and not result.skipped
    else:
        assert result.skipped == {"onnx": ONNX_HINT} and "pip install tf2onnx onnx" in ONNX_HINT


def test_model_card_describes_input_metrics_files_and_data(exported: tuple[ExportResult, Path],
                                                           tiny_dataset: Path) -> None:
    result, folder = exported
    card = json.loads((result.folder / "model_card.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert card["test"]["seeds"]["std"] is None  # one seed: the spread is unknown, written as null
    metrics = json.loads((folder / "final" / "metrics.json").read_text())
    assert card["classes"] == ["Action", "Anime", "Romance"]
    assert card["input"]["height"] == card["input"]["width"] == "any" and card["input"]["resized_to"] == [32, 32]
    assert card["input"]["dtype"] == "uint8 RGB 0-255" and "tuning.resize" in card["input"]["preprocessing"]
    assert card["test"]["accuracy_ci95"] == metrics["accuracy_ci95"] and card["test"]["seeds"]["k"] == 1
    assert card["test"]["roc_auc_macro"] == metrics["roc_auc_macro"]
    assert card["params"] == metrics["params"]
    manifest = hashlib.sha256((tiny_dataset / "manifest.csv").read_bytes()).hexdigest()
    assert card["dataset_manifest_sha256"] == manifest
    assert card["versions"]["keras"] and card["versions"]["tensorflow"]
    model_hash = hashlib.sha256((result.folder / "model.keras").read_bytes()).hexdigest()
    assert card["files"]["keras"] == {"path": "model.keras", "sha256": model_hash}
    assert set(card["files"]) == set(result.files)
    saved = result.files["savedmodel"]  # a folder: its files in sorted order, names included
    assert card["files"]["savedmodel"] == {"path": "savedmodel", "sha256": content_sha256(saved)}
    assert content_sha256(saved) != content_sha256(result.files["keras"])
    md = (result.folder / "model_card.md").read_text()
    assert "95% Wilson CI" in md and manifest in md and "| learning_rate |" in md


def test_export_cli_lists_files_and_refuses_unknown_formats(exported: tuple[ExportResult, Path]) -> None:
    _, folder = exported
    result = CliRunner().invoke(cli, ["export", "--study", str(folder), "--format", "keras,tflite"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("keras") and "model.tflite" in result.output and "model_card.md" in result.output
    result = CliRunner().invoke(cli, ["export", "--study", str(folder), "--format", "keras,pt"])
    assert result.exit_code == 1
    assert result.output == "Error: unknown export format 'pt'; known: keras, onnx, savedmodel, tflite\n"
    with pytest.raises(ToolkitError, match="no export format given"):
        parse_formats("")
    with pytest.raises(UnknownNameError):
        parse_formats(["keras", "h5"])


def test_a_later_export_refreshes_every_format_already_there(exported: tuple[ExportResult, Path]) -> None:
    """After a retrain the default export rewrites the TFLite file too, so no stale artefact survives."""
    result, folder = exported
    before = result.files["tflite"].stat().st_mtime_ns
    again = export_study(folder)
    assert {"keras", "savedmodel", "tflite"} <= set(again.files)
    assert again.files["tflite"].stat().st_mtime_ns > before
