"""Export and predict from a process whose Keras runs on torch or jax, and on a machine without TensorFlow.

Each case runs the real CLI in a child process with ``KERAS_BACKEND`` set (the backend is fixed when Keras is
first imported, so it cannot change inside the test process). The study's ``final/model.keras`` is the same file
whichever backend trained it, so the session's finished study stands in for one trained under torch or jax.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Hides TensorFlow as on a machine where it is not installed: ``find_spec`` says None (torch asks so) and
#: ``import tensorflow`` raises ModuleNotFoundError.
BLOCKER = '''
import sys

class _HideTensorFlow:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.inner, name)

sys.meta_path[:] = [_HideTensorFlow(f) if getattr(f, "__name__", "") == "PathFinder" else f for f in sys.meta_path]
'''


def _tuning(*args: str, backend: str, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (site, ROOT) if p is not None)
    return subprocess.run([sys.executable, "-m", "tuning", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def _recorded(folder: Path, dataset: Path) -> tuple[list[str], np.ndarray]:
    """The original test files and the probabilities the tested model gave them."""
    with open(folder / "final" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return ([str(dataset / r["file"]) for r in rows],
            np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows]))


def _predicted(model: Path, files: list[str], *, backend: str, site: Path | None = None) -> np.ndarray:
    done = _tuning("predict", str(model), *files, "--json", "--top-k", "3", backend=backend, site=site)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["file"] for r in rows] == files
    return np.array([[r["probabilities"][c] for c in ("Action", "Anime", "Romance")] for r in rows])


@pytest.fixture()
def study(study_copy: Path, tmp_path: Path) -> Path:
    folder = tmp_path / study_copy.name
    shutil.copytree(study_copy, folder)
    shutil.rmtree(folder / "export", ignore_errors=True)
    return folder


@pytest.fixture()
def no_tensorflow(tmp_path: Path) -> Path:
    """A folder whose sitecustomize.py blocks TensorFlow in every process started with it on PYTHONPATH."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    return site


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_keras_and_onnx_export_from_another_backend_answer_as_the_tested_model(backend: str, study: Path,
                                                                               tiny_dataset: Path) -> None:
    done = _tuning("export", "--study", str(study), "--format", "keras,onnx", backend=backend)
    assert done.returncode == 0, done.stderr[-2000:]
    export = study / "export"
    assert "model.onnx" in done.stdout and (export / "model.onnx").stat().st_size > 1000
    card = json.loads((export / "model_card.json").read_text())
    assert set(card["files"]) == {"keras", "onnx"} and card["not_exported"] == {}
    files, recorded = _recorded(study, tiny_dataset)
    for name in ("model.keras", "model.onnx"):
        probs = _predicted(export / name, files, backend=backend)
        assert np.abs(probs - recorded).max() < 1e-4, name
        assert (probs.argmax(axis=1) == recorded.argmax(axis=1)).all(), name


@pytest.mark.slow
def test_without_tensorflow_keras_and_onnx_export_and_predict_and_the_rest_say_what_is_missing(
        study: Path, tiny_dataset: Path, no_tensorflow: Path) -> None:
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=dict(os.environ, PYTHONPATH=str(
        no_tensorflow)), capture_output=True, text=True, check=False)
    assert probe.returncode == 1 and "No module named 'tensorflow'" in probe.stderr  # the blocker works
    done = _tuning("export", "--study", str(study), "--format", "keras,onnx", backend="torch", site=no_tensorflow)
    assert done.returncode == 0, done.stderr[-2000:]
    files, recorded = _recorded(study, tiny_dataset)
    for name in ("model.keras", "model.onnx"):
        probs = _predicted(study / "export" / name, files, backend="torch", site=no_tensorflow)
        assert np.abs(probs - recorded).max() < 1e-4, name

    done = _tuning("export", "--study", str(study), "--format", "keras,savedmodel,tflite", backend="torch",
                   site=no_tensorflow)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: savedmodel not exported: SavedModel "
                                                                   "export needs TensorFlow")
    assert "tflite not exported: TFLite export needs TensorFlow" in done.stderr
    assert "pip install tensorflow" in done.stderr
    assert (study / "export" / "model.keras").exists()  # the format it could write is still written
    assert not (study / "export" / "savedmodel").exists() and not (study / "export" / "model.tflite").exists()
    card = json.loads((study / "export" / "model_card.json").read_text())
    assert set(card["not_exported"]) == {"savedmodel", "tflite"}

    (study / "export" / "model.tflite").write_bytes(b"TFL3 stand-in")  # predict names what a TFLite file needs
    done = _tuning("predict", str(study / "export" / "model.tflite"), files[0], backend="torch", site=no_tensorflow)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "running a TFLite model needs TensorFlow" in done.stderr and ".keras or .onnx" in done.stderr


@pytest.mark.slow
def test_onnx_from_jax_without_tensorflow_says_what_to_install_or_which_backend(study: Path,
                                                                                no_tensorflow: Path) -> None:
    done = _tuning("export", "--study", str(study), "--format", "keras,onnx", backend="jax", site=no_tensorflow)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: onnx not exported: ONNX export from the jax backend needs jax2onnx or "
                                  "TensorFlow")
    assert "KERAS_BACKEND=torch" in done.stderr
    assert (study / "export" / "model.keras").exists() and not (study / "export" / "model.onnx").exists()
