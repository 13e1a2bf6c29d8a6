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

