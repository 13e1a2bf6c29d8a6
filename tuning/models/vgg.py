"""The study's VGG16-style network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import layers

from tuning.models import register
from tuning.models._layers import channels, conv, dense_head, model_inputs, preprocess

#: (convolutions, filters) per block: 2+2+4+4 = 12 conv layers, one max-pool after each of the 4 blocks.
BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512))


@register("vgg16")
def vgg16(params: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """VGG16-style net as the study describes it: 12 conv layers (3x3, ReLU) in 4 blocks, each block closed
    by a 2x2 max-pool, then two dense layers each followed by dropout, and a softmax over the classes.

    Differences from the paper's VGG16 (13 conv, 5 pools, 4096-unit dense) follow the study's smaller net for
    96 px inputs; ``width`` scales every conv layer and ``dense_units`` the dense layers; ``batch_norm`` and
    ``head`` switch on the modern recipe's blocks (``tuning.models._layers``).
    """
    inputs = model_inputs(input_shape)
    x = preprocess(inputs, params["augmentation"])
    for b, (convs, filters) in enumerate(BLOCKS, start=1):
        for c in range(1, convs + 1):
            x = conv(x, channels(filters, params["width"]), 3, params, padding="same", name=f"block{b}_conv{c}")
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    outputs = dense_head(x, params, n_classes, hidden=2, dropout_before=False)
    return keras.Model(inputs, outputs, name="vgg16")
