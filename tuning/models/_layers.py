"""Blocks shared by the architectures: the input preprocessing, the convolution and the dense head.

Every recipe switch (``batch_norm``, ``head``, ``flip``, ``crop``) is off at the study's value
(``tuning.space.RECIPE_DEFAULTS``), and then each block builds exactly the study's layers under the study's
names, so a study's net, its weights and its layer table are what they were before the recipe existed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
from keras import layers, ops

from tuning.space import RECIPE_DEFAULTS, Augmentation


def channels(base: int, width: float) -> int:
    """Filters for a layer at ``width`` times the paper's size; never below 8 so tiny nets still learn."""
    return max(8, int(round(base * width)))


def recipe(params: Mapping[str, Any], key: str) -> Any:
    """A recipe key's value, the study's when the declaration leaves it out."""
    return params.get(key, RECIPE_DEFAULTS[key])


@keras.saving.register_keras_serializable(package="tuning")
class RandomResizedCrop(layers.Layer):
    """Random resized crop (Inception/timm style, which Keras lacks): in training, each image is replaced by
    a crop keeping a uniform share in ``[1 - crop, 1]`` of its area at an aspect ratio in [3/4, 4/3] (log-uniform),
    resized back to the input size; otherwise the input passes unchanged.

    One bilinear affine transform per image (``keras.ops.image.affine_transform``), so it runs on every Keras
    backend and inside the compiled training step.
    """

    def __init__(self, crop: float, *, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= crop < 1.0:
            raise ValueError(f"crop must be in [0, 1), got {crop}")
        self.crop = float(crop)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or not self.crop:
            return inputs
        x = ops.cast(inputs, "float32")  # the transform needs float32 under a mixed-precision policy
        shape = ops.shape(x)
        batch = shape[0]
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        area = keras.random.uniform((batch,), 1.0 - self.crop, 1.0, seed=self.seed_generator)
        ratio = ops.exp(keras.random.uniform((batch,), math.log(3 / 4), math.log(4 / 3), seed=self.seed_generator))
        sx = ops.minimum(ops.sqrt(area * ratio), 1.0)  # crop width as a share of the image width
        sy = ops.minimum(ops.sqrt(area / ratio), 1.0)
        ox = keras.random.uniform((batch,), seed=self.seed_generator) * (1.0 - sx) * (width - 1.0)
        oy = keras.random.uniform((batch,), seed=self.seed_generator) * (1.0 - sy) * (height - 1.0)
        zero = ops.zeros_like(sx)
        # Output pixel (u, v) samples input point (sx * u + ox, sy * v + oy): the crop stretched to full size.
        transform = ops.stack([sx, zero, ox, zero, sy, oy, zero, zero], axis=1)
        out = ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="constant")
        return ops.cast(out, inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "crop": self.crop, "seed": self.seed}


def preprocess(inputs: Any, augmentation: Augmentation) -> Any:
    """Scale 0-255 to [0, 1], then the recipe's crop and flip and the preset's random transforms (fit trains
    through them; the saved model is rebuilt without them, see ``tuning.evaluate.inference_model``)."""
    return augment(layers.Rescaling(1.0 / 255, name="rescale")(inputs), augmentation)


def augment(x: Any, augmentation: Augmentation) -> Any:
    """The random transforms alone, on pixels of any scale (none of them depends on it): the pretrained
    backbones keep 0-255 for their own preprocessing (``tuning.models.backbones``)."""
    if augmentation.crop:
        x = RandomResizedCrop(augmentation.crop, name="aug_crop")(x)
    if augmentation.flip:
        x = layers.RandomFlip("horizontal", name="aug_flip")(x)
    if augmentation.shift:
        x = layers.RandomTranslation(augmentation.shift, augmentation.shift, name="aug_shift")(x)
    if augmentation.rotation:
        x = layers.RandomRotation(augmentation.rotation / 360.0, name="aug_rotation")(x)
    if augmentation.shear:
        x = layers.RandomShear(augmentation.shear, augmentation.shear, name="aug_shear")(x)
    if augmentation.zoom:
        x = layers.RandomZoom(augmentation.zoom, augmentation.zoom, name="aug_zoom")(x)
    return x


def conv(x: Any, filters: int, kernel: int, params: Mapping[str, Any], *, name: str, **kwargs: Any) -> Any:
    """The study's Conv2D with ReLU, or with ``batch_norm`` conv (no bias: BN's shift replaces it) -> BN -> ReLU."""
    if not recipe(params, "batch_norm"):
        return layers.Conv2D(filters, kernel, activation="relu", name=name, **kwargs)(x)
    x = layers.Conv2D(filters, kernel, use_bias=False, name=name, **kwargs)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def dense_head(x: Any, params: Mapping[str, Any], n_classes: int, *, hidden: int, dropout_before: bool) -> Any:
    """Flatten (or, with ``head = "gap"``, global average pooling), ``hidden`` dense layers each followed by
    dropout, and a float32 softmax."""
    if recipe(params, "head") == "gap":
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    if dropout_before:
        x = layers.Dropout(params["dropout"], name="dropout_0")(x)
    for i in range(1, hidden + 1):
        x = layers.Dense(params["dense_units"], activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(params["dropout"], name=f"dropout_{i}")(x)
    return layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)


def model_inputs(input_shape: tuple[int, int, int]) -> Any:
    return keras.Input(shape=input_shape, name="image")
