"""The trainer's share of the modern recipe, with real tiny Keras models on tiny real images: AdamW, label
smoothing, the cosine schedule, one epoch with each recipe axis, and early stopping inside a trial."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from tuning.models import build_model
from tuning.space import SearchSpace, load_space
from tuning.train import (
    TrialData,
    compile_model,
    earliest_stop,
    learning_rate,
    make_batches,
    neutral_batches,
    tf_data_batches,
    train_trial,
)

N_CLASSES = 3


@pytest.fixture(autouse=True)
def _float32_and_seed() -> Any:
    """Losses recomputed here must match the logged ones, so no mixed precision leaks in from another test."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy(policy)


def _tiny_net(space: SearchSpace, **chosen: Any) -> tuple[keras.Model, dict[str, Any]]:
    params = space.resolve({"image_size": 32, "width": 0.25, "dense_units": 128, **chosen})
    net = build_model(space.model, {**params, "augmentation": space.augmentation_for(params)}, (32, 32, 3), N_CLASSES)
    return net, params


def _arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), keras.utils.to_categorical(np.arange(n) % 3, 3)


# ----- compile: optimizer, loss, schedule ----------------------------------------------------------------
def test_adamw_carries_its_weight_decay() -> None:
    net, params = _tiny_net(load_space("alexnet"), optimizer="adamw", weight_decay=0.03)
    compile_model(net, params)
    assert type(net.optimizer) is keras.optimizers.AdamW
    assert float(net.optimizer.weight_decay) == pytest.approx(0.03)
    net, params = _tiny_net(load_space("alexnet"))  # the study's Adam has none
    compile_model(net, params)
    assert type(net.optimizer) is keras.optimizers.Adam and net.optimizer.weight_decay is None


def test_label_smoothing_is_in_the_loss() -> None:
    net, params = _tiny_net(load_space("vgg16"), label_smoothing=0.1)
    compile_model(net, params)
    assert isinstance(net.loss, keras.losses.CategoricalCrossentropy)
    y = np.array([[1.0, 0.0, 0.0]])
    p = np.array([[0.7, 0.2, 0.1]])
    smoothed = y * 0.9 + 0.1 / 3
    assert float(net.loss(y, p)) == pytest.approx(-(smoothed * np.log(p)).sum(), rel=1e-5)
    net, params = _tiny_net(load_space("vgg16"))
    compile_model(net, params)
    assert net.loss == "categorical_crossentropy"  # the study's loss, untouched


def _cosine(step: int, *, peak: float, warmup: int, total: int) -> float:
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_cosine_schedule_follows_the_formula() -> None:
    space = load_space("alexnet")
    params = space.resolve({"schedule": "cosine", "warmup_epochs": 2, "learning_rate": 0.01})
    schedule = learning_rate(params, epochs=6, steps_per_epoch=5)
    total, warmup = 30, 10
    for step in (0, 5, 10, 15, 20, 29, 30):
        assert float(schedule(step)) == pytest.approx(_cosine(step, peak=0.01, warmup=warmup, total=total),
                                                      abs=1e-7), step
    assert float(schedule(warmup)) == pytest.approx(0.01) and float(schedule(total)) == pytest.approx(0.0, abs=1e-9)
    no_warmup = learning_rate({**params, "warmup_epochs": 0}, epochs=6, steps_per_epoch=5)
    assert float(no_warmup(0)) == pytest.approx(0.01) and float(no_warmup(15)) == pytest.approx(0.005)
    # A warm-up as long as the run leaves one decay step instead of a schedule Keras cannot build.
    short = learning_rate(params, epochs=2, steps_per_epoch=5)
    assert float(short(9)) == pytest.approx(0.01) and float(short(10)) == pytest.approx(0.0, abs=1e-9)
    assert learning_rate(space.resolve({}), epochs=6, steps_per_epoch=5) == pytest.approx(1e-3)  # the study's


def test_cosine_rate_while_training_is_the_formula() -> None:
    """On a real fit: at the end of the 1-epoch warm-up the rate is the peak; after the last epoch it is 0."""
    net, params = _tiny_net(load_space("alexnet"), schedule="cosine", warmup_epochs=1, learning_rate=0.002)
    compile_model(net, params, epochs=3, steps_per_epoch=2)
    x, y = _arrays(8)
    rates = []
    for _ in range(3):
        net.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
        rates.append(float(net.optimizer.learning_rate))
    assert rates == pytest.approx([_cosine(s, peak=0.002, warmup=2, total=6) for s in (2, 4, 6)], abs=1e-8)
    assert rates[0] == pytest.approx(0.002) and rates[-1] == pytest.approx(0.0, abs=1e-9)


# ----- train_trial with each axis ------------------------------------------------------------------------
def _tiny_params(space: SearchSpace, **overrides: Any) -> dict[str, Any]:
    return {**space.resolve({}), **overrides}


AXES = [
    {"batch_norm": True}, {"head": "gap"}, {"flip": True}, {"crop": 0.3}, {"optimizer": "adamw", "weight_decay": 0.05},
    {"label_smoothing": 0.1}, {"schedule": "cosine", "warmup_epochs": 1}, {"patience": 1},
]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["alexnet", "vgg16"])
def test_each_recipe_axis_trains_an_epoch_at_32px(tiny_dataset: Path, tiny_space: Callable[[str], Path],
                                                  model: str) -> None:
    space = SearchSpace.from_toml(tiny_space(model))
    data = TrialData(tiny_dataset, seed=0, test_fraction=space.test_fraction())
    for overrides in AXES:
        result = train_trial(model, _tiny_params(space, **overrides), data, space, epochs=1, seed=0)
        assert result.status == "complete", (overrides, result.reason)
        assert result.epochs == 1 and np.isfinite(result.history["loss"][0]), overrides


@pytest.mark.slow
def test_modern_preset_trains_and_its_schedule_ends_at_zero(tiny_dataset: Path, tiny_space: Callable[[str], Path]
                                                            ) -> None:
    """Every recipe switch at once, through train_trial: the schedule is sized by the real train split."""
    space = SearchSpace.from_toml(tiny_space("alexnet"))
    modern = {k: v for k, v in load_space("alexnet").presets["modern"].items()}
    data = TrialData(tiny_dataset, seed=0, test_fraction=space.test_fraction())
    params = _tiny_params(space, **modern)
    result = train_trial("alexnet", params, data, space, epochs=3, seed=0, keep_model=True)
    assert result.status == "complete" and result.epochs == 3
    n_train = len(data.split(32, "70/15/15")["train"][0])
    assert int(result.model.optimizer.iterations) == 3 * math.ceil(n_train / int(params["batch_size"]))
    assert float(result.model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)


# ----- early stopping inside a trial -----------------------------------------------------------------------
def test_earliest_stop_spares_a_cosine_schedule_its_first_two_thirds() -> None:
    assert earliest_stop({"schedule": "constant"}, 30) == 0
    assert earliest_stop({}, 30) == 0
    assert earliest_stop({"schedule": "cosine"}, 30) == 20
    assert earliest_stop({"schedule": "cosine"}, 10) == 6


def _val_metrics(model: Any, data: TrialData, params: dict[str, Any]) -> dict[str, float]:
    x, y, _ = data.split(32, str(params["split"]))["val"]
    return model.evaluate(make_batches(x, y, N_CLASSES, 16, shuffle_seed=None), verbose=0, return_dict=True)


@pytest.mark.slow
def test_patience_stops_a_constant_run_and_keeps_the_best_epoch(tiny_dataset: Path,
                                                                tiny_space: Callable[[str], Path]) -> None:
    space = SearchSpace.from_toml(tiny_space("alexnet"))
    data = TrialData(tiny_dataset, seed=0, test_fraction=space.test_fraction())
    params = _tiny_params(space, learning_rate=1e-2, augmentation="none", patience=2)
    result = train_trial("alexnet", params, data, space, epochs=12, seed=0, keep_model=True)
    assert result.status == "complete"
    assert result.epochs < 12  # stopped early, and exactly when the rule says
    assert result.epochs - 1 - result.best_epoch == 2
    values = result.history["val_accuracy"]
    assert all(v <= values[result.best_epoch] for v in values)
    kept = _val_metrics(result.model, data, params)
    assert kept["accuracy"] == pytest.approx(values[result.best_epoch], abs=1e-6)
    assert kept["loss"] == pytest.approx(result.history["val_loss"][result.best_epoch], rel=1e-4)


@pytest.mark.slow
def test_patience_does_not_cut_a_cosine_schedule_before_its_last_third(tiny_dataset: Path,
                                                                       tiny_space: Callable[[str], Path]) -> None:
    """The same run as above on a cosine schedule: no stop before epoch ``earliest_stop + patience``, and once
    stopped, ``patience`` stale epochs counted from the last third; the kept weights are the best epoch's."""
    space = SearchSpace.from_toml(tiny_space("alexnet"))
    data = TrialData(tiny_dataset, seed=0, test_fraction=space.test_fraction())
    epochs, patience = 12, 2
    constant = _tiny_params(space, learning_rate=1e-2, augmentation="none", patience=patience)
    cosine = {**constant, "schedule": "cosine", "warmup_epochs": 0}
    stopped = train_trial("alexnet", constant, data, space, epochs=epochs, seed=0)
    start = earliest_stop(cosine, epochs)
    assert stopped.epochs < start + patience  # the constant run stopped where a cosine run may not
    result = train_trial("alexnet", cosine, data, space, epochs=epochs, seed=0, keep_model=True)
    assert result.status == "complete"
    assert result.epochs >= start + patience
    if result.epochs < epochs:
        assert result.epochs - 1 - max(result.best_epoch, start - 1) == patience
    kept = _val_metrics(result.model, data, cosine)
    assert kept["accuracy"] == pytest.approx(result.history["val_accuracy"][result.best_epoch], abs=1e-6)
    assert kept["loss"] == pytest.approx(result.history["val_loss"][result.best_epoch], rel=1e-4)


def test_balanced_accuracy_and_macro_f1_equal_the_hand_computed_values_over_batches() -> None:
    """Accumulated over several batches, as Keras does over an epoch; checked against tuning.metrics.summarize
    (the test-set metrics, computed from a confusion matrix by hand) and a hand-written macro F1."""
    from tuning.metrics import confusion_matrix, summarize
    from tuning.models._metrics import BalancedAccuracy, MacroF1

    rng = np.random.default_rng(3)
    y = rng.choice(3, size=90, p=[0.7, 0.2, 0.1])
    pred = np.where(rng.random(90) < 0.6, y, rng.integers(0, 3, 90))
    probs = np.eye(3)[pred] * 0.8 + 0.1
    metrics = [BalancedAccuracy(3), MacroF1(3)]
    for metric in metrics:
        for start in range(0, 90, 32):
            metric.update_state(np.eye(3)[y[start:start + 32]], probs[start:start + 32])
    cm = confusion_matrix(y, pred, 3)
    expected_f1 = np.mean([2 * cm[i, i] / (cm[i].sum() + cm[:, i].sum()) for i in range(3)])
    assert float(metrics[0].result()) == pytest.approx(summarize(cm, ["a", "b", "c"])["balanced_accuracy"], abs=1e-6)
    assert float(metrics[1].result()) == pytest.approx(expected_f1, abs=1e-6)
    assert float(metrics[0].result()) != pytest.approx(float(np.mean(pred == y)), abs=1e-3)  # not plain accuracy
    metrics[0].reset_state()
    metrics[0].update_state(np.eye(3)[[0, 0]], np.eye(3)[[0, 1]])  # classes 1 and 2 absent: mean over class 0
    assert float(metrics[0].result()) == pytest.approx(0.5)


@pytest.mark.slow
def test_a_balanced_accuracy_trial_keeps_the_epoch_that_objective_rates_best(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """Every epoch logs val_balanced_accuracy and val_macro_f1; with it as the objective the kept weights are
    those of its best epoch, and the model saves and loads with the metrics compiled in."""
    space = load_space(str(tiny_space("alexnet")))
    data = TrialData.for_space(tiny_dataset, space, seed=0)
    params = space.resolve({"learning_rate": 1e-3})
    result = train_trial("alexnet", params, data, space, epochs=3, seed=0, keep_model=True,
                         objective="val_balanced_accuracy")
    assert result.status == "complete"
    for key in ("balanced_accuracy", "val_balanced_accuracy", "macro_f1", "val_macro_f1"):
        assert len(result.history[key]) == 3
    best = result.history["val_balanced_accuracy"][result.best_epoch]
    assert best == max(result.history["val_balanced_accuracy"])
    assert result.objective("val_balanced_accuracy") == best
    x, y, _ = data.split(32, "70/15/15")["val"]
    pred = np.argmax(result.model.predict(x, verbose=0), axis=1)
    recalls = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    assert float(np.mean(recalls)) == pytest.approx(best, abs=1e-6)
    path = tmp_path / "m.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path)  # safe mode: the metrics are registered classes, not code
    assert np.allclose(loaded.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-6)


def _old_tf_data(x: np.ndarray, y: np.ndarray, n_classes: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The tf.data pipeline the toolkit fed ``fit`` with before (batch, then one-hot), unshuffled, in order."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).map(lambda a, b: (a, tf.one_hot(b, n_classes)))
    return [(a.numpy(), b.numpy()) for a, b in ds]


def test_the_neutral_batches_equal_the_tf_data_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (37, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 37)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")  # as trials read the cache: memory-mapped
    rows = np.sort(rng.choice(37, 29, replace=False))  # a split's rows
    plain = neutral_batches(mapped, y, 3, 8, shuffle_seed=None, indices=rows)
    reference = _old_tf_data(x[rows], y[rows], 3, 8)
    assert len(plain) == len(reference) == 4  # the last batch partial, as before
    for k, (a, b) in enumerate(reference):
        got_x, got_y = plain[k]
        assert got_x.dtype == np.uint8 and got_y.dtype == np.float32
        assert np.array_equal(got_x, a) and np.array_equal(got_y, b)
    neutral = neutral_batches(mapped, y, 3, 8, shuffle_seed=5, indices=rows)
    tf_data = tf_data_batches(mapped, y, 3, 8, shuffle_seed=5, indices=rows)
    again = neutral_batches(mapped, y, 3, 8, shuffle_seed=5, indices=rows)
    firsts = []
    for _ in range(2):  # each pass over the tf.data set is the next epoch, as fit runs it
        batches = [(a.numpy(), b.numpy()) for a, b in tf_data]
        assert len(batches) == len(neutral) == 4
        for k, (a, b) in enumerate(batches):
            assert np.array_equal(neutral[k][0], a) and np.array_equal(neutral[k][1], b)
            assert np.array_equal(again[k][0], a)  # the same seed, the same order
        firsts.append(batches[0][0])
        assert sorted(map(bytes, np.concatenate([a for a, _ in batches]))) == sorted(map(bytes, x[rows]))
        neutral.on_epoch_end()
        again.on_epoch_end()
    assert not np.array_equal(firsts[0], firsts[1])  # reshuffled each epoch
