"""Blocks shared by the architectures: the input preprocessing and the dense head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import layers

from tuning.space import Augmentation


def channels(base: int, width: float) -> int:
    """Filters for a layer at ``width`` times the paper's size; never below 8 so tiny nets still learn."""
    return max(8, int(round(base * width)))


def preprocess(inputs: Any, augmentation: Augmentation) -> Any:
    """Scale 0-255 to [0, 1], then the preset's random transforms (fit trains through them; the saved
    model is rebuilt without them, see ``tuning.evaluate.inference_model``)."""
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if augmentation.shift:
        x = layers.RandomTranslation(augmentation.shift, augmentation.shift, name="aug_shift")(x)
    if augmentation.rotation:
        x = layers.RandomRotation(augmentation.rotation / 360.0, name="aug_rotation")(x)
    if augmentation.shear:
        x = layers.RandomShear(augmentation.shear, augmentation.shear, name="aug_shear")(x)
    if augmentation.zoom:
        x = layers.RandomZoom(augmentation.zoom, augmentation.zoom, name="aug_zoom")(x)
    return x


def dense_head(x: Any, params: Mapping[str, Any], n_classes: int, *, hidden: int, dropout_before: bool) -> Any:
    """Flatten, ``hidden`` dense layers each followed by dropout, and a float32 softmax."""
    x = layers.Flatten(name="flatten")(x)
    if dropout_before:
        x = layers.Dropout(params["dropout"], name="dropout_0")(x)
    for i in range(1, hidden + 1):
        x = layers.Dense(params["dense_units"], activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(params["dropout"], name=f"dropout_{i}")(x)
    return layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)


def model_inputs(input_shape: tuple[int, int, int]) -> Any:
    return keras.Input(shape=input_shape, name="image")
