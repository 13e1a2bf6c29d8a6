"""Model registry: architectures registered by name, built from a parameter dict.

Every model takes raw RGB images (0-255, any dtype) and starts with the same preprocessing block, so a saved
model needs no outside code to be used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from tuning.errors import UnknownNameError

ModelFn = Callable[[Mapping[str, Any], tuple[int, int, int], int], Any]
_REGISTRY: dict[str, ModelFn] = {}
_BUILTIN_MODULES = ("tuning.models.vgg", "tuning.models.alexnet")


def register(name: str) -> Callable[[ModelFn], ModelFn]:
    """Decorator: make ``fn(params, input_shape, n_classes) -> keras.Model`` available as ``name``."""

    def wrap(fn: ModelFn) -> ModelFn:
        _REGISTRY[name] = fn
        return fn

    return wrap


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def known_models() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_model_fn(name: str) -> ModelFn:
    """The registered builder, or an error listing the known names."""
    _load_builtins()
    if name not in _REGISTRY:
        raise UnknownNameError("model", name, list(_REGISTRY))
    return _REGISTRY[name]


def build_model(name: str, params: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int) -> Any:
    """Build (not compile) the model ``name``; ``params['augmentation']`` is an ``Augmentation``."""
    return get_model_fn(name)(params, input_shape, n_classes)
