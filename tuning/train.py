"""One trial = one function: every engine calls ``train_trial``; nothing else trains.

Data reach ``fit`` as the same batches on the TensorFlow, JAX and PyTorch backends (``make_batches``: a
``keras.utils.PyDataset`` over the memory-mapped cache, a tf.data pipeline on TensorFlow, where it is faster),
and every trial starts from a cleared Keras session so memory stays flat across a long study. What differs per
backend lives in ``tuning.runtime``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuning import runtime
from tuning.data.prepare import Prepared, load_prepared
from tuning.data.splits import TEST, TRAIN, VAL, assign_folds, assign_splits
from tuning.errors import DataError, UnknownNameError
from tuning.models import build_model
from tuning.space import OPTIMIZERS, RECIPE_DEFAULTS, SCHEDULES, SearchSpace
from tuning.trials import TrialStatus, direction

#: Called after each epoch with (epoch index, logs); returning True stops the trial as pruned.
EpochHook = Callable[[int, Mapping[str, float]], bool]


@dataclass
class TrialResult:
    """What one training run produced; ``model`` is kept only when asked for (retraining)."""

    params: dict[str, Any]
    status: TrialStatus
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    reason: str = ""
    model: Any = None
    precision: str = "float32"  # the dtype policy it trained under
    #: The study's objective: it decides which epoch is "best" (highest val_accuracy, lowest val_loss).
    objective_name: str = "val_accuracy"
    backend: str = "tensorflow"  # the Keras backend it trained on

    @property
    def epochs(self) -> int:
        return len(self.history.get("loss", []))

    @property
    def best_epoch(self) -> int:
        """Index of the epoch best by the objective, the one whose weights a kept model has (-1: none)."""
        values = self.history.get(self.objective_name, [])
        if not values or np.all(np.isnan(values)):
            return -1
        return int(np.nanargmin(values) if direction(self.objective_name) == "minimize" else np.nanargmax(values))

    @property
    def val_accuracy(self) -> float:
        """The validation accuracy of the best epoch (NaN when no epoch finished)."""
        acc = self.history.get("val_accuracy", [])
        return float(acc[self.best_epoch]) if 0 <= self.best_epoch < len(acc) else math.nan

    def objective(self, name: str) -> float:
        """The objective at its best epoch (lowest for val_loss, highest otherwise); NaN when none finished."""
        values = [v for v in self.history.get(name, []) if math.isfinite(v)]
        if not values:
            return math.nan
        return min(values) if direction(name) == "minimize" else max(values)


class TrialData:
    """A prepared dataset seen through any image size and split scheme, with the test share held fixed."""

    def __init__(self, dataset: Path, *, seed: int, test_fraction: float, scored_val: float | None = None,
                 fold: tuple[int, int] | None = None) -> None:
        self.dataset = Path(dataset)
        self.seed = seed
        self.test_fraction = test_fraction
        self.scored_val = scored_val  # see SearchSpace.scored_val_fraction
        self.fold = fold  # (k, K): train on K-1 folds of train+val, validate on fold k (--cv K)
        self._arrays: dict[int, Prepared] = {}
        self._codes: dict[tuple[int, str], np.ndarray] = {}  # (image size, scheme) -> codes, made once

    def with_fold(self, k: int, folds: int) -> TrialData:
        """The same data (and its loaded arrays) seen as fold ``k`` of ``folds``; the test images are unchanged."""
        view = TrialData(self.dataset, seed=self.seed, test_fraction=self.test_fraction, fold=(k, folds))
        view._arrays = self._arrays
        return view

    @classmethod
    def for_space(cls, dataset: Path, space: SearchSpace, *, seed: int) -> TrialData:
        """The dataset as a study over ``space`` sees it: the test share and the scored validation images
        held fixed across every split scheme the study can use."""
        return cls(dataset, seed=seed, test_fraction=space.test_fraction(), scored_val=space.scored_val_fraction())

    def arrays(self, image_size: int) -> Prepared:
        if image_size not in self._arrays:
            self._arrays[image_size] = load_prepared(self.dataset, image_size)
        return self._arrays[image_size]

    @property
    def classes(self) -> tuple[str, ...]:
        return next(iter(self._arrays.values())).classes if self._arrays else ()

    def class_weight(self, image_size: int) -> dict[int, float] | None:
        """Keras ``class_weight`` when the dataset was prepared with ``--balance weights``, else None."""
        weights = self.arrays(image_size).class_weights
        return dict(enumerate(weights)) if any(abs(w - 1.0) > 1e-12 for w in weights) else None

    def split(self, image_size: int, scheme: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``{"train"|"val"|"test": (x, y, ids)}`` for one image size and split scheme."""
        data = self.arrays(image_size)
        return {name: (data.x[rows], data.y[rows], data.ids[rows])
                for name, rows in self.split_rows(image_size, scheme).items()}

    def split_rows(self, image_size: int, scheme: str) -> dict[str, np.ndarray]:
        """``{"train"|"val"|"test": row indices into arrays(image_size)}``: what ``split`` copies, as indices, so
        training reads its batches from the (memory-mapped) cache instead of a copy of each split."""
        codes = self.codes(self.arrays(image_size), scheme)
        return {name: np.flatnonzero(codes == c) for name, c in (("train", TRAIN), ("val", VAL), ("test", TEST))}

    def codes(self, data: Prepared, scheme: str) -> np.ndarray:
        """TRAIN/VAL/TEST/UNUSED per prepared image for ``scheme`` (or for this view's fold: see ``with_fold``).

        Computed once per image size and scheme (the group placement takes seconds at 100,000 images, and the
        pre-trial checks and every trial of a process ask again); read-only, as callers share it.
        """
        key = (data.size, scheme)
        if key not in self._codes:
            if self.fold is not None:
                codes = assign_folds(data.y, data.groups, fold=self.fold[0], folds=self.fold[1], seed=self.seed,
                                     test_fraction=self.test_fraction)
            else:
                codes = assign_splits(data.y, data.groups, scheme, seed=self.seed, test_fraction=self.test_fraction,
                                      scored_val=self.scored_val, classes=data.classes)
            codes.flags.writeable = False
            self._codes[key] = codes
        return self._codes[key]


def check_trainable(data: TrialData, space: SearchSpace, *, folds: int = 1) -> None:
    """Refuse, before the first trial, a dataset some split leaves without a class in train, val or test.

    An empty training split crashes TensorFlow, a class absent from training ships a model that never saw it
    (``--balance weights`` keeps training going), and an empty validation split makes every trial "complete"
    with a NaN objective; so every split scheme the study can use (and with ``--cv``, every fold) is checked
    here, on the base image size (a split depends on the images' labels and groups, not on their size).
    """
    arrays = data.arrays(int(space.base["image_size"]))
    views = [(f"with split {scheme}", data, scheme) for scheme in space.schemes()]
    if folds > 1:
        views += [(f"in fold {k + 1} of --cv {folds}", data.with_fold(k, folds), "") for k in range(folds)]
    for where, view, scheme in views:
        try:
            codes = view.codes(arrays, scheme)
        except DataError as exc:  # too few groups for any split: say which dataset
            raise DataError(f"{data.dataset}: {exc}") from None
        for label, name in enumerate(arrays.classes):
            mine = codes[arrays.y == label]
            counts = {split: int(np.sum(mine == code)) for split, code in (("train", TRAIN), ("val", VAL),
                                                                           ("test", TEST))}
            empty = [split for split, n in counts.items() if n == 0]
            if empty:
                shown = ", ".join(f"{split} {n}" for split, n in counts.items())
                fix = "use fewer folds" if view.fold else "search a split with larger shares"
                raise DataError(
                    f"{data.dataset}: class '{name}' has no image in {' or '.join(empty)} {where} "
                    f"({shown} of its {len(mine)} prepared images); add images to raw/{name}/ or {fix} "
                    "(every class needs at least one image in train, val and test)"
                )


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of ``n`` training images in ``epoch``: a permutation drawn from (seed, epoch) alone, so every
    backend, every resumed trial and every worker process sees the same batches for a seed."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def make_batches(x: np.ndarray, y: np.ndarray, n_classes: int, batch_size: int, *, shuffle_seed: int | None,
                 indices: np.ndarray | None = None) -> Any:
    """Batches of (uint8 image, one-hot float32 label) for ``fit``, ``evaluate`` and ``predict`` on the loaded
    backend; reshuffled each epoch (``epoch_order``) when a seed is given, the last batch partial; the same
    images in the same order on every backend. ``indices``: the split's rows of ``x``.

    JAX and PyTorch get ``neutral_batches`` (a PyDataset reading the memory-mapped cache). TensorFlow keeps a
    tf.data pipeline (``tf_data_batches``): the PyDataset took 1.05x-2.2x the epoch time of tf.data there (11
    paired runs, VGG16- and AlexNet-style at 64 px, same model and data side by side in one process, 2 shared
    cores; BENCHMARKS.md "Backends"), since Keras feeds a PyDataset to TensorFlow through a Python generator
    while tf.data gathers and one-hots in parallel C++. That path copies the split into memory, as before.
    """
    import keras

    make = tf_data_batches if keras.config.backend() == "tensorflow" else neutral_batches
    return make(x, y, n_classes, batch_size, shuffle_seed=shuffle_seed, indices=indices)


def neutral_batches(x: np.ndarray, y: np.ndarray, n_classes: int, batch_size: int, *, shuffle_seed: int | None,
                    indices: np.ndarray | None = None) -> Any:
    """``make_batches`` as a ``keras.utils.PyDataset``, which ``fit`` takes on every backend.

    ``x`` may be memory-mapped (``load_prepared`` maps the cache): each batch reads its rows, so a trial holds
    only the batches in flight, not a copy of the split. Scaling and augmentation stay in the model; class
    weights are ``fit``'s ``class_weight``, which Keras applies to these batches too.
    """
    import keras

    rows = np.arange(len(x)) if indices is None else np.asarray(indices)
    eye = np.eye(n_classes, dtype=np.float32)

    class _Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0
            self.order = rows if shuffle_seed is None else rows[epoch_order(len(rows), shuffle_seed, 0)]

        def __len__(self) -> int:
            return math.ceil(len(rows) / batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            take = self.order[index * batch_size:(index + 1) * batch_size]
            return np.asarray(x[take]), eye[np.asarray(y)[take]]

        def on_epoch_end(self) -> None:
            if shuffle_seed is not None:
                self.epoch += 1
                self.order = rows[epoch_order(len(rows), shuffle_seed, self.epoch)]

    return _Batches()


def tf_data_batches(x: np.ndarray, y: np.ndarray, n_classes: int, batch_size: int, *, shuffle_seed: int | None,
                    indices: np.ndarray | None = None) -> Any:
    """``make_batches`` as a tf.data pipeline (TensorFlow only): the split's images copied into one tensor, and
    each pass over the dataset (``fit`` starts one per epoch) taking the next ``epoch_order``."""
    import itertools

    import tensorflow as tf

    rows = np.arange(len(x)) if indices is None else np.asarray(indices)
    images = tf.constant(np.asarray(x[rows]))
    labels = tf.one_hot(tf.constant(np.asarray(y)[rows]), n_classes)
    epochs = itertools.count()

    def order() -> Any:
        epoch = next(epochs)
        yield np.arange(len(rows)) if shuffle_seed is None else epoch_order(len(rows), shuffle_seed, epoch)

    ds = tf.data.Dataset.from_generator(order, output_signature=tf.TensorSpec((None,), tf.int64)).unbatch()
    ds = ds.batch(batch_size).apply(tf.data.experimental.assert_cardinality(math.ceil(len(rows) / batch_size)))
    ds = ds.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)  # the known length lets fit count steps (a generator's is unknown)


def learning_rate(params: Mapping[str, Any], *, epochs: int = 1, steps_per_epoch: int = 1) -> Any:
    """The study's constant rate (a float), or with ``schedule = "cosine"`` a per-step schedule: linear warm-up
    from 0 to ``learning_rate`` over ``warmup_epochs``, then cosine decay to 0 at the end of the last epoch.

    A warm-up as long as the whole run is cut to leave one decay step, so every trial still trains.
    """
    import keras

    peak = float(params["learning_rate"])
    schedule = params.get("schedule", RECIPE_DEFAULTS["schedule"])
    if schedule == "constant":
        return peak
    if schedule != "cosine":
        raise UnknownNameError("schedule", str(schedule), SCHEDULES)
    total = max(1, int(epochs) * int(steps_per_epoch))
    warmup = min(int(params.get("warmup_epochs", RECIPE_DEFAULTS["warmup_epochs"])) * int(steps_per_epoch), total - 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps=total, alpha=0.0)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=total - warmup, alpha=0.0,
                                                  warmup_target=peak, warmup_steps=warmup)


def compile_model(model: Any, params: Mapping[str, Any], *, epochs: int = 1, steps_per_epoch: int = 1) -> None:
    """Adam (the study's), SGD with momentum or AdamW with ``weight_decay``, and categorical cross-entropy
    (with ``label_smoothing`` when set); ``epochs`` and ``steps_per_epoch`` size a cosine schedule.

    Builds exactly the names in ``tuning.space.OPTIMIZERS`` (what a declaration may ask for); any other name
    is an error, never a silent fallback that would train one optimiser and record another. With every recipe
    key at the study's value this compiles exactly what the study did (Adam on a constant rate, the plain loss).
    """
    import keras

    name = params["optimizer"]
    rate = learning_rate(params, epochs=epochs, steps_per_epoch=steps_per_epoch)
    if name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=rate, momentum=float(params["momentum"]))
    elif name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=rate)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=rate, weight_decay=float(
            params.get("weight_decay", RECIPE_DEFAULTS["weight_decay"])))
    else:
        raise UnknownNameError("optimizer", str(name), OPTIMIZERS)
    smoothing = float(params.get("label_smoothing", RECIPE_DEFAULTS["label_smoothing"]))
    loss: Any = (keras.losses.CategoricalCrossentropy(label_smoothing=smoothing) if smoothing
                 else "categorical_crossentropy")
    from tuning.models._metrics import class_metrics

    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy", *class_metrics(int(model.output_shape[-1]))])


def _hook_callback(hook: EpochHook, state: dict[str, Any]) -> Any:
    import keras

    class _Hook(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            logs = dict(logs or {})
            if runtime.non_finite(logs) is not None:
                state["failed"] = f"loss became {logs.get('loss')} at epoch {epoch + 1}"
                self.model.stop_training = True
            elif hook(epoch, logs):
                state["pruned"] = True
                self.model.stop_training = True

    return _Hook()


def earliest_stop(params: Mapping[str, Any], epochs: int) -> int:
    """The first epoch (0-based) whose stale epochs early stopping counts: 0 on a constant rate; under
    ``cosine``, the start of the schedule's last third.

    Validation swings early while the rate is high (the issue's calibration: patience 6 stopped a cosine run at
    epoch 13 with balanced accuracy 0.554, its full 40 epochs gave 0.597), so a decaying schedule is not cut
    before its rate is small.
    """
    if params.get("schedule", RECIPE_DEFAULTS["schedule"]) == "cosine":
        return (2 * int(epochs)) // 3
    return 0


def _early_stopping_callback(objective: str, *, patience: int, start: int, restore: bool) -> Any:
    """Stops once ``patience`` epochs from ``start`` on brought no better ``objective`` than the best so far
    (``patience`` 0: never); with ``restore``, keeps the best epoch's weights (best over ALL epochs, the epoch
    ``TrialResult.best_epoch`` names; a search trial's model is dropped, so it skips the copies) for
    ``restore_best()``, which the trial calls after its last phase (Keras' own callback would restore at the
    end of each ``fit`` and forget the first phase's best epoch in the second).

    Keras' ``start_from_epoch`` would also ignore the best epochs before ``start``, so this counts itself: the
    trial stops at the end of epoch ``e`` when ``e - max(best, start - 1) >= patience``.
    """
    import keras

    better = (lambda a, b: a < b) if direction(objective) == "minimize" else (lambda a, b: a > b)

    class _EarlyStopping(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best: float | None = None
            self.best_epoch = -1
            self.best_weights: list[Any] | None = None
            self.stopped_epoch = -1

        def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            value = (logs or {}).get(objective)
            if value is None or not math.isfinite(value):
                return  # nothing validated (fit on train+val): the epoch budget is the stop rule
            if self.best is None or better(value, self.best):
                self.best, self.best_epoch = value, epoch
                if restore:
                    self.best_weights = self.model.get_weights()
            elif patience and epoch - max(self.best_epoch, start - 1) >= patience:
                self.stopped_epoch = epoch
                self.model.stop_training = True

        def restore_best(self) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return _EarlyStopping()


def fit_phases(model: Any, params: Mapping[str, Any], epochs: int) -> list[tuple[int, dict[str, Any], str]]:
    """The ``fit`` calls of one trial as (epoch it ends at, its params, what to unfreeze before it).

    One phase for the study's nets and for a backbone with ``unfreeze = "none"`` (or ``head_epochs`` covering
    the whole budget); otherwise ``head_epochs`` on the frozen backbone, then the rest with ``unfreeze``'s part
    trainable at ``learning_rate * fine_tune_lr_factor``. ``epochs`` is the total either way.
    """
    from tuning.models.backbones import backbone_of, fine_tune

    how = str(fine_tune(params, "unfreeze"))
    head = int(fine_tune(params, "head_epochs"))
    if backbone_of(model) is None or how == "none" or head >= epochs:
        return [(epochs, dict(params), "none")]
    tuned = {**params, "learning_rate": float(params["learning_rate"]) * float(fine_tune(params,
                                                                                          "fine_tune_lr_factor"))}
    return ([(head, dict(params), "none")] if head else []) + [(epochs, tuned, how)]


def train_trial(
    model_name: str,
    params: Mapping[str, Any],
    data: TrialData,
    space: SearchSpace,
    *,
    epochs: int,
    seed: int,
    hooks: Sequence[EpochHook] = (),
    keep_model: bool = False,
    objective: str = "val_accuracy",
) -> TrialResult:
    """Train ``model_name`` with ``params`` on the trial's train split, validating every epoch.

    A NaN/inf loss or running out of memory ends the trial as failed with its reason; the caller's study
    goes on. With ``keep_model`` the weights of the epoch best by ``objective`` are restored and returned.
    With ``patience`` in ``params`` the trial stops early (``earliest_stop`` says from when) and, stopped or
    not, ends on its best epoch's weights; ``epochs`` stays the maximum and sizes the learning-rate schedule.
    A pretrained backbone trains in the two phases of ``fit_phases``: one history, epochs counted across both.
    """
    import keras

    from tuning.models.backbones import unfreeze

    policy = keras.config.dtype_policy()  # clear_session resets it to float32: --precision must survive
    keras.backend.clear_session()  # also runs the garbage collector (free_memory=True)
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(seed)
    params = dict(params)
    size = int(params["image_size"])
    rows = data.split_rows(size, str(params["split"]))
    arrays = data.arrays(size)
    n_classes = len(data.classes)
    state: dict[str, Any] = {}
    callbacks = [_hook_callback(lambda e, logs: any(h(e, logs) for h in hooks), state)]
    patience = int(params.get("patience", RECIPE_DEFAULTS["patience"]))
    keeper = None
    if patience or keep_model:
        keeper = _early_stopping_callback(objective, patience=patience, start=earliest_stop(params, epochs),
                                          restore=keep_model)
        callbacks.append(keeper)
    start = time.perf_counter()
    model = None
    try:
        try:
            model = build_model(model_name, {**params, "augmentation": space.augmentation_for(params)},
                                (size, size, 3), n_classes)
        except ValueError as exc:  # e.g. an input too small for the pooling layers
            return TrialResult(params, "failed", reason=f"model cannot be built: {str(exc).splitlines()[0][:200]}",
                               objective_name=objective)
        batch = int(params["batch_size"])
        steps = math.ceil(len(rows["train"]) / batch)
        history: dict[str, list[Any]] = {}
        first = 0
        for last, phase_params, how in fit_phases(model, params, epochs):
            if how != "none":
                unfreeze(model, model_name, how)  # then recompiled, so the optimiser sees the new weights
            compile_model(model, phase_params, epochs=last - first, steps_per_epoch=steps)
            logs = model.fit(
                make_batches(arrays.x, arrays.y, n_classes, batch, shuffle_seed=seed, indices=rows["train"]),
                validation_data=make_batches(arrays.x, arrays.y, n_classes, batch, shuffle_seed=None,
                                             indices=rows["val"]),
                initial_epoch=first, epochs=last, verbose=0, callbacks=callbacks,  # epochs count on across phases
                shuffle=False, class_weight=data.class_weight(size),  # the batches shuffle themselves
            ).history
            for key, values in logs.items():
                history.setdefault(key, []).extend(values)
            first = last
            if model.stop_training:  # pruned, failed or stopped early: no next phase
                break
        if keeper is not None:
            keeper.restore_best()
    except runtime.out_of_memory_errors() as exc:
        if not runtime.is_out_of_memory(exc):
            raise
        return TrialResult(params, "failed", reason=f"out of memory: {str(exc).splitlines()[0][:200]}",
                           seconds=time.perf_counter() - start, objective_name=objective)
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    seconds = time.perf_counter() - start
    status: TrialStatus = "failed" if "failed" in state else "pruned" if state.get("pruned") else "complete"
    result = TrialResult(params, status, history, seconds, state.get("failed", ""),
                         model if keep_model and status == "complete" else None, policy.name, objective,
                         str(keras.config.backend()))
    del model
    return result

