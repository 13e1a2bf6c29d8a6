"""Test-time augmentation inside a shipped model: the mirror layer an exported ``--tta flip`` model runs.

``tuning retrain --tta flip`` averages each test image's probabilities with those of its left-right mirror,
computed on the prepared (resized) pixels; the exported model does the same after its own resize, so the two
agree. The mirror is a reversed gather along the width: TFLite builtins and ONNX both have it, and unlike
``keras.layers.RandomFlip`` it is the same on every call.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tuning")
class MirrorRGB(keras.layers.Layer):
    """The batch mirrored left-right, as ``tuning.evaluate.mirror`` does it to the test arrays; needs a known
    width (it follows the model's resize)."""

    def call(self, images: Any) -> Any:
        width = int(images.shape[2])
        return ops.take(images, ops.arange(width - 1, -1, -1, dtype="int32"), axis=2)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return input_shape
