"""Model registry: architectures registered by name, built from a parameter dict.

Every model takes raw RGB images (0-255, any dtype) and starts with the same preprocessing block, so a saved
model needs no outside code to be used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tuning._registry import Registry

ModelFn = Callable[[Mapping[str, Any], tuple[int, int, int], int], Any]
_MODELS: Registry[ModelFn] = Registry("model", ("tuning.models.vgg", "tuning.models.alexnet",
                                                  "tuning.models.backbones"))


def register(name: str) -> Callable[[ModelFn], ModelFn]:
    """Decorator: make ``fn(params, input_shape, n_classes) -> keras.Model`` available as ``name``."""

    def wrap(fn: ModelFn) -> ModelFn:
        _MODELS.add(name, fn)
        return fn

    return wrap


def known_models() -> list[str]:
    return _MODELS.names()


def get_model_fn(name: str) -> ModelFn:
    """The registered builder, or an error listing the known names."""
    return _MODELS.get(name)


def build_model(name: str, params: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int) -> Any:
    """Build (not compile) the model ``name``; ``params['augmentation']`` is an ``Augmentation``."""
    return get_model_fn(name)(params, input_shape, n_classes)
