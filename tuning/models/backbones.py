"""Pretrained backbones from ``keras.applications``, fine-tuned in two phases (issue #11).

Each model is the study's input block around a Keras application without its top: raw RGB (0-255) in, the
study's augmentation (flip, crop and the preset's transforms, kept at 0-255), the backbone's own input
preprocessing as layers (VGG16's caffe mode here; MobileNetV3 and EfficientNetV2 bring theirs with
``include_preprocessing``), the backbone called with ``training=False`` so its BatchNorm layers stay in
inference mode whatever trains, and the study's dense head. An export therefore still takes raw uint8 RGB.

The backbone is built frozen; ``tuning.train.train_trial`` trains the head for ``head_epochs`` and then, with
``unfreeze`` set, calls ``unfreeze`` and recompiles at ``learning_rate * fine_tune_lr_factor``.

Weights: ``imagenet`` is Keras' own no-top file, found in (or downloaded into) ``$KERAS_HOME/models``
(``~/.keras/models``); a path loads a file the user fetched; ``none`` trains from random weights. We always
hand Keras a path or None, never the string ``imagenet``, so the file used is the one ``check_weights``
found before the first trial.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from keras import layers, ops

from tuning.errors import WeightsError
from tuning.models import register
from tuning.models._layers import augment, dense_head, model_inputs
from tuning.space import FINE_TUNE_DEFAULTS, UNFREEZE, SearchSpace

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    """One ``keras.applications`` network: how to build it, Keras' no-top ImageNet weights file (name, URL and
    the md5 Keras checks it against, as in ``keras/src/applications/<app>.py``) and where its top block starts."""

    name: str  # the registered model name
    app: str  # the keras.applications constructor
    file: str
    url: str
    md5: str
    top: str  # the name prefix of the first layer of the top block (``unfreeze = "top"``)
    caffe: bool = False  # VGG16: no include_preprocessing, its caffe-mode preprocessing is added as a layer


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("vgg16_imagenet", "VGG16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
             _KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
             "6d6bbae143d832006294945121d1f1fc", top="block5_", caffe=True),
    Backbone("mobilenet_v3_small", "MobileNetV3Small", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
             _KERAS_APPS + "mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
             "d3e8ec802a04aa4fc771ee12a9a9b836", top="expanded_conv_10_"),
    Backbone("mobilenet_v3_large", "MobileNetV3Large", "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
             _KERAS_APPS + "mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
             "07fb09a5933dd0c8eaafa16978110389", top="expanded_conv_14_"),
    Backbone("efficientnetv2_b0", "EfficientNetV2B0", "efficientnetv2-b0_notop.h5",
             _KERAS_APPS + "efficientnet_v2/efficientnetv2-b0_notop.h5",
             "893217f2bb855e2983157299931e43ff", top="block6h_"),
)}

#: The smallest input every backbone here accepts (``keras.applications`` refuses less than 32x32).
MIN_SIZE = 32


@keras.saving.register_keras_serializable(package="tuning")
class CaffePreprocess(layers.Layer):
    """VGG16's ImageNet preprocessing (``imagenet_utils.preprocess_input``, caffe mode) as a layer: RGB to BGR,
    then the ImageNet mean of each channel subtracted; no scaling. A layer, so an export needs no outside code."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, inputs: Any) -> Any:
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.cast(ops.convert_to_tensor(self.MEAN_BGR), bgr.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def weights_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models``, else ``~/.keras/models`` (``/tmp/.keras``
    when home is not writable), as ``keras.utils.get_file`` decides. Read at call time, as Keras reads it at
    import time, so a process sees the folder it was started with."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(home) / "models"


def _spec(model_name: str) -> Backbone:
    return BACKBONES[model_name]


def weights_file(model_name: str, weights: str) -> str | None:
    """The file the backbone starts from (None: random weights); for ``imagenet`` Keras' cached file,
    downloaded through ``keras.utils.get_file`` when absent. Every failure is one line saying what to do."""
    spec = _spec(model_name)
    if weights == "none":
        return None
    if weights != "imagenet":
        if not Path(weights).is_file():
            raise WeightsError(f"--weights {weights}: no such file; pass the path of {model_name}'s no-top weights "
                               f"({spec.file}, from {spec.url}), imagenet or none")
        return weights
    folder = weights_dir()
    cached = folder / spec.file
    if cached.is_file():
        return str(cached)
    import contextlib
    import io

    try:  # Keras prints "Downloading data from URL" and a progress bar: the error below says all of it
        with contextlib.redirect_stdout(io.StringIO()):
            return str(keras.utils.get_file(spec.file, spec.url, cache_subdir="models", cache_dir=str(folder.parent),
                                            file_hash=spec.md5))
    except Exception as exc:  # noqa: BLE001 - Keras raises a bare Exception for every network failure
        text = str(exc)
        reason = ("no network" if "URL fetch failure" in text or "HTTP" in text
                  else text.splitlines()[0][:120] if text else type(exc).__name__)
        raise WeightsError(f"{model_name}: the ImageNet weights {spec.file} are not in {folder} and could not be "
                           f"downloaded ({reason}); fetch {spec.url} into {folder}, or pass --weights PATH to that "
                           "file (--weights none trains from scratch)") from None


def backbone_network(model_name: str, input_shape: tuple[int, int, int], weights: str | None) -> Any:
    """The Keras application without its top, its weights loaded from ``weights`` (a path or None)."""
    spec = _spec(model_name)
    extra = {} if spec.caffe else {"include_preprocessing": True}
    return getattr(keras.applications, spec.app)(include_top=False, weights=weights, input_shape=input_shape,
                                                 **extra)


def check_weights(model_name: str, values: Iterable[str]) -> None:
    """Before the first trial: every weights value a study can train with is at hand (downloaded now if need
    be) and fits the backbone (a file of another network or with its top is refused here, once, in one line,
    not as one failed trial per configuration). Models that are no backbone pass."""
    if model_name not in BACKBONES:
        return
    for value in dict.fromkeys(values):
        path = weights_file(model_name, str(value))
        if path is None:
            continue
        try:
            with warnings.catch_warnings():  # Keras only warns for a layer it skipped: that is a wrong file too
                warnings.filterwarnings("error", message=".*(Skipping|could not be loaded|mismatch)")
                backbone_network(model_name, (MIN_SIZE, MIN_SIZE, 3), path)
        except Exception as exc:  # noqa: BLE001 - h5py, Keras' loaders and shape checks each raise their own
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            shown = f"--weights {value}" if value != "imagenet" else f"{model_name}: {path}"
            raise WeightsError(f"{shown}: not {model_name}'s no-top weights ({reason}); use Keras' "
                               f"{BACKBONES[model_name].file} from {BACKBONES[model_name].url}") from None
        finally:
            keras.backend.clear_session()


def backbone_of(model: Any) -> Any | None:
    """The pretrained network inside a built model (the one nested ``keras.Model``), or None for the study's."""
    nested = [layer for layer in getattr(model, "layers", ()) if isinstance(layer, keras.Model)]
    return nested[0] if len(nested) == 1 else None


def unfreeze(model: Any, model_name: str, how: str) -> list[str]:
    """Make the ``how`` part of the backbone trainable (``top``: from the top block's first layer on; ``half``:
    the later half of its layers; ``all``), BatchNorm layers excepted (they stay frozen and, called with
    ``training=False``, in inference mode: the Keras fine-tuning trap). Returns the names made trainable;
    the caller recompiles."""
    if how not in UNFREEZE:
        from tuning.errors import UnknownNameError

        raise UnknownNameError("unfreeze", how, UNFREEZE)
    backbone = backbone_of(model)
    if backbone is None or how == "none":
        return []
    names = [layer.name for layer in backbone.layers]
    if how == "top":
        prefix = _spec(model_name).top
        first = next(i for i, name in enumerate(names) if name.startswith(prefix))
    else:
        first = len(names) // 2 if how == "half" else 0
    backbone.trainable = True  # the container; then each layer says for itself
    opened = []
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= first and not isinstance(layer, layers.BatchNormalization)
        if layer.trainable and layer.weights:
            opened.append(layer.name)
    return opened


def fine_tune(params: Mapping[str, Any], key: str) -> Any:
    return params.get(key, FINE_TUNE_DEFAULTS[key])


def _build(model_name: str, params: Mapping[str, Any], input_shape: tuple[int, int, int], n_classes: int) -> Any:
    """Raw RGB -> augmentation (0-255) -> the backbone's preprocessing -> frozen backbone -> dense head."""
    spec = _spec(model_name)
    if min(input_shape[:2]) < MIN_SIZE:
        raise ValueError(f"{model_name} needs images of at least {MIN_SIZE} px, got {input_shape[0]}")
    weights = str(params.get("weights", "none"))
    backbone = backbone_network(model_name, input_shape, weights_file(model_name, weights))
    backbone.trainable = False
    inputs = model_inputs(input_shape)
    x = augment(inputs, params["augmentation"])
    if spec.caffe:
        x = CaffePreprocess(name="caffe_preprocess")(x)
    x = backbone(x, training=False)  # BatchNorm in inference mode in both phases
    outputs = dense_head(x, {"head": "gap", **params}, n_classes, hidden=1, dropout_before=True)
    return keras.Model(inputs, outputs, name=model_name)


for _name in BACKBONES:  # vgg16_imagenet, mobilenet_v3_small, mobilenet_v3_large, efficientnetv2_b0
    register(_name)(functools.partial(_build, _name))


def check_study_weights(model_name: str, space: SearchSpace) -> None:
    """``check_weights`` for every weights value a study over ``space`` trains with: the base one and, when
    the axis is searched, each of its values."""
    if "weights" not in space.params:
        return
    values = space.params["weights"].grid_values() if "weights" in space.search else (space.base["weights"],)
    check_weights(model_name, [str(v) for v in values])
