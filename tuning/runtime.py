"""TensorFlow/Keras settings (threads, dtype policy), applied for a block that restores the caller's own.

On a CPU one inter-op thread is the default (on 2 cores TensorFlow's own pools oversubscribe them); GPUs keep
TensorFlow's own choice. The settings used are written to the study's config.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    """This process's resident memory in MB (Linux; peak RSS elsewhere), reported with every trial."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def _stderr_hidden() -> Iterator[None]:
    """Hide file descriptor 2 for a moment: TensorFlow's C++ start-up prints notices (oneDNN, no CUDA driver)
    before its log settings apply, and no environment variable silences them. Exceptions still propagate."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_tensorflow() -> bool:
    """Import TensorFlow and let it find its devices with the C++ notices hidden (both print them); commands
    that need TensorFlow call this first. True when it sees a GPU."""
    with _stderr_hidden():
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))


#: Keras dtype policies a search may train under. ``auto``: mixed_bfloat16 on a CPU with bfloat16 units (1.4x
#: to 4.4x faster here, same losses; BENCHMARKS.md "Precision"), float32 elsewhere (emulated bf16 is slower;
#: GPUs unmeasured).
#: Exported models always compute in float32.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def bf16_units() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX); Linux only, False when unknown."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve(*, precision: str = "auto") -> dict[str, Any]:
    """The settings for this machine: inter-op threads (1 on CPU, TensorFlow's default on GPU) and precision."""
    gpu = load_tensorflow()
    if precision == "auto":
        precision = "mixed_bfloat16" if not gpu and bf16_units() else "float32"
    return {"device": "gpu" if gpu else "cpu", "inter_op_threads": 0 if gpu else 1, "precision": precision}


def apply(settings: dict[str, Any]) -> None:
    """Apply ``resolve()``'s settings; must run before TensorFlow executes its first operation."""
    import keras
    import tensorflow as tf

    if settings.get("inter_op_threads"):
        try:
            tf.config.threading.set_inter_op_parallelism_threads(int(settings["inter_op_threads"]))
        except RuntimeError:  # already initialised in this process (tests, notebooks): keep what is set
            pass
    keras.mixed_precision.set_global_policy(settings.get("precision", "float32"))


@contextmanager
def applied(settings: dict[str, Any]) -> Iterator[None]:
    """``apply(settings)`` for the block, then the caller's dtype policy and thread count back.

    A notebook that calls the library keeps the Keras it had: a search under mixed_bfloat16 must not leave
    the user's next model in bfloat16. TensorFlow fixes its thread pools at its first operation, so a thread
    count that can no longer change stays as it is (``apply`` then kept the caller's anyway).
    """
    import keras
    import tensorflow as tf

    policy = keras.mixed_precision.global_policy()
    threads = tf.config.threading.get_inter_op_parallelism_threads()
    apply(settings)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
        try:
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised: it could not have been changed either
            pass
