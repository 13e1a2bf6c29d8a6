"""Classify image files with a shipped model file: ``.keras``, SavedModel folder, ``.tflite`` or ``.onnx``.

Two things shape this module. Memory: files are decoded one at a time, no larger than the model's own resize
needs (JPEGs at 1/2, 1/4 or 1/8 scale, never below twice the input side, so the in-model antialiased resize
still averages over enough pixels), and go to the model in batches bounded by pixels and by count, so a
folder of 400 photos needs the memory of one batch, not of 400 decoded photos. Trust: a ``.keras`` file is
loaded in Keras safe mode (no stored Python runs), but a SavedModel is a TensorFlow program that may read and
write files when called; one is run only when the ``model_card.json`` beside it records its sha256, i.e. this
toolkit wrote it, unless the caller passes ``safe=False`` (``--no-safe``).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.data.images import IMAGE_SUFFIXES, image_files, load_raw_rgb, load_small_rgb
from tuning.errors import DataError, ToolkitError
from tuning.export import content_sha256, load_model

#: A batch holds at most this many pixels (8.4 M: 25 MB as uint8, ~100 MB once the model's resize casts it to
#: float32) and at most ``MAX_BATCH_IMAGES`` images; with them the decoded images held at once stay bounded
#: whatever the number of files.
MAX_BATCH_PIXELS = 1 << 23
MAX_BATCH_IMAGES = 32
#: Decode no smaller than this many times the model's input side: the antialiased resize inside the model then
#: still sees at least two source pixels per output pixel, as it did on the full-size training files.
DECODE_MARGIN = 2

SAVEDMODEL_RISK = "a SavedModel runs whatever TensorFlow ops it holds (file reads and writes included)"


@dataclass
class Predictor:
    """One way to run a model file: a stack of decoded RGB uint8 images of one size in, probabilities out."""

    batch: Callable[[np.ndarray], np.ndarray]  # one (n, height, width, 3) stack in, (n, classes) out
    size: int | None  # None: the model resizes inside (exported); else it wants size x size (final/model.keras)
    n_classes: int
    format: str
    side: int | None = None  # the side the model resizes to, when known: decoding needs no more than 2x it
    warnings: list[str] = field(default_factory=list)  # for the user, one line each (an unvouched SavedModel)

    def run(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities for images already decoded (any sizes), in their order."""
        out = np.zeros((len(images), self.n_classes), dtype=np.float32)
        for batch in stream_batches(range(len(images)), lambda i: self.prepare(images[i])):
            if batch.images is None:
                raise ToolkitError(f"image {batch.indices[0]}: {batch.error}")
            out[batch.indices] = self.predict_stack(batch.images)
        return out

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """What the model takes: the image itself, or for a fixed-size model its own resize of it."""
        if self.size is None:
            return image
        from tuning.resize import resize_rgb

        return resize_rgb(image, self.size)

    def predict_stack(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.batch(images), dtype=np.float32)


@dataclass
class Batch:
    """Images of one shape, stacked, with their positions in the input; or one file that could not be read."""

    indices: list[int]
    images: np.ndarray | None  # (n, height, width, 3) uint8; None when ``error`` says why the file was skipped
    error: str = ""


def stream_batches(items: Iterable[Any], load: Callable[[Any], np.ndarray], *, max_pixels: int = MAX_BATCH_PIXELS,
                   max_images: int = MAX_BATCH_IMAGES) -> Iterator[Batch]:
    """Load items one by one and yield stacks of equal-shaped images, holding at most ``max_images`` images (the
    one being loaded included) and, beyond the one just loaded, ``max_pixels`` pixels at any time.

    Images wait in one bucket per shape, because a stack needs one shape (exported models take any size, but
    one size per batch); when the held images pass either bound the fullest bucket goes out, so a folder of
    mixed sizes still streams. An item that fails to load comes out at once as a ``Batch`` with its ``error``.
    """
    from tuning.data.images import unreadable_reason

    buckets: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    held_pixels = held_images = 0

    def flush(shape: tuple[int, ...]) -> Batch:
        nonlocal held_pixels, held_images
        members = buckets.pop(shape)
        held_images -= len(members)
        held_pixels -= len(members) * shape[0] * shape[1]
        return Batch([i for i, _ in members], np.stack([a for _, a in members]))

    for index, item in enumerate(items):
        try:
            image = load(item)
        except Exception as exc:  # noqa: BLE001 - report the file, go on with the others
            yield Batch([index], None, unreadable_reason(exc))
            continue
        shape = tuple(image.shape)
        buckets.setdefault(shape, []).append((index, image))
        held_images += 1
        held_pixels += shape[0] * shape[1]
        while buckets and (held_images >= max_images or held_pixels > max_pixels):
            yield flush(max(buckets, key=lambda s: len(buckets[s]) * s[0] * s[1]))
    while buckets:
        yield flush(next(iter(buckets)))


def decoder(side: int | None) -> Callable[[Path], np.ndarray]:
    """Files -> upright RGB uint8, as small as ``side`` allows (full size when the model's side is unknown)."""
    if side is None:
        return load_raw_rgb
    return lambda path: np.asarray(load_small_rgb(path, DECODE_MARGIN * side), dtype=np.uint8)


# ----- model files -------------------------------------------------------------------------------------------
def _fixed_size(shape: Sequence[Any]) -> int | None:
    return None if shape[1] is None or int(shape[1]) < 0 else int(shape[1])


def find_card(model_path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The ``model_card.json`` export wrote beside the model (or one folder up), read, or None."""
    model_path = Path(model_path)
    for folder in (model_path.parent, model_path.parent.parent):
        card = folder / "model_card.json"
        if card.is_file():
            try:
                data = _io.read_json(card)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                return card, data
    return None


def _card_side(model_path: Path) -> int | None:
    found = find_card(model_path)
    try:
        return int(found[1]["input"]["resized_to"][0]) if found else None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def savedmodel_doubt(path: Path) -> str | None:
    """Why the folder is not known to be the SavedModel this toolkit exported, or None when its card vouches."""
    card_path = path.parent / "model_card.json"
    if not card_path.is_file():
        return f"no {card_path.name} beside it records its sha256"
    try:
        entry = _io.read_json(card_path)["files"]["savedmodel"]
        recorded, name = str(entry["sha256"]), str(entry["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{card_path} records no SavedModel sha256"
    if name != path.name:
        return f"{card_path} describes a SavedModel named '{name}', not '{path.name}'"
    if content_sha256(path) != recorded:
        return f"its files do not match the sha256 in {card_path} (changed since export)"
    return None


def load_predictor(path: Path, *, safe: bool = True) -> Predictor:
    """A ``.keras`` file, a SavedModel folder, a ``.tflite`` or ``.onnx`` file, each behind the same call.

    ``safe`` refuses a SavedModel its model card does not vouch for; without it such a model runs, and the
    predictor carries a warning saying so.
    """
    path = Path(path)
    if path.is_dir():
        return _savedmodel_predictor(path, safe=safe)
    if path.suffix.lower() == ".tflite":
        predictor = _tflite_predictor(path)
    elif path.suffix.lower() == ".onnx":
        predictor = _onnx_predictor(path)
    else:
        return _keras_predictor(path)
    predictor.side = predictor.size or _card_side(path)
    return predictor


def _keras_predictor(path: Path) -> Predictor:
    from tuning.resize import ResizeRGB

    model = load_model(path)
    dtype = str(model.inputs[0].dtype)
    size = _fixed_size(model.input_shape)
    side = max((layer.size for layer in model.layers if isinstance(layer, ResizeRGB)), default=None)  # ensembles
    return Predictor(lambda x: np.asarray(model.predict_on_batch(x.astype(dtype))), size,
                     int(model.output_shape[-1]), "keras", side=size or side)


def _savedmodel_predictor(path: Path, *, safe: bool) -> Predictor:
    if not (path / "saved_model.pb").exists():
        raise ToolkitError(f"{path}: not a SavedModel folder (no saved_model.pb)")
    doubt = savedmodel_doubt(path)
    notes = []
    if doubt is not None:
        if safe:
            raise ToolkitError(f"{path}: refused: {SAVEDMODEL_RISK} and {doubt}; rerun with --no-safe only if you "
                               "trust where it came from")
        notes.append(f"{path} is a SavedModel its model card does not vouch for ({doubt}); {SAVEDMODEL_RISK}, "
                     "running it because of --no-safe")
    tf = _tensorflow(path, "a SavedModel")

    try:
        loaded = tf.saved_model.load(str(path))
        serve = loaded.signatures["serving_default"]
    except Exception as exc:  # noqa: BLE001
        raise ToolkitError(f"{path}: not a loadable SavedModel ({type(exc).__name__})") from None
    spec = next(iter(serve.structured_input_signature[1].values()))
    n_classes = int(next(iter(serve.structured_outputs.values())).shape[-1])
    size = _fixed_size(spec.shape.as_list())
    return Predictor(lambda x: next(iter(serve(tf.constant(x, dtype=spec.dtype)).values())).numpy(),
                     size, n_classes, "savedmodel", side=size or _card_side(path), warnings=notes)


def _tensorflow(path: Path, what: str) -> Any:
    """TensorFlow, imported quietly, or an error saying that this model file needs it and which ones do not."""
    from tuning import runtime

    try:
        runtime.load_tensorflow()
        import tensorflow as tf
    except ImportError:
        raise ToolkitError(f"{path}: running {what} needs TensorFlow, which is not installed here: pip install "
                           "tensorflow, or predict with the .keras or .onnx file (they need no TensorFlow)") from None
    return tf


def _tflite_predictor(path: Path) -> Predictor:
    tf = _tensorflow(path, "a TFLite model")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(path))
    except Exception as exc:  # noqa: BLE001
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
    except Exception as exc:  # noqa: BLE001
        raise ToolkitError(f"{path}: not a loadable ONNX model ({type(exc).__name__})") from None
    inp = session.get_inputs()[0]
    dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
    return Predictor(lambda x: session.run(None, {inp.name: x.astype(dtype)})[0],
                     inp.shape[1] if isinstance(inp.shape[1], int) else None,
                     int(session.get_outputs()[0].shape[-1]), "onnx")


def class_names(model_path: Path, n: int) -> tuple[list[str], str | None]:
    """The card's class names, or numbers and a warning saying why the names are unknown."""
    found = find_card(model_path)
    numbered = [str(i) for i in range(n)]
    if found is None:
        return numbered, (f"no model_card.json beside {model_path}, so the class names are unknown; classes are "
                          f"shown as their output index 0-{n - 1}")
    classes = found[1].get("classes")
    if not isinstance(classes, list) or len(classes) != n:
        return numbered, (f"{found[0]} does not list {n} classes for this model's {n} outputs, so the class names "
                          f"are unknown; classes are shown as their output index 0-{n - 1}")
    return [str(c) for c in classes], None


# ----- predicting ----------------------------------------------------------------------------------------------
def input_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders searched recursively for images; none at all is an error."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            out.extend(image_files(path))
        elif path.is_file():
            out.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if not out:
        raise DataError(f"no image files in {', '.join(map(str, paths))} (looked for {', '.join(IMAGE_SUFFIXES)}); "
                        "nothing to predict")
    return out


@dataclass
class Predictions:
    """One row per input file, in input order: ``top`` and ``probabilities``, or the ``error`` it was skipped for."""

    rows: list[dict[str, Any]]
    classes: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def predicted(self) -> int:
        return sum("error" not in r for r in self.rows)

    def skipped(self) -> Counter[str]:
        """Skipped files per reason."""
        return Counter(r["error"] for r in self.rows if "error" in r)


def predict(model_path: Path, inputs: Sequence[Path], *, top_k: int = 1, safe: bool = True,
            max_pixels: int = MAX_BATCH_PIXELS, progress: Callable[[int, int], None] | None = None) -> Predictions:
    """Top-k classes per image (any size or mode), streamed; unreadable images come back with an ``error``.
    ``progress(done, total)`` is called after each batch (and each unreadable file).

    An input with no image file, or whose every file is unreadable, is an error: nothing was predicted.
    """
    files = input_files(inputs)
    predictor = load_predictor(model_path, safe=safe)
    classes, unnamed = class_names(model_path, predictor.n_classes)
    load = decoder(predictor.side)
    rows: list[dict[str, Any]] = [{"file": str(path)} for path in files]
    done = 0
    for batch in stream_batches(files, lambda p: predictor.prepare(load(p)), max_pixels=max_pixels):
        if batch.images is None:
            rows[batch.indices[0]]["error"] = batch.error
        else:
            for i, p in zip(batch.indices, predictor.predict_stack(batch.images)):
                order = np.argsort(-p)[: max(1, top_k)]
                rows[i]["top"] = [{"class": classes[j], "probability": float(p[j])} for j in order]
                rows[i]["probabilities"] = {c: float(v) for c, v in zip(classes, p)}
        done += len(batch.indices)
        if progress:
            progress(done, len(files))
    result = Predictions(rows, classes, [*predictor.warnings, *([unnamed] if unnamed else [])])
    if not result.predicted:
        reasons = ", ".join(f"{n} {reason}" for reason, n in result.skipped().most_common())
        raise DataError(f"none of the {len(files)} image file(s) could be read ({reasons}); nothing predicted")
    return result


def check_csv_target(path: Path) -> None:
    """Refuse a ``--csv`` path before any work: a folder, a path under a file, or a file that is not a
    predictions table (an image, say) that writing would destroy."""
    path = Path(path)
    if path.is_dir():
        raise ToolkitError(f"--csv {path}: is a folder; give a file name such as {path / 'predictions.csv'}")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ToolkitError(f"--csv {path}: {parent} is a file, not a folder")
    if path.exists():
        with open(path, "rb") as fh:
            head = fh.read(len(HEADER_START))
        if head != HEADER_START:
            raise ToolkitError(f"--csv {path}: exists and is not a predictions table; choose another file name")


HEADER_START = b"file,predicted,probability,"


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
