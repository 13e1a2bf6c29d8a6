"""Ship the retrained model: ``.keras``, SavedModel, TFLite (and ONNX when its converter is installed).

Every artefact takes raw RGB uint8 images of any height and width and returns class probabilities: resizing
and scaling are inside. The resize is ``tuning.resize.ResizeRGB``, the very op that made the dataset cache,
so a shipped model fed the original test files answers exactly as the tested model did on the prepared
test split (tests hold every format to that). ``tuning predict`` only decodes files (EXIF rotation, alpha on
white, any mode to RGB) and hands over the full-size pixels.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.data.images import IMAGE_SUFFIXES, load_raw_rgb
from tuning.errors import StudyError, ToolkitError, UnknownNameError
from tuning.evaluate import save_model
from tuning.study import package_versions, read_config, study_paths

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
ARTEFACTS = {"keras": "model.keras", "savedmodel": "savedmodel", "tflite": "model.tflite", "onnx": "model.onnx"}
ONNX_HINT = ("ONNX export needs tf2onnx and onnx: pip install tf2onnx onnx onnxruntime (the project's 'onnx' extra), "
             "then rerun 'tuning export'")
PREPROCESSING = ("Inside the model: antialiased bilinear resize to size x size (tuning.resize.ResizeRGB, the op "
                 "that prepared the training and test images), rounded to whole values, then scaled to [0, 1]. "
                 "Outside: decode upright (EXIF orientation), transparency flattened onto white, any mode to RGB "
                 "(tuning.data.images.load_raw_rgb; 'tuning predict' does this). The .keras file needs the "
                 "tuning package installed to load (its resize layer); SavedModel and TFLite need nothing.")


@dataclass
class ExportResult:
    """What was written; ``skipped`` maps a requested format to the reason it could not be made."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> Path:
        return self.files.get("keras", self.folder / ARTEFACTS["keras"])


def parse_formats(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """``keras,savedmodel`` -> a checked list; ``all`` means every format."""
    items = [f.strip().lower() for f in (text.split(",") if isinstance(text, str) else text) if f.strip()]
    if items == ["all"]:
        return list(FORMATS)
    for name in items:
        if name not in FORMATS:
            raise UnknownNameError("export format", name, FORMATS)
    if not items:
        raise ToolkitError(f"no export format given; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(items))


def export_study(folder: Path, *, formats: list[str] | tuple[str, ...] | None = None) -> ExportResult:
    """Write ``export/`` (the requested formats plus ``model_card.json``/``.md``) from ``final/``.

    Without ``formats`` it writes ``keras`` plus every format already in ``export/``, so a retrain or a resumed
    search never leaves an artefact of the previous model beside the new one.
    """
    paths = study_paths(folder)
    final_model = paths["final"] / "model.keras"
    if not final_model.exists():
        raise StudyError(f"{folder}: no retrained model (final/model.keras); run 'tuning search' to the end first")
    if formats is None:
        formats = ["keras", *(f for f in FORMATS[1:] if (paths["export"] / ARTEFACTS[f]).exists())]
    formats = parse_formats(list(formats))
    config = read_config(folder)
    metrics = _io.read_json(paths["final"] / "metrics.json")
    out = paths["export"]
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out)
    model = serving_model(load_model(final_model), int(metrics["params"]["image_size"]))
    save_model(model, out / ARTEFACTS["keras"])
    result.files["keras"] = out / ARTEFACTS["keras"]
    if any(f != "keras" for f in formats):
        with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as work:
            saved = Path(work) / "savedmodel"
            _quiet(lambda: model.export(saved, format="tf_saved_model", verbose=False))
            if "tflite" in formats:
                result.files["tflite"] = _write_tflite(saved, out / ARTEFACTS["tflite"])
            if "onnx" in formats:
                if importlib.util.find_spec("tf2onnx") is None or importlib.util.find_spec("onnx") is None:
                    result.skipped["onnx"] = ONNX_HINT
                else:
                    target = Path(work) / "model.onnx"
                    _quiet(lambda: model.export(target, format="onnx", verbose=False))
                    os.replace(target, out / ARTEFACTS["onnx"])
                    result.files["onnx"] = out / ARTEFACTS["onnx"]
            if "savedmodel" in formats:
                result.files["savedmodel"] = _replace_dir(saved, out / ARTEFACTS["savedmodel"])
    result.files = {f: result.files[f] for f in FORMATS if f in result.files}  # keras always ships: the reference
    card = _card(config, metrics, result, folder)
    _io.write_json(out / "model_card.json", _json_safe(card))
    _io.write_text(out / "model_card.md", _card_markdown(card))
    return result


def serving_model(network: Any, size: int) -> Any:
    """The tested network behind the dataset's resize: (batch, any height, any width, 3) uint8 in."""
    import keras

    from tuning.resize import ResizeRGB

    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    return keras.Model(image, network(ResizeRGB(size, dtype="float32", name="resize")(image)), name="serving")


def _json_safe(value: Any) -> Any:
    """NaN (an unknown spread, say) as null: strict JSON readers elsewhere reject NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _quiet(fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _write_tflite(saved: Path, path: Path) -> Path:
    import tensorflow as tf

    content = _quiet(lambda: tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    with _io.atomic_path(path) as tmp:
        tmp.write_bytes(content)
    return path


def _replace_dir(src: Path, dest: Path) -> Path:
    """Swap a finished folder in; the old one goes only after the new one is complete."""
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    src.rename(dest)
    if old.exists():
        shutil.rmtree(old)
    return dest


def _sha256(path: Path) -> str:
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
        return digest.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _card(config: Any, metrics: dict[str, Any], result: ExportResult, folder: Path) -> dict[str, Any]:
    size = int(metrics["params"]["image_size"])
    manifest = Path(config.dataset) / "manifest.csv"
    test_keys = ("n", "accuracy", "accuracy_ci95", "balanced_accuracy", "roc_auc_macro", "per_class", "seeds",
                 "fit_on")
    return {
        "model": config.model,
        "study": config.name,
        "classes": metrics["classes"],
        "input": {"height": "any", "width": "any", "channels": 3, "dtype": "uint8 RGB 0-255",
                  "resized_to": [size, size], "preprocessing": PREPROCESSING},
        "output": f"probabilities of the {len(metrics['classes'])} classes, in the order of 'classes'",
        "test": {k: metrics[k] for k in test_keys if k in metrics},
        "confusion_matrix": metrics["confusion_matrix"],
        "params": metrics["params"],
        "trained": {"fit_on": metrics.get("fit_on", "train"), "epochs": metrics.get("epochs_trained"),
                    "seed": metrics.get("seed", config.seed), "split_sizes": metrics.get("split_sizes")},
        "files": {fmt: {"path": path.name, "sha256": _sha256(path)} for fmt, path in result.files.items()},
        "not_exported": result.skipped,
        "dataset": config.dataset,
        "dataset_manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else "",
        "versions": package_versions(),
    }


def _card_markdown(card: dict[str, Any]) -> str:
    test = card["test"]
    low, high = test["accuracy_ci95"]
    seeds = test.get("seeds") or {}
    lines = [
        f"# {card['model']} from study {card['study']}", "",
        f"Classes: {', '.join(card['classes'])}. Output: {card['output']}.", "",
        f"Input: (batch, height, width, 3) {card['input']['dtype']}, any height and width (one size per batch). "
        f"Preprocessing: {card['input']['preprocessing']}", "",
        f"Test accuracy {test['accuracy']:.3f} (95% Wilson CI {low:.3f}-{high:.3f}, n={test['n']}), "
        f"balanced accuracy {test['balanced_accuracy']:.3f}"
        + (f", macro ROC-AUC {test['roc_auc_macro']:.3f}" if test.get("roc_auc_macro") is not None else "") + ".",
    ]
    if seeds.get("k", 1) > 1:
        lo, hi = seeds["ci95"]
        lines += ["", f"Across {seeds['k']} retraining seeds: mean {seeds['mean']:.3f}, std {seeds['std']:.3f}, "
                      f"95% t-interval {lo:.3f}-{hi:.3f} (the shipped model is the first seed)."]
    lines += ["", f"Trained on: {card['trained']['fit_on']} for {card['trained']['epochs']} epochs.", "",
              "| parameter | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in card["params"].items()), "",
              "| file | sha256 |", "| --- | --- |",
              *(f"| {v['path']} | {v['sha256']} |" for v in card["files"].values())]
    for fmt, reason in card["not_exported"].items():
        lines += ["", f"Not exported: {fmt}: {reason}"]
    lines += ["", f"Dataset manifest sha256: {card['dataset_manifest_sha256'] or '(no manifest.csv)'}", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()), ""]
    return "\n".join(lines)


def load_model(path: Path) -> Any:
    """Load a ``.keras`` file in Keras safe mode; anything else is a clear error, never code execution."""
    import keras

    import tuning.resize  # noqa: F401 - registers the exported models' resize layer

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - every loader failure means "not a usable model file"
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ToolkitError(f"{path}: not a loadable .keras model ({type(exc).__name__}: {reason})") from None


@dataclass
class Predictor:
    """One way to run a model file: decoded RGB uint8 images of any size in, probabilities out."""

    batch: Callable[[np.ndarray], np.ndarray]  # one (n, height, width, 3) stack in, (n, classes) out
    size: int | None  # None: the model resizes inside (exported); else it wants size x size (final/model.keras)
    n_classes: int
    format: str

    def run(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities per image; images of one shape go through together, 32 at a time."""
        if self.size is not None:
            from tuning.resize import resize_rgb

            images = [resize_rgb(im, self.size) for im in images]
        out = np.zeros((len(images), self.n_classes), dtype=np.float32)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for idx in by_shape.values():
            for at in range(0, len(idx), 32):
                chunk = idx[at : at + 32]
                out[chunk] = self.batch(np.stack([images[i] for i in chunk]))
        return out


def _fixed_size(shape: Sequence[Any]) -> int | None:
    return None if shape[1] is None or int(shape[1]) < 0 else int(shape[1])


def load_predictor(path: Path) -> Predictor:
    """A ``.keras`` file, a SavedModel folder or a ``.tflite`` file, each behind the same call."""
    path = Path(path)
    if path.is_dir():
        return _savedmodel_predictor(path)
    if path.suffix.lower() == ".tflite":
        return _tflite_predictor(path)
    if path.suffix.lower() == ".onnx":
        return _onnx_predictor(path)
    model = load_model(path)
    dtype = str(model.inputs[0].dtype)
    return Predictor(lambda x: np.asarray(model.predict_on_batch(x.astype(dtype))),
                     _fixed_size(model.input_shape), int(model.output_shape[-1]), "keras")


def _savedmodel_predictor(path: Path) -> Predictor:
    import tensorflow as tf

    if not (path / "saved_model.pb").exists():
        raise ToolkitError(f"{path}: not a SavedModel folder (no saved_model.pb)")
    try:
        loaded = tf.saved_model.load(str(path))
        serve = loaded.signatures["serving_default"]
    except Exception as exc:  # noqa: BLE001 - every loader failure means "not a usable SavedModel"
        raise ToolkitError(f"{path}: not a loadable SavedModel ({type(exc).__name__})") from None
    spec = next(iter(serve.structured_input_signature[1].values()))
    n_classes = int(next(iter(serve.structured_outputs.values())).shape[-1])
    return Predictor(lambda x: next(iter(serve(tf.constant(x, dtype=spec.dtype)).values())).numpy(),
                     _fixed_size(spec.shape.as_list()), n_classes, "savedmodel")


def _tflite_predictor(path: Path) -> Predictor:
    import tensorflow as tf

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(path))
    except Exception as exc:  # noqa: BLE001 - every loader failure means "not a usable TFLite file"
        raise ToolkitError(f"{path}: not a loadable TFLite model ({type(exc).__name__})") from None
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def batch(x: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(outp["index"]))

    return Predictor(batch, _fixed_size(list(inp["shape_signature"])), int(outp["shape"][-1]), "tflite")


def _onnx_predictor(path: Path) -> Predictor:
    if importlib.util.find_spec("onnxruntime") is None:
        raise ToolkitError(f"{path}: predicting with ONNX needs onnxruntime: pip install onnxruntime (or use "
                           "the .keras, SavedModel or .tflite file)")
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - every loader failure means "not a usable ONNX file"
        raise ToolkitError(f"{path}: not a loadable ONNX model ({type(exc).__name__})") from None
    inp = session.get_inputs()[0]
    dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
    return Predictor(lambda x: session.run(None, {inp.name: x.astype(dtype)})[0],
                     inp.shape[1] if isinstance(inp.shape[1], int) else None,
                     int(session.get_outputs()[0].shape[-1]), "onnx")


def _classes_for(model_path: Path, n: int) -> list[str]:
    model_path = Path(model_path)
    for folder in (model_path.parent, model_path.parent.parent):
        card = folder / "model_card.json"
        if card.exists():
            classes = list(_io.read_json(card).get("classes", []))
            if len(classes) == n:
                return classes
    return [str(i) for i in range(n)]


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given, folders searched recursively for images."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            out.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            out.append(path)
        else:
            raise ToolkitError(f"{path}: no such file or folder")
    return out


def predict(model_path: Path, inputs: list[Path], *, top_k: int = 1) -> list[dict[str, Any]]:
    """Top-k classes per image (any size or mode); unreadable images come back with an ``error``."""
    predictor = load_predictor(model_path)
    classes = _classes_for(model_path, predictor.n_classes)
    files = expand_inputs(inputs)
    rows: list[dict[str, Any]] = []
    arrays, ok = [], []
    for path in files:
        try:
            arrays.append(load_raw_rgb(path))
            ok.append(path)
        except Exception as exc:  # noqa: BLE001 - report the file, go on with the others
            rows.append({"file": str(path), "error": (str(exc).splitlines() or [""])[0][:160] or type(exc).__name__})
    if arrays:
        probs = predictor.run(arrays)
        for path, p in zip(ok, probs):
            order = np.argsort(-p)[: max(1, top_k)]
            rows.append({"file": str(path), "top": [{"class": classes[i], "probability": float(p[i])} for i in order],
                         "probabilities": {c: float(v) for c, v in zip(classes, p)}})
    return rows


def predictions_table(rows: list[dict[str, Any]]) -> str:
    """``predict``'s rows as CSV: file, predicted, its probability, every class probability, error."""
    classes = next((list(r["probabilities"]) for r in rows if "probabilities" in r), [])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "predicted", "probability", *(f"p_{c}" for c in classes), "error"])
    for r in rows:
        if "error" in r:
            writer.writerow([r["file"], "", "", *([""] * len(classes)), r["error"]])
        else:
            top = r["top"][0]
            writer.writerow([r["file"], top["class"], f"{top['probability']:.6f}",
                             *(f"{r['probabilities'][c]:.6f}" for c in classes), ""])
    return buf.getvalue()
