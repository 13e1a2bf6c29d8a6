"""Export formats agree with the tested model, carry their model card, and refresh together."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
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


def _test_images(folder: Path, dataset: Path, *, tested: str = "predictions.csv"
                 ) -> tuple[list[np.ndarray], np.ndarray]:
    """The original test files, decoded at full size (the demo's are 32 to 40 px, some not square), and the
    probabilities the tested model gave their prepared 32 px versions (``final/<tested>``)."""
    with open(folder / "final" / tested, newline="") as fh:
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


@pytest.fixture(scope="module")
def exported_ensemble(ensemble_study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ExportResult, Path]:
    folder = tmp_path_factory.mktemp("exported-ensemble") / ensemble_study.name
    shutil.copytree(ensemble_study, folder)
    return export_study(folder, formats=parse_formats("all")), folder


def test_an_ensemble_ships_as_one_model_per_format_answering_as_tested(
        exported_ensemble: tuple[ExportResult, Path], tiny_dataset: Path) -> None:
    """``retrain --ensemble 2`` then ``export``: each format is ONE file holding both members, raw uint8 in,
    and agrees with the tested ensemble's probabilities on the original test files."""
    from tuning.export import load_model

    result, folder = exported_ensemble
    images, recorded = _test_images(folder, tiny_dataset, tested="ensemble/predictions.csv")
    formats = {"keras", "savedmodel", "tflite"} | ({"onnx"} if "onnx" in result.files else set())
    assert formats <= set(result.files)
    for fmt in formats:
        probs = load_predictor(result.files[fmt]).run(images)
        assert np.abs(probs - recorded).max() < 1e-4, fmt
    model = load_model(result.files["keras"])
    assert [layer.name for layer in model.layers if layer.name.startswith("member_")] == ["member_0", "member_1"]
    assert str(model.inputs[0].dtype) == "uint8"
    single = np.array([[float(v) for k, v in r.items() if k.startswith("p_")]
                       for r in csv.DictReader(open(folder / "final" / "predictions.csv", newline=""))])
    assert np.abs(single - recorded).max() > 1e-3  # it is not the single model that was exported


def test_an_ensembles_model_card_lists_its_members(exported_ensemble: tuple[ExportResult, Path]) -> None:
    result, folder = exported_ensemble
    tested = json.loads((folder / "final" / "ensemble" / "metrics.json").read_text())
    card = json.loads((result.folder / "model_card.json").read_text(), parse_constant=pytest.fail)
    assert [m["trial"] for m in card["ensemble"]["members"]] == [m["trial"] for m in tested["members"]]
    assert card["ensemble"]["tta"] == "none" and card["test"]["accuracy"] == tested["accuracy"]
    assert card["test"]["mcnemar"] == tested["mcnemar"] and card["input"]["resized_to"] == [32, 32]
    assert "learning_rate" not in card["params"] and card["params"]["image_size"] == 32  # shared ones only
    md = (result.folder / "model_card.md").read_text()
    assert "averaging the probabilities of 2 member(s)" in md
    assert all(f"| #{m['trial']} | 32 | " in md for m in tested["members"])


def test_members_of_different_sizes_are_each_resized_once_inside_one_model(tmp_path: Path) -> None:
    """Untrained tiny members at 32 and 24 px with the mirror averaged in: the saved .keras file, fed raw
    images of another size, gives the mean over members of (image, mirror) at each member's own size."""
    import keras

    from tuning.evaluate import mirror, save_model
    from tuning.export import ensemble_serving_model
    from tuning.models import build_model
    from tuning.resize import resize_rgb
    from tuning.space import Augmentation

    keras.utils.set_random_seed(0)
    params = {"dropout": 0.0, "augmentation": Augmentation("none"), "width": 0.125, "dense_units": 16}
    members = [(build_model("alexnet", {**params, "image_size": s}, (s, s, 3), 3), s) for s in (24, 32, 24)]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (37, 45, 3), dtype=np.uint8) for _ in range(3)]
    outputs = []
    for network, size in members:
        x = np.stack([resize_rgb(im, size) for im in images]).astype("float32")
        outputs += [network.predict(x, verbose=0), network.predict(mirror(x), verbose=0)]
    save_model(ensemble_serving_model(members, tta="flip"), tmp_path / "model.keras")
    predictor = load_predictor(tmp_path / "model.keras")
    assert predictor.side == 32  # predict decodes large enough for the largest member
    assert np.abs(predictor.run(images) - np.mean(outputs, axis=0)).max() < 1e-5
    model = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert sorted(layer.name for layer in model.layers if layer.name.startswith("resize")) == ["resize_24", "resize_32"]
    with pytest.raises(UnknownNameError, match="unknown --tta value 'rotate'"):
        ensemble_serving_model(members, tta="rotate")
