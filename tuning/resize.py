"""One resize for preparing the dataset and for the exported model, so a shipped model sees the test pixels.

The resize is antialiased bilinear (a triangle filter widened by the shrink factor, as Pillow's and TensorFlow's
antialiased resizes do), written as two matrix products in ``keras.ops``. Preparation runs ``resize`` eagerly
on each decoded image; ``tuning export`` puts it, as the ``ResizeRGB`` layer, in front of the network. TensorFlow's own
antialiased resize (``ScaleAndTranslate``) has no TFLite kernel, plain bilinear aliases badly when a poster
shrinks eight-fold, and Pillow cannot run inside a graph: matrix products run everywhere (TFLite builtins too).
The output is rounded to whole 0-255 values, which is what the uint8 dataset cache stores.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


def _weights(length: Any, size: int) -> Any:
    """(size, length) float32 rows that average the input pixels under each output pixel's triangle.

    ``length`` is a tensor in a TensorFlow graph with unknown image sizes and a Python int under JAX and PyTorch
    (static shapes): there it stays an int for ``arange``, which JAX cannot trace with a computed length."""
    count = length if isinstance(length, int) else ops.cast(length, "int32")
    length = ops.cast(length, "float32")
    scale = length / size  # input pixels per output pixel
    radius = ops.maximum(scale, 1.0)
    centres = (ops.arange(size, dtype="float32") + 0.5) * scale
    pixels = ops.arange(count, dtype="float32") + 0.5
    w = ops.relu(1.0 - ops.abs(pixels[None, :] - centres[:, None]) / radius)
    return w / ops.sum(w, axis=1, keepdims=True)


def resize(images: Any, size: int) -> Any:
    """(batch, height, width, 3) RGB 0-255 -> (batch, size, size, 3) float32 whole values 0-255."""
    x = ops.cast(images, "float32")
    shape = ops.shape(x)
    rows, cols = _weights(shape[1], size), _weights(shape[2], size)
    x = ops.transpose(x, (0, 3, 1, 2))  # (batch, 3, height, width)
    x = ops.matmul(ops.matmul(rows, x), ops.transpose(cols))  # (batch, 3, size, size)
    return ops.clip(ops.round(ops.transpose(x, (0, 2, 3, 1))), 0.0, 255.0)


@keras.saving.register_keras_serializable(package="tuning")
class ResizeRGB(keras.layers.Layer):
    """``resize`` as the first layer of an exported model: any image size in, the network's size out."""

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, images: Any) -> Any:
        return resize(images, self.size)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """One (height, width, 3) uint8 image -> (size, size, 3) uint8, exactly as the exported model resizes it."""
    return np.asarray(resize(image[None], size), dtype=np.float32)[0].astype(np.uint8)
