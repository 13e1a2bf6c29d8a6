"""The study's AlexNet-style network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import layers

from tuning.models import register
from tuning.models._layers import channels, conv, dense_head, model_inputs, preprocess


@register("alexnet")
def alexnet(params: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """AlexNet-style net as the study describes it: 5 conv layers with 3 max-pool layers (after conv 1, 2
    and 5), then three dense layers (two hidden and the softmax) with dropout before each of them.

    Adapted to small inputs: the first layer is 7x7 stride 2 instead of 11x11 stride 4, and pools use
    'same' padding so a 64 px image still reaches the dense layers. ``width`` scales the conv layers;
    ``batch_norm`` and ``head`` switch on the modern recipe's blocks (``tuning.models._layers``).
    """
    w = params["width"]
    inputs = model_inputs(input_shape)
    x = preprocess(inputs, params["augmentation"])
    x = conv(x, channels(96, w), 7, params, strides=2, padding="same", name="conv1")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = conv(x, channels(256, w), 5, params, padding="same", name="conv2")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    x = conv(x, channels(384, w), 3, params, padding="same", name="conv3")
    x = conv(x, channels(384, w), 3, params, padding="same", name="conv4")
    x = conv(x, channels(256, w), 3, params, padding="same", name="conv5")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool5")(x)
    outputs = dense_head(x, params, n_classes, hidden=2, dropout_before=True)
    return keras.Model(inputs, outputs, name="alexnet")
