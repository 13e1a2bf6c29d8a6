"""tuning/runtime.py: backend choice, devices, precision, out-of-memory and NaN checks per Keras backend."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tuning import runtime
from tuning.errors import ToolkitError, UnknownNameError

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (keras fixes its backend per process) with this checkout first."""
    import os

    full = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_importing_runtime_imports_no_backend() -> None:
    out = _python("import sys, tuning.runtime, tuning.pipeline, tuning.engines.processes\n"
                  "print(sorted(m for m in ('keras', 'tensorflow', 'torch', 'jax') if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_flag_wins_over_keras_backend_and_keras_backend_over_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert runtime.requested_backend("torch") == "torch"
    assert runtime.requested_backend(None) == "jax"
    monkeypatch.delenv("KERAS_BACKEND")
    assert runtime.requested_backend(None) == "auto"


def test_an_unknown_backend_names_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown --backend 'mxnet'; known: auto, jax, tensorflow, torch"):
        runtime.requested_backend("mxnet")
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    with pytest.raises(UnknownNameError, match=r"unknown KERAS_BACKEND 'theano'"):
        runtime.requested_backend(None)


def test_a_second_backend_in_a_process_whose_keras_is_loaded_is_one_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    loaded = keras.config.backend()
    monkeypatch.setenv("KERAS_BACKEND", loaded)  # restored afterwards, whatever use_backend sets
    other = next(b for b in runtime.BACKENDS if b != loaded)
    with pytest.raises(ToolkitError, match=f"keras is already imported with the {loaded} backend in this process, "
                                           f"so it cannot train on {other}; set KERAS_BACKEND={other}"):
        runtime.use_backend(other)
    assert runtime.use_backend(loaded) == loaded
    assert runtime.auto_backend("vgg16") == loaded  # auto takes what the process already has


def test_a_backend_that_is_not_installed_says_how_to_install_it() -> None:
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'jax': raise ImportError('blocked')\n"
               "sys.meta_path.insert(0, Block())\n"
               "from tuning import runtime\n"
               "try:\n"
               "    runtime.use_backend('jax')\n"
               "except Exception as exc:\n"
               "    print(exc)\n")
    out = _python(blocker)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("--backend jax: the 'jax' package is not installed; pip install "
                                         "'tuning[backends]'")


def test_auto_picks_from_the_table_before_keras_is_imported() -> None:
    out = _python("from tuning import runtime\nimport sys\n"
                  "print(runtime.auto_backend('vgg16'), runtime.auto_backend('alexnet'), 'keras' in sys.modules)")
    assert out.returncode == 0, out.stderr
    kind = "gpu" if runtime.cuda_present() else "cpu"
    expected = [next(b for b in runtime.AUTO_BACKENDS.get((kind, m), runtime.AUTO_BACKENDS[(kind, "*")])
                     if runtime.installed(b)) for m in ("vgg16", "alexnet")]
    assert out.stdout.split() == [*expected, "False"]
    # never slower than the previous default (TensorFlow + auto precision) where that was measured: this CPU
    assert all(order[0] == "tensorflow" for (device, _), order in runtime.AUTO_BACKENDS.items() if device == "cpu")


def test_auto_precision_is_bfloat16_only_where_it_was_measured_faster() -> None:
    bf16 = "mixed_bfloat16" if runtime.bf16_units() else "float32"
    assert runtime.auto_precision("tensorflow", "cpu") == bf16
    assert runtime.auto_precision("tensorflow", "gpu") == "float32"
    assert runtime.auto_precision("torch", "cpu") == "float32"
    assert runtime.auto_precision("jax", "cpu") == "float32"


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_each_backend_reports_its_device_and_settings(backend: str) -> None:
    if not runtime.installed(backend):
        pytest.skip(f"{backend} is not installed")
    out = _python("import json\nfrom tuning import runtime\nruntime.use_backend(runtime.requested_backend(None))\n"
                  "print(json.dumps(runtime.resolve(precision='float32')))", KERAS_BACKEND=backend)
    assert out.returncode == 0, out.stderr
    import json

    settings = json.loads(out.stdout.strip().splitlines()[-1])
    assert settings["backend"] == backend
    assert settings["device"] in ("cpu", "gpu") and settings["device_name"]
    assert settings["precision"] == "float32"
    assert settings["inter_op_threads"] == (1 if settings["device"] == "cpu" and backend != "jax" else 0)


def test_real_out_of_memory_errors_are_recognised_and_others_are_not() -> None:
    import numpy as np

    try:
        np.empty(2**62, dtype=np.uint8)
    except MemoryError as exc:
        assert runtime.is_out_of_memory(exc)
    if runtime.installed("torch"):
        import torch

        with pytest.raises(RuntimeError) as info:
            torch.empty(2**50, dtype=torch.uint8)
        assert runtime.is_out_of_memory(info.value)  # "DefaultCPUAllocator: can't allocate memory"
    assert not runtime.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not runtime.is_out_of_memory(ValueError("Input 0 of layer is incompatible"))


def test_jax_out_of_memory_is_recognised() -> None:
    if not runtime.installed("jax"):
        pytest.skip("jax is not installed")
    out = _python("import jax.numpy as jnp\nfrom tuning import runtime\n"
                  "try:\n    jnp.zeros(2**50, dtype=jnp.uint8).block_until_ready()\n"
                  "except Exception as exc:\n    print(type(exc).__name__, runtime.is_out_of_memory(exc))\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["JaxRuntimeError", "True"]


def test_out_of_memory_classes_are_the_loaded_backends() -> None:
    import keras

    classes = runtime.out_of_memory_errors()
    assert MemoryError in classes
    names = {c.__name__ for c in classes}
    assert {"tensorflow": "ResourceExhaustedError", "torch": "OutOfMemoryError",
            "jax": "JaxRuntimeError"}[keras.config.backend()] in names


def test_non_finite_names_the_first_diverged_metric() -> None:
    assert runtime.non_finite({"loss": 0.5, "accuracy": 0.9}) is None
    assert runtime.non_finite({"accuracy": 0.9, "loss": math.nan}) == "loss"
    assert runtime.non_finite({"loss": math.inf}) == "loss"
    assert runtime.non_finite({"note": "text", "loss": 1.0}) is None


def test_several_visible_gpus_are_dealt_to_workers_one_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--workers N`` on N GPUs: worker k sees GPU k (round robin beyond N); one GPU or none: nothing is set."""
    from tuning.runtime import visible_gpus, worker_gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 7,4")
    assert visible_gpus() == ["2", "7", "4"]
    assert [worker_gpu(k, visible_gpus()) for k in range(4)] == ["2", "7", "4", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert worker_gpu(1, visible_gpus()) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")  # the user hid every GPU
    assert visible_gpus() == [] and worker_gpu(0, []) is None
