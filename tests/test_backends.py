"""Training on every Keras backend: the whole CLI flow under JAX and PyTorch, each in its own process (Keras
fixes its backend at first import), training with TensorFlow impossible to import, and the resume rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tuning import runtime

ROOT = Path(__file__).resolve().parents[1]
OTHER_BACKENDS = ("jax", "torch")

#: A sitecustomize that makes TensorFlow look not installed, in the process and its children: the path finder
#: no longer sees it, so ``import tensorflow`` raises ModuleNotFoundError and ``find_spec`` answers None (as
#: torch._dynamo asks at import).
NO_TENSORFLOW = """
import sys
from importlib.machinery import PathFinder

HIDDEN = ("tensorflow", "tf_keras", "tensorboard")


class _WithoutTensorFlow(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [_WithoutTensorFlow if finder is PathFinder else finder for finder in sys.meta_path]
"""


def _needs(backend: str) -> None:
    if not runtime.installed(backend):
        pytest.skip(f"the {backend} backend is not installed (pip install 'tuning[backends]')")


def _tuning(args: list[str], cwd: Path, *, backend: str | None, pythonpath: tuple[Path, ...] = (),
            timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``python -m tuning ARGS`` in a fresh process, this checkout first on the path, ``KERAS_BACKEND`` set."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (*pythonpath, ROOT))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    return subprocess.run([sys.executable, "-m", "tuning", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def _search_args(data: Path, space: Path, study: str) -> list[str]:
    return ["search", "--model", "alexnet", "--data", str(data), "--space", str(space), "--budget", "quick",
            "--trials", "2", "--epochs", "1", "--pruner", "none", "--seed", "3", "--study", study]


def _trial_params(folder: Path) -> list[dict[str, Any]]:
    return [json.loads((folder / "trials" / str(n) / "history.json").read_text())["params"] for n in (0, 1)]


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose sitecustomize.py makes ``import tensorflow`` fail (put it first on PYTHONPATH)."""
    site = tmp_path_factory.mktemp("no-tensorflow")
    (site / "sitecustomize.py").write_text(NO_TENSORFLOW, encoding="utf-8")
    return site


@pytest.fixture(scope="module")
def flows(tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory,
          no_tensorflow: Path) -> dict[str, Path]:
    """One tiny study per installed non-TensorFlow backend, trained in a worker process (the default
    --trials-per-process), each made by its own ``tuning search``: JAX asked for with ``--backend jax`` alone
    (no KERAS_BACKEND: the checking child must not import keras before choosing), PyTorch with only
    ``KERAS_BACKEND`` set and ``import tensorflow`` made impossible, in the command and its workers."""
    out = {}
    for backend in OTHER_BACKENDS:
        if not runtime.installed(backend):
            continue
        cwd = tmp_path_factory.mktemp(f"flow-{backend}")
        by_flag = backend == "jax"
        args = _search_args(tiny_dataset, tiny_space("alexnet"), "s") + (["--backend", backend] if by_flag else [])
        done = _tuning(args, cwd, backend=None if by_flag else backend,
                       pythonpath=(no_tensorflow,) if backend == "torch" else ())
        assert done.returncode == 0, done.stderr[-3000:]
        out[backend] = cwd
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_search_retrain_report_export_predict_on_each_backend(backend: str, flows: dict[str, Path],
                                                              tiny_dataset: Path) -> None:
    _needs(backend)
    cwd = flows[backend]
    folder = cwd / "runs" / "s"
    config = tomllib.loads((folder / "config.toml").read_text())
    assert config["runtime"]["backend"] == backend
    for n in (0, 1):  # trained in a child process, which inherited the backend
        assert json.loads((folder / "trials" / str(n) / "history.json").read_text())["backend"] == backend
    for args in (["retrain", "--study", "s"], ["report", "--study", "s"],
                 ["export", "--study", "s", "--format", "keras"]):
        done = _tuning(args, cwd, backend=None)  # no KERAS_BACKEND: retrain takes the study's own
        assert done.returncode == 0, (args, done.stderr[-3000:])
    assert (folder / "report" / "index.html").exists()
    image = next((tiny_dataset / "raw").glob("*/*"))
    done = _tuning(["predict", str(folder / "export" / "model.keras"), str(image), "--json"], cwd, backend=backend)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["file"] == str(image) and row["top"][0]["class"] in ("Action", "Anime", "Romance")


@pytest.mark.slow
def test_the_same_seed_draws_the_same_parameters_on_every_backend(flows: dict[str, Path]) -> None:
    if len(flows) < 2:
        pytest.skip("needs both jax and torch installed")
    sequences = [_trial_params(cwd / "runs" / "s") for cwd in flows.values()]
    assert sequences[0] == sequences[1]
    assert sequences[0][0] != sequences[0][1]  # two draws, not one repeated


@pytest.mark.slow
def test_keras_tuner_trains_on_the_chosen_backend(tiny_dataset: Path, tiny_space: Callable[[str], Path],
                                                 tmp_path: Path) -> None:
    """The optuna engine's workers are covered by ``flows``; Keras Tuner builds its own models (under JAX here)."""
    backend = "jax"
    _needs(backend)
    done = _tuning([*_search_args(tiny_dataset, tiny_space("alexnet"), "other"), "--backend", backend,
                    "--engine", "kerastuner", "--sampler", "random"], tmp_path, backend=None)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "runs" / "other"
    assert tomllib.loads((folder / "config.toml").read_text())["runtime"]["backend"] == backend
    backends = {json.loads(p.read_text())["backend"] for p in (folder / "trials").glob("*/history.json")}
    assert backends == {backend}


@pytest.mark.slow
def test_training_under_torch_never_imports_tensorflow(flows: dict[str, Path], no_tensorflow: Path) -> None:
    _needs("torch")
    assert runtime.installed("tensorflow")  # here it is; under the sitecustomize it is not
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(no_tensorflow)})
    assert "ModuleNotFoundError: No module named 'tensorflow'" in probe.stderr  # so the search under it proves it
    folder = flows["torch"] / "runs" / "s"  # searched, retrained, tested, reported and exported with it
    assert tomllib.loads((folder / "config.toml").read_text())["runtime"]["backend"] == "torch"
    assert json.loads((folder / "final" / "metrics.json").read_text())["n"] > 0
    assert (folder / "export" / "model.keras").exists() and (folder / "report" / "index.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_a_resumed_study_keeps_its_backend(backend: str, flows: dict[str, Path], tiny_dataset: Path,
                                           tiny_space: Callable[[str], Path]) -> None:
    _needs(backend)
    cwd = flows[backend]
    other = "tensorflow"
    done = _tuning([*_search_args(tiny_dataset, tiny_space("alexnet"), "s"), "--backend", other], cwd, backend=None,
                   timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: runs/s holds a study with backend '{backend}', not '{other}'; rerun with --backend {backend} to "
        "resume it, or pass --study NEW_NAME for a new study"]
    # no flag: the study's own backend, whatever KERAS_BACKEND says, chosen before keras is imported
    code = ("import sys\nfrom pathlib import Path\nfrom tuning.pipeline import SearchRequest, choose_backend\n"
            f"print(choose_backend(SearchRequest(model='alexnet', data=Path({str(tiny_dataset)!r}), study='s')),"
            " 'keras' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow"}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [backend, "False"]


def test_the_library_refuses_a_backend_other_than_the_one_keras_was_imported_with(tiny_dataset: Path,
                                                                                  tmp_path: Path) -> None:
    _needs("torch")
    code = ("import keras\nfrom pathlib import Path\nfrom tuning import ToolkitError, run_search, SearchRequest\n"
            "try:\n"
            f"    run_search(SearchRequest(model='alexnet', data=Path({str(tiny_dataset)!r}), backend='torch',"
            f" runs=Path({str(tmp_path / 'runs')!r})))\n"
            "except ToolkitError as exc:\n    print(exc)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("keras is already imported with the tensorflow backend in this process, so it "
                                  "cannot train on torch; set KERAS_BACKEND=torch before keras is first imported (a "
                                  "new process or notebook kernel), or ask for backend 'tensorflow'")
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_cli_rejects_an_unknown_backend_before_any_work(tiny_dataset: Path, tmp_path: Path) -> None:
    done = _tuning(["search", "--model", "alexnet", "--data", str(tiny_dataset), "--backend", "mxnet"], tmp_path,
                   backend=None, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["Error: unknown --backend 'mxnet'; known: auto, jax, tensorflow, torch"]
    assert not (tmp_path / "runs").exists()
