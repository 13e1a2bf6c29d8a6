"""Ship the retrained model: ``.keras``, SavedModel, TFLite (and ONNX when its converter is installed).

Any Keras backend exports: the ``.keras`` file is the same model on all three, ONNX comes from the backend's own
converter, and what only TensorFlow writes (SavedModel, TFLite) comes from a child process on the TensorFlow
backend when it is installed; a format that cannot be written here is reported with what to install instead.

Every artefact takes raw RGB uint8 images of any height and width and returns class probabilities: resizing
and scaling are inside. The resize is ``tuning.resize.ResizeRGB``, the very op that made the dataset cache,
so a shipped model fed the original test files answers exactly as the tested model did on the prepared
test split (tests hold every format to that). Running a shipped file on images is ``tuning.inference``; the
model card written here carries each artefact's sha256, which is how predict tells a SavedModel this toolkit
wrote (SavedModels are programs, see ``tuning.inference``) from any other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.errors import StudyError, ToolkitError, UnknownNameError
from tuning.evaluate import ENSEMBLE, save_model, shipped_model
from tuning.study import StudyConfig, package_versions, read_config, study_paths

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
ARTEFACTS = {"keras": "model.keras", "savedmodel": "savedmodel", "tflite": "model.tflite", "onnx": "model.onnx"}
SKIPPED_FILE = ".skipped.json"  # what a child process could not write, and why
ONNX_HINT = ("ONNX export needs tf2onnx and onnx: pip install tf2onnx onnx onnxruntime (the project's 'onnx' extra), "
             "then rerun 'tuning export'")
PREPROCESSING = ("Inside the model: antialiased bilinear resize to size x size (tuning.resize.ResizeRGB, the op "
                 "that prepared the training and test images), rounded to whole values, then scaled to [0, 1]. "
                 "Outside: decode upright (EXIF orientation), transparency flattened onto white, any mode to RGB "
                 "(tuning.data.images; 'tuning predict' does this, decoding large images at reduced scale but never "
                 "below twice the input side). The .keras file needs the "
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
    if shipped_model(folder) == ENSEMBLE:  # the ensemble (or TTA) model retrain tested ships instead
        metrics = _io.read_json(paths["final"] / ENSEMBLE / "metrics.json")
        model = ensemble_serving_model(
            [(load_model(paths["final"] / ENSEMBLE / m["model"]), int(m["image_size"])) for m in metrics["members"]],
            tta=str(metrics["tta"]))
    else:
        model = serving_model(load_model(final_model), int(metrics["params"]["image_size"]))
    out = paths["export"]
    out.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out)
    save_model(model, out / ARTEFACTS["keras"])
    result.files["keras"] = out / ARTEFACTS["keras"]
    others = [f for f in formats if f != "keras"]
    if others:
        with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as work:
            written, result.skipped = write_formats(model, out / ARTEFACTS["keras"], Path(work), others)
            for fmt, path in written.items():
                target = out / ARTEFACTS[fmt]
                result.files[fmt] = _io.replace_dir(path, target) if path.is_dir() else _replace_file(path, target)
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


def ensemble_serving_model(members: Sequence[tuple[Any, int]], *, tta: str = "none") -> Any:
    """Several tested networks as ONE shipped model: raw uint8 in, their mean probabilities out.

    ``members`` are (network, its image size). Each size is resized to once and shared by the members of that
    size; with ``tta="flip"`` each member also sees the left-right mirror of its resized input, and every
    output counts the same in the mean, which is what ``tuning retrain --ensemble/--tta`` tested. ``tuning
    predict`` decodes for the largest resize, so every member sees enough source pixels.
    """
    import keras

    from tuning.evaluate import TTA
    from tuning.resize import ResizeRGB
    from tuning.tta import MirrorRGB

    if tta not in TTA:
        raise UnknownNameError("--tta value", tta, TTA)
    if not members:
        raise ToolkitError("an ensemble needs at least one member")
    image = keras.Input((None, None, 3), dtype="uint8", name="image")
    sizes = sorted({int(size) for _, size in members}, reverse=True)
    resized = {size: ResizeRGB(size, dtype="float32", name=f"resize_{size}")(image) for size in sizes}
    mirrored = {size: MirrorRGB(name=f"mirror_{size}")(x) for size, x in resized.items()} if tta == "flip" else {}
    outputs = []
    for i, (network, size) in enumerate(members):
        network.name = f"member_{i}"  # two members built by one model function share its name
        outputs.append(network(resized[int(size)]))
        if tta == "flip":
            outputs.append(network(mirrored[int(size)]))
    probs = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="mean_probabilities")(outputs)
    return keras.Model(image, probs, name="ensemble")


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


def write_formats(model: Any, keras_file: Path, work: Path, formats: list[str]
                  ) -> tuple[dict[str, Path], dict[str, str]]:
    """The formats besides ``.keras`` written into ``work``, and why any could not be, under any Keras backend.

    Keras writes SavedModel (and TFLite from it) only through TensorFlow, and ONNX differently per backend:
    TensorFlow through tf2onnx, torch through ``torch.onnx``, jax through jax2onnx. What the backend of this
    process cannot write is written from the ``.keras`` file in a child process under the TensorFlow backend
    when TensorFlow is installed (the file is the same model on every backend); otherwise the reason says what
    to install or which backend to export with.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        here = list(formats)
    else:
        here = [f for f in formats if f == "onnx" and (backend == "torch" or _available("jax2onnx"))]
    written, skipped = _write_here(model, work, here, backend=backend)
    rest = [f for f in formats if f not in here]
    if rest and _available("tensorflow"):
        more, not_written = _write_under_tensorflow(keras_file, work, rest)
        written |= more
        skipped |= not_written
    else:
        skipped |= {f: _tensorflow_needed(f, backend) for f in rest}
    return written, skipped


def _write_here(model: Any, work: Path, formats: list[str], *, backend: str
                ) -> tuple[dict[str, Path], dict[str, str]]:
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    if "savedmodel" in formats or "tflite" in formats:  # TensorFlow backend only (see write_formats)
        saved = work / ARTEFACTS["savedmodel"]
        _quiet(lambda: model.export(saved, format="tf_saved_model", verbose=False))
        if "tflite" in formats:
            written["tflite"] = _write_tflite(saved, work / ARTEFACTS["tflite"])
        if "savedmodel" in formats:
            written["savedmodel"] = saved
    if "onnx" in formats:
        if backend == "tensorflow" and not (_available("tf2onnx") and _available("onnx")):
            skipped["onnx"] = ONNX_HINT
        else:
            target = work / ARTEFACTS["onnx"]
            model(np.zeros((1, 8, 8, 3), dtype="uint8"))  # Keras exports ONNX only from a model called once
            try:
                _quiet(lambda: model.export(target, format="onnx", verbose=False))
            except ImportError as exc:  # torch.onnx's or jax2onnx's own optional dependencies
                name = exc.name or "its converter's dependencies"
                skipped["onnx"] = (f"ONNX export from the {backend} backend needs {name}: pip install {name}, or "
                                   "export with KERAS_BACKEND=tensorflow (with tf2onnx)")
            else:
                written["onnx"] = target
    return written, skipped


def _tensorflow_needed(fmt: str, backend: str) -> str:
    if fmt == "onnx":
        return (f"ONNX export from the {backend} backend needs jax2onnx or TensorFlow: pip install jax2onnx (or "
                "tensorflow tf2onnx), or export with KERAS_BACKEND=torch")
    name = {"savedmodel": "SavedModel", "tflite": "TFLite"}[fmt]
    return (f"{name} export needs TensorFlow, which is not installed here: pip install tensorflow and rerun "
            "'tuning export' (the .keras and .onnx files need no TensorFlow)")


def _available(module: str) -> bool:
    """Whether ``module`` can be imported (a finder that refuses it counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _write_under_tensorflow(keras_file: Path, work: Path, formats: list[str]
                            ) -> tuple[dict[str, Path], dict[str, str]]:
    """``_write_here`` in a child process whose Keras runs on TensorFlow, from the ``.keras`` file just written."""
    import subprocess
    import sys

    import tuning

    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    root = str(Path(tuning.__file__).resolve().parent.parent)  # the child imports this very package
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    code = "import sys; from tuning.export import _tensorflow_child; _tensorflow_child(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, str(keras_file), str(work), *formats], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
        raise ToolkitError(f"{keras_file}: writing {', '.join(formats)} under the TensorFlow backend failed ({last})")
    skipped: dict[str, str] = _io.read_json(work / SKIPPED_FILE)
    return {f: work / ARTEFACTS[f] for f in formats if f not in skipped}, skipped


def _tensorflow_child(argv: list[str]) -> None:
    """The child of ``_write_under_tensorflow``: writes the formats and, beside them, what it skipped and why."""
    from tuning import runtime

    runtime.load_tensorflow()  # its start-up notices hidden
    keras_file, work, *formats = argv
    _, skipped = _write_here(load_model(Path(keras_file)), Path(work), formats, backend="tensorflow")
    _io.write_json(Path(work) / SKIPPED_FILE, skipped)


def _write_tflite(saved: Path, path: Path) -> Path:
    import tensorflow as tf

    content = _quiet(lambda: tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    with _io.atomic_path(path) as tmp:
        tmp.write_bytes(content)
    return path


def _replace_file(src: Path, dest: Path) -> Path:
    os.replace(src, dest)
    return dest


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files in sorted order with their relative names.

    The card records it for every artefact; ``tuning predict`` recomputes it for a SavedModel, whose graph may
    hold any TensorFlow op (file reads and writes too), to know the folder is the one this toolkit wrote.
    """
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
        return digest.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _card(config: StudyConfig, metrics: dict[str, Any], result: ExportResult, folder: Path) -> dict[str, Any]:
    members = metrics.get("members", [])  # an ensemble's: metrics["params"] holds what they all share
    size = max([int(m["image_size"]) for m in members] or [int(metrics["params"]["image_size"])])
    manifest = Path(config.dataset) / "manifest.csv"
    test_keys = ("n", "accuracy", "accuracy_ci95", "balanced_accuracy", "balanced_accuracy_ci95", "roc_auc_macro",
                 "per_class", "seeds", "fit_on", "mcnemar")
    ensemble = {"ensemble": {"tta": metrics["tta"], "members": [
        {k: m[k] for k in ("trial", "image_size", "differs", "accuracy", "accuracy_ci95", "balanced_accuracy",
                           "epochs_trained")} for m in members]}} if members else {}
    return ensemble | {
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
        "files": {fmt: {"path": path.name, "sha256": content_sha256(path)} for fmt, path in result.files.items()},
        "not_exported": result.skipped,
        "dataset": config.dataset,
        "dataset_manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else "",
        "versions": package_versions(),
    }


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


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
    ensemble = card.get("ensemble")
    if ensemble:
        tta = " with each image's mirror averaged in (--tta flip)" if ensemble["tta"] == "flip" else ""
        lines += ["", f"One model averaging the probabilities of {len(ensemble['members'])} member(s){tta}, each "
                      "resized to its own size inside. The test figures above are the ensemble's.", "",
                  "| member (trial) | image size | differs in | test accuracy (95% CI) | balanced accuracy | epochs |",
                  "| --- | --- | --- | --- | --- | --- |",
                  *(f"| #{m['trial']} | {m['image_size']} | "
                    f"{', '.join(f'{k}={_short(v)}' for k, v in m['differs'].items()) or '-'} | {m['accuracy']:.3f} "
                    f"({m['accuracy_ci95'][0]:.3f}-{m['accuracy_ci95'][1]:.3f}) | {m['balanced_accuracy']:.3f} | "
                    f"{m['epochs_trained']} |" for m in ensemble["members"])]
        lines += ["", f"Trained on: {card['trained']['fit_on']}; the parameters all members share:", ""]
    else:
        lines += ["", f"Trained on: {card['trained']['fit_on']} for {card['trained']['epochs']} epochs.", ""]
    lines += ["| parameter | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in card["params"].items()), "",
              "| file | sha256 |", "| --- | --- |",
              *(f"| {v['path']} | {v['sha256']} |" for v in card["files"].values())]
    for fmt, reason in card["not_exported"].items():
        lines += ["", f"Not exported: {fmt}: {reason}"]
    lines += ["", f"Dataset manifest sha256: {card['dataset_manifest_sha256'] or '(no manifest.csv)'}", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()), ""]
    return "\n".join(lines)


def load_model(path: Path) -> Any:
    """Load a ``.keras`` file in Keras safe mode; anything else is a clear error, never code execution."""
    try:
        import keras
    except ImportError as exc:  # KERAS_BACKEND=tensorflow (the default) where TensorFlow is not installed
        raise ToolkitError(f"Keras cannot start ({exc}): pip install tensorflow, or set KERAS_BACKEND=torch or "
                           "jax") from None

    from tuning import resize, tta  # noqa: F401 - registers the exported models' resize and mirror layers

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - every loader failure means "not a usable model file"
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ToolkitError(f"{path}: not a loadable .keras model ({type(exc).__name__}: {reason})") from None
