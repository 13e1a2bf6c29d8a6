"""``tuning predict``: any image in any format, streamed in bounded batches; untrusted models refused; bad input
stated in one line."""

from __future__ import annotations

import csv
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tuning.cli import cli
from tuning.data.images import IMAGE_SUFFIXES, load_raw_rgb
from tuning.errors import ToolkitError
from tuning.export import ExportResult, export_study, parse_formats
from tuning.inference import SAVEDMODEL_RISK, decoder, load_predictor, predict, stream_batches

SUFFIXES = ", ".join(IMAGE_SUFFIXES)


@pytest.fixture(scope="module")
def exported(study_copy: Path) -> tuple[ExportResult, Path]:
    return export_study(study_copy, formats=parse_formats("keras,savedmodel,tflite,onnx")), study_copy


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _odd_images(folder: Path) -> dict[str, Path]:
    """Images of every awkward kind a user may hand to predict."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    out = {}

    def save(name: str, image: Image.Image) -> None:
        out[name] = folder / name
        image.save(out[name])

    save("gray.png", Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8), "L"))
    save("rgba.png", Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA"))
    save("tiny.png", Image.fromarray(np.array([[[200, 10, 10]]], dtype=np.uint8), "RGB"))
    save("huge.jpg", Image.fromarray(rng.integers(0, 255, (1500, 4000, 3), dtype=np.uint8), "RGB"))
    save("palette.gif", Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8), "RGB").convert("P"))
    save("cmyk.jpg", Image.fromarray(rng.integers(0, 255, (33, 17, 3), dtype=np.uint8), "RGB").convert("CMYK"))
    save("deep.png", Image.fromarray(rng.integers(0, 65535, (24, 24), dtype=np.uint16)))
    return out


def _smooth(height: int, width: int, seed: int) -> Image.Image:
    """A photo-like image: low-frequency colour, so a reduced decode keeps what the model looks at."""
    small = np.random.default_rng(seed).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def _test_files(folder: Path, dataset: Path) -> tuple[list[Path], np.ndarray]:
    with open(folder / "final" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return ([dataset / r["file"] for r in rows],
            np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows]))


# ----- every format, any image --------------------------------------------------------------------------------
def test_streamed_predict_answers_as_the_tested_model_in_every_format(exported: tuple[ExportResult, Path],
                                                                      tiny_dataset: Path) -> None:
    """From the original test files, through decoding and batching, every format gives the tested probabilities."""
    result, folder = exported
    files, recorded = _test_files(folder, tiny_dataset)
    for fmt in [f for f in ("keras", "savedmodel", "tflite", "onnx") if f in result.files]:
        out = predict(result.files[fmt], files, top_k=3)
        assert not out.warnings and out.classes == ["Action", "Anime", "Romance"], fmt
        probs = np.array([list(r["probabilities"].values()) for r in out.rows])
        assert np.abs(probs - recorded).max() < 1e-4, fmt


def test_predict_takes_any_size_or_mode_in_every_format(exported: tuple[ExportResult, Path], tmp_path: Path) -> None:
    result, _ = exported
    images = _odd_images(tmp_path / "odd")
    by_format = {}
    for fmt in [f for f in ("keras", "savedmodel", "tflite", "onnx") if f in result.files]:
        rows = predict(result.files[fmt], [tmp_path / "odd"], top_k=3).rows
        assert len(rows) == len(images) and not [r for r in rows if "error" in r], rows
        assert all(r["top"][0]["class"] in ("Action", "Anime", "Romance") for r in rows)
        assert all(abs(sum(r["probabilities"].values()) - 1.0) < 1e-4 for r in rows)
        by_format[fmt] = np.array([list(r["probabilities"].values()) for r in rows])
    for fmt, probs in by_format.items():
        assert np.abs(probs - by_format["keras"]).max() < 1e-4, fmt


def test_hidden_files_in_a_folder_are_not_images(exported: tuple[ExportResult, Path], tmp_path: Path) -> None:
    """Folders are read with images.image_files: a macOS ``._x.jpg`` resource fork is neither predicted nor
    counted as skipped."""
    result, _ = exported
    folder = tmp_path / "photos"
    folder.mkdir()
    _smooth(40, 50, 0).save(folder / "a.jpg")
    (folder / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
    out = predict(result.model, [folder])
    assert [Path(r["file"]).name for r in out.rows] == ["a.jpg"] and not out.skipped()


# ----- streaming -------------------------------------------------------------------------------------------------
def test_batches_never_hold_more_than_their_bounds() -> None:
    """Counted from outside: images loaded minus images handed out never exceed the bounds, every image comes
    out once, each batch has one shape, and equal shapes do share batches."""
    shapes = [(40, 60, 3), (60, 40, 3), (50, 50, 3)]
    items = [shapes[i % 3] if i % 7 else (200, 300, 3) for i in range(200)]
    live = {"images": 0, "pixels": 0, "max_images": 0, "max_pixels": 0}

    def load(shape: tuple[int, int, int]) -> np.ndarray:
        live["images"] += 1
        live["pixels"] += shape[0] * shape[1]
        live["max_images"] = max(live["max_images"], live["images"])
        live["max_pixels"] = max(live["max_pixels"], live["pixels"])
        return np.zeros(shape, dtype=np.uint8)

    seen: list[int] = []
    sizes = []
    for batch in stream_batches(items, load, max_images=8, max_pixels=100_000):
        assert batch.images is not None and batch.images.shape[0] == len(batch.indices)
        assert {items[i] for i in batch.indices} == {batch.images.shape[1:]}
        live["images"] -= len(batch.indices)
        live["pixels"] -= batch.images.shape[0] * batch.images.shape[1] * batch.images.shape[2]
        seen += batch.indices
        sizes.append(len(batch.indices))
    assert sorted(seen) == list(range(len(items)))
    assert live["max_images"] <= 8
    assert live["max_pixels"] <= 100_000 + 200 * 300  # the bound plus the one image just decoded
    assert max(sizes) > 1


def test_unreadable_items_come_out_with_their_reason_and_the_stream_goes_on(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    _smooth(20, 20, 1).save(good)
    bad.write_bytes(b"\x89PNG not really")
    batches = list(stream_batches([bad, good, bad], load_raw_rgb))
    errors = [(b.indices, b.error) for b in batches if b.images is None]
    assert errors == [([0], "not an image (unknown format)"), ([2], "not an image (unknown format)")]
    assert [b.indices for b in batches if b.images is not None] == [[1]]


def test_large_jpegs_decode_small_but_never_below_twice_the_input_side(exported: tuple[ExportResult, Path],
                                                                       tmp_path: Path) -> None:
    """A 1600 x 1200 photo for a 32 px model decodes at 1/8 scale and is halved (short side 75 >= 64), and the
    predictions barely move against a full-size decode."""
    result, _ = exported
    files = []
    for seed in range(4):
        files.append(tmp_path / f"photo{seed}.jpg")
        _smooth(1200, 1600, seed).save(files[-1], quality=95)
    predictor = load_predictor(result.model)
    assert predictor.side == 32
    small = [decoder(predictor.side)(f) for f in files]
    assert all(im.shape == (75, 100, 3) for im in small)
    full = predictor.run([load_raw_rgb(f) for f in files])
    streamed = np.array([list(r["probabilities"].values()) for r in predict(result.model, files).rows])
    assert np.abs(streamed - full).max() < 1e-4  # the formats' parity tolerance
    assert (streamed.argmax(axis=1) == full.argmax(axis=1)).all()


# ----- SavedModels are programs ------------------------------------------------------------------------------------
def _writing_savedmodel(folder: Path, marker: Path) -> Path:
    """A SavedModel with the exported signature whose graph writes a file each time it is called."""
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")])
        def serve(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
            tf.io.write_file(str(marker), "code ran")
            return {"output_0": tf.fill([tf.shape(image)[0], 3], 1.0 / 3)}

    module = Writer()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


def test_a_savedmodel_not_written_by_the_toolkit_is_refused_by_default(tmp_path: Path) -> None:
    marker = tmp_path / "written.txt"
    model = _writing_savedmodel(tmp_path / "savedmodel", marker)
    _smooth(20, 20, 0).save(tmp_path / "a.png")
    code, out, err = _invoke("predict", str(model), str(tmp_path / "a.png"))
    assert code == 1 and out == "" and not marker.exists()
    assert err == (f"Error: {model}: refused: {SAVEDMODEL_RISK} and no model_card.json beside it records its "
                   "sha256; rerun with --no-safe only if you trust where it came from\n")
    code, out, err = _invoke("predict", str(model), str(tmp_path / "a.png"), "--no-safe")
    assert code == 0, err
    assert err.splitlines()[0] == (f"Warning: {model} is a SavedModel its model card does not vouch for (no "
                                   f"model_card.json beside it records its sha256); {SAVEDMODEL_RISK}, running it "
                                   "because of --no-safe")
    assert marker.read_text() == "code ran"  # what --safe protects against: the graph wrote a file
    assert out.startswith(f"{tmp_path / 'a.png'}\t")


def test_an_exported_savedmodel_runs_until_a_file_in_it_changes(exported: tuple[ExportResult, Path],
                                                                tmp_path: Path) -> None:
    result, _ = exported
    export = tmp_path / "export"
    shutil.copytree(result.folder, export)
    model, image = export / "savedmodel", tmp_path / "a.png"
    _smooth(30, 40, 2).save(image)
    code, out, err = _invoke("predict", str(model), str(image))
    assert code == 0 and err == "" and out.split("\t")[1].split()[0] in ("Action", "Anime", "Romance")
    data = next((model / "variables").glob("variables.data-*"))
    with open(data, "ab") as fh:
        fh.write(b"\0")  # one byte appended (still loadable): no longer the folder the card vouches for
    code, out, err = _invoke("predict", str(model), str(image))
    assert code == 1 and out == ""
    assert err == (f"Error: {model}: refused: {SAVEDMODEL_RISK} and its files do not match the sha256 in "
                   f"{export / 'model_card.json'} (changed since export); rerun with --no-safe only if you trust "
                   "where it came from\n")
    code, out, err = _invoke("predict", str(model), str(image), "--no-safe")
    assert err.count("\n") == 1 and err.startswith(f"Warning: {model} is a SavedModel its model card does not "
                                                   "vouch for (its files do not match the sha256")
    assert code == 0 and out.startswith(f"{image}\t")


# ----- bad input ----------------------------------------------------------------------------------------------------
def test_an_empty_folder_is_an_error(exported: tuple[ExportResult, Path], tmp_path: Path) -> None:
    result, _ = exported
    (tmp_path / "empty").mkdir()
    code, out, err = _invoke("predict", str(result.model), str(tmp_path / "empty"))
    assert code == 1 and out == ""
    assert err == f"Error: no image files in {tmp_path / 'empty'} (looked for {SUFFIXES}); nothing to predict\n"


def test_only_unreadable_files_is_an_error(exported: tuple[ExportResult, Path], tmp_path: Path) -> None:
    result, _ = exported
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG not really")
    (folder / "b.jpg").write_bytes(b"")
    code, out, err = _invoke("predict", str(result.model), str(folder))
    assert code == 1 and out == ""
    assert err == ("Error: none of the 2 image file(s) could be read (2 not an image (unknown format)); "
                   "nothing predicted\n")


def test_a_model_without_its_card_warns_that_class_names_are_unknown(exported: tuple[ExportResult, Path],
                                                                     tmp_path: Path) -> None:
    result, _ = exported
    model = tmp_path / "alone" / "model.keras"
    model.parent.mkdir()
    shutil.copy(result.model, model)
    _smooth(30, 30, 3).save(tmp_path / "a.png")
    code, out, err = _invoke("predict", str(model), str(tmp_path / "a.png"), "--top-k", "3")
    assert code == 0
    assert err == (f"Warning: no model_card.json beside {model}, so the class names are unknown; classes are "
                   "shown as their output index 0-2\n")
    assert sorted(t.split()[0] for t in out.strip().split("\t")[1:]) == ["0", "1", "2"]


def test_csv_writes_the_rows_and_prints_one_summary_line(exported: tuple[ExportResult, Path], tmp_path: Path) -> None:
    result, _ = exported
    images = _odd_images(tmp_path / "odd")
    (tmp_path / "odd" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "odd" / "empty.jpg").write_bytes(b"")
    target = tmp_path / "out.csv"
    code, out, err = _invoke("predict", str(result.model), str(images["gray.png"]), str(tmp_path / "odd"),
                             "--csv", str(target))
    assert code == 0 and re.fullmatch(r"  predict 10/10 images \d+/s\n", err)  # stderr: only the final count
    assert out == f"Wrote 8 prediction(s) to {target}; skipped 2 file(s) (2 not an image (unknown format))\n"
    with open(target, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["file", "predicted", "probability", "p_Action", "p_Anime", "p_Romance", "error"]
    assert len(table) == 10 and sorted(Path(r["file"]).name for r in table if r["error"]) == ["broken.png",
                                                                                               "empty.jpg"]
    code, out, _ = _invoke("predict", str(result.model), str(images["gray.png"]), "--csv", str(target))
    assert code == 0 and out == f"Wrote 1 prediction(s) to {target}; skipped 0 file(s)\n"  # its own table: rewritten


def test_a_bad_csv_target_is_refused_before_predicting(tmp_path: Path) -> None:
    """A folder, a path under a file, a file that is not a predictions table, or --json with --csv: all refused
    before the model is even opened (the model here does not exist) and nothing is written."""
    missing, image = tmp_path / "missing.keras", tmp_path / "a.png"
    _smooth(20, 20, 4).save(image)
    before = image.read_bytes()
    cases = {
        str(tmp_path): f"Error: --csv {tmp_path}: is a folder; give a file name such as {tmp_path / 'predictions.csv'}",
        str(image / "x.csv"): f"Error: --csv {image / 'x.csv'}: {image} is a file, not a folder",
        str(image): f"Error: --csv {image}: exists and is not a predictions table; choose another file name",
    }
    for target, line in cases.items():
        code, out, err = _invoke("predict", str(missing), str(image), "--csv", target)
        assert (code, out, err) == (1, "", line + "\n")
    assert image.read_bytes() == before
    code, _, err = _invoke("predict", str(missing), str(image), "--csv", str(tmp_path / "p.csv"), "--json")
    assert code == 1 and err == ("Error: --json and --csv cannot be used together: --csv writes the rows to a file, "
                                 "--json prints them\n")


def test_json_prints_every_row(exported: tuple[ExportResult, Path], tmp_path: Path) -> None:
    result, _ = exported
    images = _odd_images(tmp_path / "odd")
    (tmp_path / "odd" / "broken.png").write_bytes(b"\x89PNG not really")
    code, out, _ = _invoke("predict", str(result.model), str(images["gray.png"]), str(tmp_path / "odd"), "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]  # JSON lines: one object per image
    assert len(rows) == 1 + len(images) + 1
    assert [r["error"] for r in rows if "error" in r] == ["not an image (unknown format)"]


# ----- bad model files ----------------------------------------------------------------------------------------------
def test_random_bytes_are_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "model.keras"
    bad.write_bytes(np.random.default_rng(0).bytes(2048))
    _smooth(20, 20, 5).save(tmp_path / "a.png")
    code, out, err = _invoke("predict", str(bad), str(tmp_path))
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith(f"Error: {bad}: not a loadable .keras model")
    with pytest.raises(ToolkitError, match="no such model file"):
        load_predictor(tmp_path / "missing.keras")
    with pytest.raises(ToolkitError, match="not a SavedModel folder"):
        load_predictor(tmp_path)


def test_a_model_with_a_lambda_layer_is_refused_without_running_it(tmp_path: Path) -> None:
    """Keras stores a Lambda's Python bytecode; safe mode must refuse it before anything runs."""
    import keras

    marker = tmp_path / "ran.txt"

    target = str(marker)  # a plain string travels inside the saved bytecode's closure
    payload = keras.layers.Lambda(lambda x: x if open(target, "w").write("code ran") else x)
    model = keras.Sequential([keras.Input((4,)), payload, keras.layers.Dense(2)])
    path = tmp_path / "evil.keras"
    model.save(path)
    marker.unlink()
    _smooth(20, 20, 6).save(tmp_path / "a.png")
    for flag in ("--safe", "--no-safe"):  # --no-safe is about SavedModels; .keras files stay in safe mode
        code, out, err = _invoke("predict", str(path), str(tmp_path), flag)
        assert code == 1 and err.count("\n") == 1 and "not a loadable .keras model" in err
        assert "Lambda" in err and not marker.exists()


def test_a_foreign_class_in_the_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.keras"
    config = {"module": "os", "class_name": "system", "config": {"command": "touch pwned"}, "registered_name": None}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
    with pytest.raises(ToolkitError, match="not a loadable .keras model"):
        load_predictor(path)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
