"""Ship the retrained model: a ``.keras`` file that takes raw RGB images, with a model card beside it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.data.images import IMAGE_SUFFIXES, load_rgb
from tuning.errors import StudyError, ToolkitError
from tuning.study import package_versions, read_config, study_paths


def export_study(folder: Path) -> Path:
    """Copy ``final/model.keras`` to ``export/`` with ``model_card.json``/``.md``; returns the model path."""
    paths = study_paths(folder)
    final_model = paths["final"] / "model.keras"
    if not final_model.exists():
        raise StudyError(f"{folder}: no retrained model (final/model.keras); run 'tuning search' to the end first")
    config = read_config(folder)
    metrics = _io.read_json(paths["final"] / "metrics.json")
    out = paths["export"] / "model.keras"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(final_model, out.with_name(".model.partial.keras"))
    out.with_name(".model.partial.keras").replace(out)
    size = int(metrics["params"]["image_size"])
    manifest = Path(config.dataset) / "manifest.csv"
    card = {
        "model": config.model,
        "study": config.name,
        "classes": metrics["classes"],
        "input": {"height": size, "width": size, "channels": 3, "dtype": "uint8 RGB, 0-255",
                  "resize": "predict resizes any image to this size (bilinear) first"},
        "test": {k: metrics[k] for k in ("n", "accuracy", "accuracy_ci95", "balanced_accuracy")},
        "confusion_matrix": metrics["confusion_matrix"],
        "params": metrics["params"],
        "dataset_manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else "",
        "versions": package_versions(),
    }
    _io.write_json(paths["export"] / "model_card.json", card)
    _io.write_text(paths["export"] / "model_card.md", _card_markdown(card))
    return out


def _card_markdown(card: dict[str, Any]) -> str:
    test = card["test"]
    low, high = test["accuracy_ci95"]
    lines = [
        f"# {card['model']} from study {card['study']}", "",
        f"Classes: {', '.join(card['classes'])}. Input: {card['input']['height']}x{card['input']['width']} RGB "
        "uint8 (0-255); scaling happens inside the model.", "",
        f"Test accuracy {test['accuracy']:.3f} (95% CI {low:.3f}-{high:.3f}, n={test['n']}), "
        f"balanced accuracy {test['balanced_accuracy']:.3f}.", "",
        "| parameter | value |", "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in card["params"].items()), "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()), "",
    ]
    return "\n".join(lines)


def load_model(path: Path) -> Any:
    """Load a ``.keras`` file in Keras safe mode; anything else is a clear error, never code execution."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - every loader failure means "not a usable model file"
        raise ToolkitError(f"{path}: not a loadable .keras model ({type(exc).__name__}: {str(exc)[:160]})") from None


def _classes_for(model_path: Path, n: int) -> list[str]:
    card = Path(model_path).with_name("model_card.json")
    if card.exists():
        return list(_io.read_json(card)["classes"])
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
    """Top-k classes per image; unreadable images come back with an ``error`` instead of stopping the run."""
    model = load_model(model_path)
    size = int(model.input_shape[1])
    n_classes = int(model.output_shape[-1])
    classes = _classes_for(model_path, n_classes)
    files = expand_inputs(inputs)
    rows: list[dict[str, Any]] = []
    arrays, ok = [], []
    for path in files:
        try:
            arrays.append(load_rgb(path, size))
            ok.append(path)
        except Exception as exc:  # noqa: BLE001 - report the file, go on with the others
            rows.append({"file": str(path), "error": str(exc).splitlines()[0][:160] or type(exc).__name__})
    if arrays:
        probs = np.asarray(model.predict(np.stack(arrays), verbose=0, batch_size=32))
        for path, p in zip(ok, probs):
            order = np.argsort(-p)[: max(1, top_k)]
            rows.append({"file": str(path), "top": [{"class": classes[i], "probability": float(p[i])} for i in order]})
    return rows
