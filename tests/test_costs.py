"""The cost objectives on real rebuilt networks: size from the parameter count, latency through TFLite."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from tuning.costs import measure_costs, shipped_network
from tuning.errors import UnknownNameError
from tuning.space import load_space


@pytest.fixture(scope="module")
def params(tiny_space: Callable[[str], Path]) -> dict[str, object]:
    return dict(load_space(str(tiny_space("alexnet"))).base)


def test_size_is_four_bytes_per_parameter_of_the_shipped_network_and_grows_with_its_layers(
    params: dict[str, object]
) -> None:
    network = shipped_network("alexnet", params, 3)
    assert not any(layer.__class__.__name__.startswith("Random") for layer in network.layers)  # as shipped
    small = measure_costs(["size_mb"], "alexnet", params, n_classes=3)
    assert small == {"size_mb": network.count_params() * 4 / 1e6}
    wide = measure_costs(["size_mb"], "alexnet", {**params, "dense_units": 256}, n_classes=3)
    assert wide["size_mb"] > small["size_mb"]
    assert measure_costs(["size_mb"], "alexnet", params, n_classes=5)["size_mb"] > small["size_mb"]


def test_latency_is_a_finite_millisecond_count_at_batch_one(params: dict[str, object]) -> None:
    costs = measure_costs(["latency_ms", "size_mb"], "alexnet", params, n_classes=3)
    assert list(costs) == ["latency_ms", "size_mb"]
    assert 0 < costs["latency_ms"] < 1000 and math.isfinite(costs["latency_ms"])


def test_an_unknown_cost_lists_the_known_ones(params: dict[str, object]) -> None:
    with pytest.raises(UnknownNameError) as err:
        measure_costs(["flops"], "alexnet", params, n_classes=3)
    assert str(err.value) == "unknown cost objective 'flops'; known: latency_ms, size_mb"



@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_latency_is_measured_under_every_keras_backend(tiny_space: Callable[[str], Path], backend: str) -> None:
    """JAX exports the TensorFlow graph TFLite converts; PyTorch cannot without torch_xla, so it goes through
    ONNX. A fresh interpreter per backend: Keras picks its backend once, at import."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json, sys; from tuning.costs import measure_costs; from tuning.space import load_space; "
            "import keras; params = dict(load_space(sys.argv[1]).base); "
            "print(json.dumps([keras.backend.backend(), measure_costs(['latency_ms'], 'alexnet', params, "
            "n_classes=3)]))")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code, str(tiny_space("alexnet"))], capture_output=True, text=True,
                          env=env, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    used, costs = json.loads(done.stdout.strip().splitlines()[-1])
    assert used == backend and 0 < costs["latency_ms"] < 1000
