"""Training throughput (images/s) of one registered model under whichever Keras backend this process runs.

The backend is chosen per process (``KERAS_BACKEND=tensorflow|jax|torch``), so ``benchmarks/backends.py`` and
``benchmarks/gpu_check.sh`` start one process per setting and collect the JSON line this script prints.
Input is numpy (synthetic uint8 images, learnable: each class has its own colour cast), so the script runs
without TensorFlow. Weights are initialised from a numpy generator, not the backend's, and dropout and
augmentation are off, so the loss after a fixed number of steps is comparable across backends: the same
numbers in, the same maths, only the kernels differ.

    KERAS_BACKEND=jax python benchmarks/throughput.py --model vgg16 --width 0.25 --size 96 --batch 32 --steps 10

``--pipeline`` (TensorFlow only) also times whole epochs fed by the toolkit's two batch paths
(``tuning.train.neutral_batches``, a PyDataset, and ``tf_data_batches``) against the tf.data pipeline used before
and against tensors already batched, one-hot and float32 in memory; it prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

N_CLASSES = 3


def synthetic(n: int, size: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images with a per-class colour cast plus noise, and integer labels: learnable, reproducible."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n).astype(np.int64)
    cast = np.array([[60, 0, 0], [0, 60, 0], [0, 0, 60]], dtype=np.int16)
    x = rng.integers(0, 196, (n, size, size, 3), dtype=np.int16) + cast[y][:, None, None, :]
    return x.astype(np.uint8), y


def numpy_init(model: Any, *, seed: int) -> None:
    """Glorot-uniform kernels and zero biases from numpy, identical under every backend."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        if w.ndim >= 2:
            receptive = int(np.prod(w.shape[:-2])) if w.ndim > 2 else 1
            fan_in, fan_out = w.shape[-2] * receptive, w.shape[-1] * receptive
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights.append(rng.uniform(-limit, limit, w.shape).astype(w.dtype))
        else:
            weights.append(np.zeros_like(w))
    model.set_weights(weights)


def build(model_name: str, *, width: float, size: int, dense_units: int, lr: float, jit: str, seed: int) -> Any:
    import keras

    from tuning.models import build_model
    from tuning.space import load_space

    keras.utils.set_random_seed(seed)
    space = load_space(model_name)
    params = {**space.base, "width": width, "image_size": size, "dense_units": dense_units, "dropout": 0.0,
              "augmentation": space.augmentation("none"), "learning_rate": lr}
    model = build_model(model_name, params, (size, size, 3), N_CLASSES)
    numpy_init(model, seed=seed)
    jit_compile: Any = {"on": True, "off": False, "auto": "auto"}[jit]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def one_hot(y: np.ndarray) -> np.ndarray:
    return np.eye(N_CLASSES, dtype=np.float32)[y]


def time_steps(model: Any, x: np.ndarray, y: np.ndarray, *, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """Warm up (compile, first allocations) on ``warmup`` batches, then time ``steps`` batches in one fit."""
    n = batch * steps
    xw, yw = x[: batch * warmup], one_hot(y[: batch * warmup])
    t0 = time.perf_counter()
    model.fit(xw, yw, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hist = model.fit(x[:n], one_hot(y[:n]), batch_size=batch, epochs=1, shuffle=False, verbose=0).history
    seconds = time.perf_counter() - t0
    return {"images_per_s": n / seconds, "step_ms": 1000 * seconds / steps, "warmup_s": warm_s,
            "final_loss": float(hist["loss"][-1]), "final_accuracy": float(hist["accuracy"][-1])}


def tf_data_dataset(x: np.ndarray, y: np.ndarray, n_classes: int, batch_size: int, *, shuffle_seed: int | None) -> Any:
    """The tf.data pipeline the toolkit used before ``tuning.train.make_batches`` (kept here to compare)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, b: (a, tf.one_hot(b, n_classes)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def pipeline_ratio(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Median epoch seconds of one compiled model fed four ways, in alternation (A B C D A B C D ...) so drift on
    a shared machine hits all: the toolkit's neutral batches (a PyDataset over a memory-mapped uint8 file, as
    JAX and PyTorch trials read the cache), its tf.data batches (TensorFlow trials; same order), the tf.data
    pipeline it used before (tf's own shuffle), and float32 one-hot tensors cached in memory."""
    import tempfile

    import tensorflow as tf

    from tuning.train import neutral_batches, tf_data_batches

    n = args.batch * args.steps
    x, y = x[:n], y[:n]
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        mapped = np.load(Path(tmp) / "x.npy", mmap_mode="r")
        inputs = {
            "pydataset": neutral_batches(mapped, y, N_CLASSES, args.batch, shuffle_seed=args.seed),
            "tf_data": tf_data_batches(mapped, y, N_CLASSES, args.batch, shuffle_seed=args.seed),
            "old_tf_data": tf_data_dataset(x, y, N_CLASSES, args.batch, shuffle_seed=args.seed),
            "memory": tf.data.Dataset.from_tensor_slices((x.astype(np.float32), one_hot(y))).batch(args.batch).cache(),
        }
        for _ in inputs["memory"]:  # materialise the cache before timing
            pass
        model = build(args.model, width=args.width, size=args.size, dense_units=args.dense_units, lr=args.lr,
                      jit=args.jit, seed=args.seed)
        for ds in inputs.values():  # compile the train step for each input (uint8 and float32)
            model.fit(ds, epochs=1, verbose=0, shuffle=False)
        times: dict[str, list[float]] = {name: [] for name in inputs}
        for _ in range(args.epochs):
            for name, ds in inputs.items():
                t0 = time.perf_counter()
                model.fit(ds, epochs=1, verbose=0, shuffle=False)
                times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {**{f"epoch_s_{k}": v for k, v in med.items()},
            "pydataset_over_tf_data": med["pydataset"] / med["tf_data"],
            "pydataset_over_old_tf_data": med["pydataset"] / med["old_tf_data"],
            "tf_data_over_old_tf_data": med["tf_data"] / med["old_tf_data"],
            "pipeline_ratio": med["tf_data"] / med["memory"], "epoch_images": n, "timed_epochs": args.epochs}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg16")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dense-units", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed batches (after the warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up batches (one fit call: compiles the step)")
    p.add_argument("--jit", choices=("on", "off", "auto"), default="auto",
                   help="jit_compile: XLA on TensorFlow, jax.jit on JAX, torch.compile on PyTorch")
    p.add_argument("--precision", default="float32", help="Keras dtype policy, e.g. mixed_bfloat16")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="TensorFlow inter-op threads (the toolkit uses 1 on CPU); 0 leaves the default")
    p.add_argument("--pipeline", action="store_true",
                   help="time make_batches vs tf.data vs in-memory tensors (TensorFlow)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per input with --pipeline")
    args = p.parse_args(argv)

    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow" and args.threads:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.mixed_precision.set_global_policy(args.precision)
    x, y = synthetic(args.batch * max(args.steps, args.warmup), args.size, seed=args.seed)
    row: dict[str, Any] = {"backend": backend, "model": args.model, "width": args.width, "size": args.size,
                           "batch": args.batch, "jit": args.jit, "precision": args.precision, "steps": args.steps,
                           "device": _device(backend)}
    if args.pipeline:
        if backend != "tensorflow":
            raise SystemExit("--pipeline compares with tf.data, which needs the tensorflow backend")
        row.update(pipeline_ratio(args, x, y))
    else:
        model = build(args.model, width=args.width, size=args.size, dense_units=args.dense_units, lr=args.lr,
                      jit=args.jit, seed=args.seed)
        row["jit_resolved"] = str(model.jit_compile)
        row["params"] = int(model.count_params())
        row.update(time_steps(model, x, y, batch=args.batch, steps=args.steps, warmup=args.warmup))
    print("RESULT " + json.dumps(row), flush=True)


def _device(backend: str) -> str:
    try:
        if backend == "jax":
            import jax

            return str(jax.devices()[0].platform)
        if backend == "torch":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    except Exception as exc:  # a report line, never a reason to lose the measurement
        return f"unknown ({type(exc).__name__})"


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
