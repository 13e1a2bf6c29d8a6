"""What a trial's model costs to ship: the cost objectives of a multi-objective study (``--objectives``).

Each finished trial's architecture is rebuilt as it would be shipped (float32, no augmentation layers) and
measured once; its trained weights are not needed, since neither the size nor the speed of a network depends
on the values of its weights. Both are minimised.

- ``size_mb``: parameter count x 4 bytes (float32), in MB of 10^6 bytes. The exported ``.tflite`` file is
  this plus a few kB of graph; the count is exact, costs no conversion and is the same on every machine.
- ``latency_ms``: the median wall time of one image (batch 1, ``image_size`` square, one thread) through the
  network converted to TFLite (under the PyTorch backend: exported to ONNX, run by onnxruntime), on this
  machine's CPU, after warm-up runs. It excludes the resize the shipped
  model does in front of the network (the same for every trial of a study) and, being measured, varies a few
  per cent between runs and with other load on the machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tuning.errors import ToolkitError, UnknownNameError
from tuning.trials import COST_OBJECTIVES

#: Timed runs of ``latency_ms`` after ``WARMUP_RUNS`` untimed ones; the median of them is the value.
LATENCY_RUNS = 30
WARMUP_RUNS = 5


def shipped_network(model_name: str, params: Mapping[str, Any], n_classes: int) -> Any:
    """The trial's network as ``final/model.keras`` would hold it: float32, no augmentation, fresh weights."""
    import keras

    from tuning.models import build_model
    from tuning.space import Augmentation

    size = int(params["image_size"])
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return build_model(model_name, {**params, "augmentation": Augmentation("none")}, (size, size, 3), n_classes)
    finally:
        keras.config.set_dtype_policy(policy)


def size_mb(network: Any) -> float:
    """Parameter count x 4 bytes, in MB (10^6 bytes)."""
    return float(network.count_params()) * 4 / 1e6


def latency_ms(network: Any, image_size: int, *, runs: int = LATENCY_RUNS) -> float:
    """Median milliseconds per image at batch 1, one thread, through the network's TFLite conversion (TensorFlow
    and JAX backends) or, under PyTorch, its ONNX export in onnxruntime (Keras exports a TensorFlow graph from
    PyTorch only through torch_xla)."""
    import keras
    import numpy as np

    image = np.random.default_rng(0).uniform(0, 255, (1, image_size, image_size, 3)).astype(np.float32)
    signature = [keras.InputSpec(shape=image.shape, dtype="float32")]  # batch 1, fixed
    with tempfile.TemporaryDirectory(prefix="tuning-latency-") as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = (_onnx_runner if keras.backend.backend() == "torch" else _tflite_runner)(network, signature, Path(work))
    times = []
    for i in range(WARMUP_RUNS + runs):
        start = time.perf_counter()
        run(image)
        if i >= WARMUP_RUNS:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _tflite_runner(network: Any, signature: list[Any], work: Path) -> Callable[[Any], Any]:
    import tensorflow as tf

    from tuning.runtime import stderr_hidden

    network.export(work / "savedmodel", format="tf_saved_model", verbose=False, input_signature=signature)
    content = tf.lite.TFLiteConverter.from_saved_model(str(work / "savedmodel")).convert()
    with stderr_hidden():  # TFLite's C++ notice that it uses its XNNPACK CPU delegate, once per process
        interpreter = tf.lite.Interpreter(model_content=content, num_threads=1)
        interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]

    def run(image: Any) -> None:
        interpreter.set_tensor(index, image)
        interpreter.invoke()

    return run


def _onnx_runner(network: Any, signature: list[Any], work: Path) -> Callable[[Any], Any]:
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise ToolkitError("latency_ms under the PyTorch backend needs onnxruntime (pip install onnxruntime, the "
                           "project's 'onnx' extra)")
    import onnxruntime

    network.export(work / "model.onnx", format="onnx", verbose=False, input_signature=signature)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(work / "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda image: session.run(None, {name: image})


MEASURES: dict[str, Callable[[Any, int], float]] = {
    "size_mb": lambda network, image_size: size_mb(network),
    "latency_ms": lambda network, image_size: latency_ms(network, image_size),
}


def check_costs(names: Sequence[str]) -> None:
    for name in names:
        if name not in COST_OBJECTIVES:
            raise UnknownNameError("cost objective", name, COST_OBJECTIVES)


def measure_costs(names: Sequence[str], model_name: str, params: Mapping[str, Any], *, n_classes: int
                  ) -> dict[str, float]:
    """Each cost in ``names`` of the trial with ``params``, measured once on its rebuilt network.

    A measurement that fails (a layer TFLite cannot convert) raises ``ToolkitError`` with the reason; the
    engine then records the trial as failed with it, as it does a training failure.
    """
    check_costs(names)
    network = shipped_network(model_name, params, n_classes)
    out = {}
    for name in names:
        try:
            out[name] = float(MEASURES[name](network, int(params["image_size"])))
        except Exception as exc:  # noqa: BLE001 - TensorFlow's converter raises many kinds; the trial records why
            reason = (str(exc).strip().splitlines() or [""])[0][:160]
            raise ToolkitError(f"{name} could not be measured: {type(exc).__name__}: {reason}") from None
    return out
