"""Smoke and structure tests for every registered model, and for the augmentation block they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from tuning.errors import UnknownNameError
from tuning.models import build_model, get_model_fn, known_models
from tuning.models._layers import RandomResizedCrop, preprocess
from tuning.space import OPTIMIZERS, Augmentation, SearchSpace, load_space
from tuning.train import compile_model

N_CLASSES = 3
#: The study's from-scratch nets; the pretrained backbones have their own tests (test_backbones.py).
MODELS = ["alexnet", "vgg16"]
BACKBONES = ["efficientnetv2_b0", "mobilenet_v3_large", "mobilenet_v3_small", "vgg16_imagenet"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)


def _space(model: str) -> SearchSpace:
    """Each registered model ships a built-in space of the same name."""
    return load_space(model)


def _params(space: SearchSpace, **chosen: Any) -> dict[str, Any]:
    """The space's base values, small by default so a build takes a fraction of a second."""
    small = {"width": min(space.params["width"].values), "dense_units": min(space.params["dense_units"].values)}
    params = space.resolve({**small, **chosen})
    return {**params, "augmentation": space.augmentation(str(params["augmentation"]))}


def _images(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


PRESETS = [
    pytest.param(model, preset, id=f"{model}-{preset}")
    for model in MODELS
    for preset in _space(model).params["augmentation"].values
]
# Tracing a train step costs seconds, so each preset trains at one size, the sizes taking turns: every preset
# and every size of each model still trains once.
TRAIN_CASES = [
    pytest.param(model, preset, sizes[i % len(sizes)], id=f"{model}-{preset}-{sizes[i % len(sizes)]}px")
    for model in MODELS
    for sizes in [_space(model).params["image_size"].values]
    for i, preset in enumerate(_space(model).params["augmentation"].values)
]


def test_registry_lists_the_study_models_and_the_backbones() -> None:
    """Every registered model ships a built-in space of its name that declares it."""
    assert known_models() == sorted(MODELS + BACKBONES)
    assert all(_space(model).model == model for model in known_models())


@pytest.mark.parametrize("model, preset", PRESETS)
def test_builds_for_every_image_size(model: str, preset: str) -> None:
    space = _space(model)
    for size in space.params["image_size"].values:
        net = build_model(model, _params(space, augmentation=preset, image_size=size), (size, size, 3), N_CLASSES)
        assert net.input_shape == (None, size, size, 3), size
        assert net.output_shape == (None, N_CLASSES), size


@pytest.mark.slow
@pytest.mark.parametrize("model, preset, size", TRAIN_CASES)
def test_trains_one_step(model: str, preset: str, size: int) -> None:
    space = _space(model)
    params = _params(space, augmentation=preset, image_size=size)
    net = build_model(model, params, (size, size, 3), N_CLASSES)
    compile_model(net, params)
    x = _images(4, size)
    y = keras.utils.to_categorical([0, 1, 2, 0], N_CLASSES)
    before = [w.copy() for w in net.get_weights()]
    loss = net.train_on_batch(x, y, return_dict=True)["loss"]
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()))  # the step updated weights


def test_train_cases_cover_every_preset_and_size() -> None:
    for model in MODELS:
        cases = [p.values for p in TRAIN_CASES if p.values[0] == model]
        space = _space(model)
        assert {preset for _, preset, _ in cases} == set(space.params["augmentation"].values)
        assert {size for _, _, size in cases} == set(space.params["image_size"].values)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_trains_with_sgd_and_momentum(model: str) -> None:
    space = _space(model)
    params = _params(space, optimizer="sgd", momentum=0.9, image_size=64)
    net = build_model(model, params, (64, 64, 3), N_CLASSES)
    compile_model(net, params)
    assert isinstance(net.optimizer, keras.optimizers.SGD)
    assert float(net.optimizer.momentum) == pytest.approx(0.9)
    loss = net.train_on_batch(_images(4, 64), keras.utils.to_categorical([0, 1, 2, 1], N_CLASSES), return_dict=True)
    assert np.isfinite(loss["loss"])


@pytest.mark.parametrize("name, cls", [("adam", keras.optimizers.Adam), ("sgd", keras.optimizers.SGD),
                                       ("adamw", keras.optimizers.AdamW)])
def test_compile_builds_each_declarable_optimizer_and_nothing_else(name: str, cls: type) -> None:
    """Every name a space may declare (``OPTIMIZERS``) trains that optimiser; another name is refused, not
    swapped for Adam."""
    assert {"adam", "sgd", "adamw"} == set(OPTIMIZERS)
    params = _params(_space("alexnet"), optimizer=name, momentum=0.5, learning_rate=0.01, image_size=64)
    net = build_model("alexnet", params, (64, 64, 3), N_CLASSES)
    compile_model(net, params)
    assert type(net.optimizer) is cls
    assert float(net.optimizer.learning_rate) == pytest.approx(0.01)
    with pytest.raises(UnknownNameError, match=r"^unknown optimizer 'rmsprop'; known: adam, adamw, sgd$"):
        compile_model(net, {**params, "optimizer": "rmsprop"})


def test_unknown_model_lists_known() -> None:
    known = "alexnet, efficientnetv2_b0, mobilenet_v3_large, mobilenet_v3_small, vgg16, vgg16_imagenet"
    with pytest.raises(UnknownNameError, match=rf"^unknown model 'nope'; known: {known}$"):
        get_model_fn("nope")
    with pytest.raises(UnknownNameError, match=f"known: {known}"):
        build_model("nope", {}, (64, 64, 3), N_CLASSES)


# ----- augmentation: training only ------------------------------------------------------------------------
AUGMENTING = [name for name, aug in load_space("vgg16").augmentations.items() if not aug.is_identity]


def _preprocessor(augmentation: Augmentation, size: int = 32) -> keras.Model:
    inputs = keras.Input(shape=(size, size, 3))
    return keras.Model(inputs, preprocess(inputs, augmentation))


@pytest.mark.parametrize("preset", AUGMENTING)
def test_augmentation_changes_training_batches_only(preset: str) -> None:
    net = _preprocessor(load_space("vgg16").augmentation(preset))
    x = _images(4, 32)
    rescaled = x.astype(np.float64) / 255.0
    first = keras.ops.convert_to_numpy(net(x, training=True))
    second = keras.ops.convert_to_numpy(net(x, training=True))
    inference = keras.ops.convert_to_numpy(net(x, training=False))
    assert first.shape == second.shape == inference.shape == x.shape
    assert np.abs(first - rescaled).max() > 0.05
    assert np.abs(second - rescaled).max() > 0.05
    assert not np.allclose(first, second)  # fresh random transforms every batch
    np.testing.assert_allclose(inference, rescaled, rtol=0, atol=1e-6)
    # predict (what evaluate and export use) runs in inference mode too.
    np.testing.assert_allclose(net.predict(x, verbose=0), rescaled, rtol=0, atol=1e-6)


def test_identity_preset_only_rescales() -> None:
    identity = load_space("vgg16").augmentation("none")
    assert identity.is_identity
    net = _preprocessor(identity)
    assert [type(layer).__name__ for layer in net.layers] == ["InputLayer", "Rescaling"]
    x = _images(2, 32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(net(x, training=True)), x / 255.0, rtol=0, atol=1e-6)


# ----- the study's architectures --------------------------------------------------------------------------
def _count(net: keras.Model, kind: type) -> int:
    return sum(isinstance(layer, kind) for layer in net.layers)


@pytest.mark.parametrize(
    "model, conv, pool, dense, dropout",
    [("vgg16", 12, 4, 3, 2), ("alexnet", 5, 3, 3, 3)],
)
def test_layer_counts_match_the_study(model: str, conv: int, pool: int, dense: int, dropout: int) -> None:
    space = _space(model)
    net = build_model(model, _params(space, image_size=64), (64, 64, 3), N_CLASSES)
    assert _count(net, keras.layers.Conv2D) == conv
    assert _count(net, keras.layers.MaxPooling2D) == pool
    assert _count(net, keras.layers.Dense) == dense
    assert _count(net, keras.layers.Dropout) == dropout
    assert net.layers[-1].name == "predictions"


@pytest.mark.parametrize("model", MODELS)
def test_dropout_and_dense_units_come_from_params(model: str) -> None:
    space = _space(model)
    net = build_model(model, _params(space, image_size=64, dropout=0.3), (64, 64, 3), N_CLASSES)
    units = min(space.params["dense_units"].values)
    assert [layer.rate for layer in net.layers if isinstance(layer, keras.layers.Dropout)] == pytest.approx(
        [0.3] * _count(net, keras.layers.Dropout)
    )
    assert [layer.units for layer in net.layers if isinstance(layer, keras.layers.Dense)] == [units, units, N_CLASSES]


@pytest.mark.parametrize("model", MODELS)
def test_width_scales_parameter_count(model: str) -> None:
    space = _space(model)
    counts = [
        build_model(model, _params(space, image_size=64, width=w), (64, 64, 3), N_CLASSES).count_params()
        for w in (0.25, 0.5, 1.0)
    ]
    assert counts[0] < counts[1] < counts[2]
    conv = [
        [layer.filters for layer in build_model(model, _params(space, image_size=64, width=w), (64, 64, 3),
                                                N_CLASSES).layers if isinstance(layer, keras.layers.Conv2D)]
        for w in (0.5, 1.0)
    ]
    assert [2 * f for f in conv[0]] == conv[1]


# ----- the modern recipe ----------------------------------------------------------------------------------
#: Each study net as main built it (64 px, width 0.25, 128 dense units, no augmentation), before the recipe.
MAIN_NETS = {
    "alexnet": (383907, ["InputLayer", "Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D",
                         "Conv2D", "Conv2D", "MaxPooling2D", "Flatten", "Dropout", "Dense", "Dropout", "Dense",
                         "Dropout", "Dense"]),
    "vgg16": (941715, ["InputLayer", "Rescaling", "Conv2D", "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D",
                       "MaxPooling2D", "Conv2D", "Conv2D", "Conv2D", "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D",
                       "Conv2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dropout", "Dense", "Dropout",
                       "Dense"]),
}
RECIPE_KEYS = ("batch_norm", "head", "flip", "crop", "weight_decay", "label_smoothing", "schedule", "warmup_epochs",
               "patience")


def _recipe_params(space: SearchSpace, **chosen: Any) -> dict[str, Any]:
    """Like ``_params``, with the augmentation a trial trains through (preset plus flip and crop)."""
    small = {"width": min(space.params["width"].values), "dense_units": min(space.params["dense_units"].values),
             "image_size": 32}
    params = space.resolve({**small, **chosen})
    return {**params, "augmentation": space.augmentation_for(params)}


@pytest.mark.parametrize("model", MODELS)
def test_the_study_nets_are_unchanged_with_the_recipe_off(model: str) -> None:
    """Recipe keys at the study's values, or absent (a declaration from before the recipe): main's net."""
    space = _space(model)
    params = {**space.resolve({"image_size": 64, "width": 0.25, "dense_units": 128}),
              "augmentation": space.augmentation("none")}
    bare = {k: v for k, v in params.items() if k not in RECIPE_KEYS}
    for p in (params, bare):
        net = build_model(model, p, (64, 64, 3), N_CLASSES)
        assert net.count_params() == MAIN_NETS[model][0]
        assert [type(layer).__name__ for layer in net.layers] == MAIN_NETS[model][1]
        convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
        assert all(c.use_bias and c.activation is keras.activations.relu for c in convs)


@pytest.mark.parametrize("model", MODELS)
def test_batch_norm_follows_every_convolution(model: str) -> None:
    space = _space(model)
    net = build_model(model, _recipe_params(space, batch_norm=True), (32, 32, 3), N_CLASSES)
    convs = [layer for layer in net.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == {"vgg16": 12, "alexnet": 5}[model]
    assert _count(net, keras.layers.BatchNormalization) == len(convs)
    names = [layer.name for layer in net.layers]
    for c in convs:
        assert not c.use_bias and c.activation is keras.activations.linear  # BN's shift replaces the bias
        i = names.index(c.name)
        assert names[i + 1:i + 3] == [f"{c.name}_bn", f"{c.name}_relu"]
        assert net.layers[i + 2].activation is keras.activations.relu
    off = build_model(model, _recipe_params(space, batch_norm=False), (32, 32, 3), N_CLASSES)
    assert _count(off, keras.layers.BatchNormalization) == 0


@pytest.mark.parametrize("model", MODELS)
def test_gap_head_pools_instead_of_flattening(model: str) -> None:
    space = _space(model)
    gap = build_model(model, _recipe_params(space, head="gap", image_size=64), (64, 64, 3), N_CLASSES)
    flat = build_model(model, _recipe_params(space, head="flatten", image_size=64), (64, 64, 3), N_CLASSES)
    assert _count(gap, keras.layers.Flatten) == 0 and _count(gap, keras.layers.GlobalAveragePooling2D) == 1
    assert _count(flat, keras.layers.Flatten) == 1 and _count(flat, keras.layers.GlobalAveragePooling2D) == 0
    assert gap.output_shape == (None, N_CLASSES)
    assert gap.count_params() < flat.count_params()  # the first dense layer sees channels, not pixels


@pytest.mark.parametrize("model", MODELS)
def test_flip_and_crop_join_the_presets_and_are_off_at_inference(model: str) -> None:
    """flip and crop add to the study's preset; predict (and the shipped model, rebuilt without augmentation
    and given the trained weights) sees none of them."""
    from tuning.evaluate import inference_model

    space = _space(model)
    params = _recipe_params(space, flip=True, crop=0.25, augmentation="small", batch_norm=True, head="gap")
    net = build_model(model, params, (32, 32, 3), N_CLASSES)
    by_name = {layer.name: layer for layer in net.layers}
    assert isinstance(by_name["aug_flip"], keras.layers.RandomFlip) and by_name["aug_flip"].mode == "horizontal"
    assert isinstance(by_name["aug_crop"], RandomResizedCrop) and by_name["aug_crop"].crop == 0.25
    assert {"aug_shift", "aug_rotation", "aug_shear", "aug_zoom"} <= set(by_name)  # the "small" preset's
    x = _images(6, 32)
    first, second = net.predict(x, verbose=0), net.predict(x, verbose=0)
    np.testing.assert_array_equal(first, second)
    shipped = inference_model(model, params, net, N_CLASSES)
    assert not any(layer.name.startswith("aug_") for layer in shipped.layers)
    np.testing.assert_allclose(shipped.predict(x, verbose=0), first, rtol=1e-5, atol=1e-6)
    plain = build_model(model, _recipe_params(space, flip=False, crop=0.0), (32, 32, 3), N_CLASSES)
    assert not any(layer.name in ("aug_flip", "aug_crop") for layer in plain.layers)


def test_flip_mirrors_training_batches() -> None:
    net = _preprocessor(Augmentation("flip-only", flip=True))
    x = _images(16, 32)
    out = keras.ops.convert_to_numpy(net(x, training=True))
    rescaled = x / 255.0
    flipped = [np.allclose(o, r[:, ::-1], atol=1e-6) for o, r in zip(out, rescaled)]
    kept = [np.allclose(o, r, atol=1e-6) for o, r in zip(out, rescaled)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_random_resized_crop_stretches_a_crop_of_the_image() -> None:
    """On a horizontal ramp (pixel value = column) each output row is the ramp restricted to the crop: linear
    with slope = the crop's width share (at least sqrt(3/4 * (1 - crop)), at most 1), inside the image."""
    crop, size = 0.4, 32
    layer = RandomResizedCrop(crop, seed=3)
    ramp = np.tile(np.arange(size, dtype=np.float32), (size, 1))
    x = np.repeat(np.stack([ramp] * 3, axis=-1)[None], 8, axis=0)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert out.shape == x.shape
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), x)  # a bare call is inference
    slopes = []
    for image in out:
        row = image[size // 2, :, 0]
        slope, offset = np.polyfit(np.arange(size), row, 1)
        np.testing.assert_allclose(row, slope * np.arange(size) + offset, atol=1e-3)
        assert np.sqrt(0.75 * (1 - crop)) - 1e-4 <= slope <= 1 + 1e-4
        assert offset >= -1e-3 and offset + slope * (size - 1) <= size - 1 + 1e-3
        slopes.append(slope)
    assert max(slopes) - min(slopes) > 0.02  # a fresh crop for each image
    with pytest.raises(ValueError, match="crop must be in"):
        RandomResizedCrop(1.0)


def test_a_recipe_model_saves_and_loads_with_its_crop_layer(tmp_path: Path) -> None:
    space = _space("alexnet")
    net = build_model("alexnet", _recipe_params(space, crop=0.3, flip=True, batch_norm=True, head="gap"),
                      (32, 32, 3), N_CLASSES)
    net.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    crop = loaded.get_layer("aug_crop")
    assert isinstance(crop, RandomResizedCrop) and crop.crop == pytest.approx(0.3)
    x = _images(3, 32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), net.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_random_resized_crop_runs_under_mixed_precision(policy: str) -> None:
    """``--precision`` mixed policies feed the crop half-precision images; it answers in their dtype."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        net = _preprocessor(Augmentation("crop-only", crop=0.3, flip=True))
        out = net(_images(4, 32), training=True)
    finally:
        keras.config.set_dtype_policy(before)
    assert keras.backend.standardize_dtype(out.dtype) == policy.removeprefix("mixed_")
    values = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    assert values.shape == (4, 32, 32, 3) and np.isfinite(values).all() and 0 <= values.min() <= values.max() <= 1
