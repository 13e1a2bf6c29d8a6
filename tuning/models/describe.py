"""A plain description of a built model (layers, shapes, parameters) that reports can draw without Keras."""

from __future__ import annotations

from typing import Any


def layer_table(model: Any) -> list[dict[str, Any]]:
    """One row per layer: name, Keras class, output shape (batch dimension dropped) and parameter count."""
    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = tuple(shape.shape[1:]) if shape is not None else ()
        rows.append({"name": layer.name, "kind": type(layer).__name__, "shape": list(shape),
                     "params": int(layer.count_params())})
    return rows
