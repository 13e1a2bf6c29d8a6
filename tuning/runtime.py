"""Everything that differs between the TensorFlow, JAX and PyTorch Keras backends, in one place: which backend a
run uses, its devices, thread settings, dtype policy, out-of-memory errors and NaN handling.

Keras fixes its backend when it is first imported (from ``KERAS_BACKEND``), so the backend is chosen before
anything imports keras (``use_backend``), and child processes inherit it through their environment. Importing
this module imports no backend: each function imports the one in use, when it runs.

On a CPU one inter-op thread is the default (on 2 cores TensorFlow's own pools oversubscribe them; PyTorch's
inter-op pool likewise); GPUs keep the backend's own choice. The settings used are written to the study's config.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuning.errors import ToolkitError, UnknownNameError

#: The Keras backends a study may train on, and what ``--backend`` accepts.
BACKENDS = ("tensorflow", "jax", "torch")
BACKEND_CHOICES = ("auto", *BACKENDS)

#: ``--backend auto``: backends in order of preference per (device kind, model), first installed wins; "*" is
#: any other model. CPU rows: measured on this project's 2-core CPU with bf16 units (BENCHMARKS.md "Backends":
#: TensorFlow under mixed_bfloat16, its auto precision, was the fastest for both models in all three rounds, on
#: the quiet machine 4.0x (VGG16) and 5.1x (AlexNet) the best JAX or PyTorch setting. For installs without
#: TensorFlow, in float32 (their auto precision): JAX ran AlexNet faster than PyTorch in every round, VGG16 was
#: split one round each). GPU rows: not measured (no GPU here). In float32 on CPU, PyTorch eager once ran the
#: VGG16-style net 1.5-2.6x faster than TensorFlow (BENCHMARKS.md "Keras backends, XLA and the input pipeline"),
#: but TensorFlow's cuDNN path is the tested one, so TensorFlow first until a GPU run (benchmarks/gpu_check.sh)
#: says otherwise.
AUTO_BACKENDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("cpu", "vgg16"): ("tensorflow", "torch", "jax"),
    ("cpu", "alexnet"): ("tensorflow", "jax", "torch"),
    ("cpu", "*"): ("tensorflow", "jax", "torch"),
    ("gpu", "*"): ("tensorflow", "torch", "jax"),  # unmeasured: see above
}

#: Keras dtype policies a search may train under. ``auto`` (``auto_precision``): mixed_bfloat16 for TensorFlow
#: on a CPU with bfloat16 units (1.4x to 4.4x faster here, same losses; BENCHMARKS.md "Precision"), float32
#: elsewhere: emulated bf16 is slower, PyTorch's and JAX's CPU bf16 was faster in one of three rounds and not on
#: the quiet machine (BENCHMARKS.md "Backends"), GPUs unmeasured. Exported models always compute in float32.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


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
def stderr_hidden() -> Iterator[None]:
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
    with stderr_hidden():
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))


# ----- which backend ---------------------------------------------------------------------------------------
def installed(backend: str) -> bool:
    """Whether the backend's package is importable here (looked up, not imported)."""
    try:
        return importlib.util.find_spec(backend) is not None
    except (ImportError, ValueError):  # an import hook refusing it, or a module entry set to None
        return False


def requested_backend(value: str | None) -> str:
    """What the user asked for: ``--backend`` when given, else ``KERAS_BACKEND`` (Keras' own variable, so a
    shell that already chose a backend keeps it), else ``auto``; an unknown name is an error naming its source.

    The one place the environment is read for it (DESIGN.md rule 5): the CLI and ``SearchRequest`` pass the
    result on explicitly.
    """
    source, name = ("--backend", value) if value else ("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", ""))
    if not name:
        return "auto"
    if name not in BACKEND_CHOICES:
        raise UnknownNameError(source, name, BACKEND_CHOICES)
    return name


def loaded_backend() -> str | None:
    """The backend Keras was imported with in this process; None when keras is not imported yet."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return str(keras.config.backend())
    except AttributeError:  # a half-imported keras (an import error mid-way): nothing chosen yet
        return None


def cuda_present() -> bool:
    """Whether this machine has an NVIDIA GPU, seen from the driver's files without importing any backend:
    ``--backend auto`` must choose before keras is imported. Linux only; False elsewhere."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def visible_gpus() -> list[str]:
    """The GPUs worker processes may be given, without importing a backend: ``CUDA_VISIBLE_DEVICES`` as the user
    set it, else one index per GPU the NVIDIA driver lists (``/proc/driver/nvidia/gpus``); empty on a CPU."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    gpus = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(gpus.iterdir())))] if gpus.is_dir() else []


def worker_gpu(slot: int, gpus: list[str]) -> str | None:
    """The GPU of worker ``slot`` (``--workers N`` on a machine with several GPUs: one each, round robin when
    there are more workers than GPUs); None with fewer than two, where every worker shares what it sees."""
    return gpus[slot % len(gpus)] if len(gpus) > 1 else None


def auto_backend(model: str) -> str:
    """``--backend auto``: the first installed backend of ``AUTO_BACKENDS`` for this device kind and model.

    In a process where keras is already imported, its backend (nothing else can train there).
    """
    loaded = loaded_backend()
    if loaded is not None:
        return loaded
    kind = "gpu" if cuda_present() else "cpu"
    order = AUTO_BACKENDS.get((kind, model), AUTO_BACKENDS[(kind, "*")])
    for backend in order:
        if installed(backend):
            return backend
    raise ToolkitError(f"no Keras backend is installed (tried {', '.join(order)}); pip install tensorflow, "
                       "or torch / jax as listed in the README's Backends section")


def use_backend(backend: str) -> str:
    """Make ``backend`` the one Keras loads in this process and in every child it starts (``KERAS_BACKEND``).

    A backend that is not installed, or a process whose keras was already imported with another backend (a
    notebook, a library call), is one clear error: Keras cannot switch backend after its first import.
    """
    if backend not in BACKENDS:
        raise UnknownNameError("--backend", backend, BACKEND_CHOICES)
    loaded = loaded_backend()
    if loaded is not None and loaded != backend:
        raise ToolkitError(f"keras is already imported with the {loaded} backend in this process, so it cannot train "
                           f"on {backend}; set KERAS_BACKEND={backend} before keras is first imported (a new "
                           f"process or notebook kernel), or ask for backend '{loaded}'")
    if loaded is None and not installed(backend):
        raise ToolkitError(f"--backend {backend}: the '{backend}' package is not installed; pip install "
                           f"'tuning[backends]' (or the package alone), or choose another of {', '.join(BACKENDS)}")
    os.environ["KERAS_BACKEND"] = backend
    return backend


def load_backend() -> str:
    """Import keras with the backend ``use_backend`` chose (TensorFlow's C++ notices hidden, as
    ``load_tensorflow``); returns its name. Worker processes call this before anything else imports keras."""
    backend = loaded_backend() or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if backend == "tensorflow":
        load_tensorflow()
    with stderr_hidden():
        import keras

    return str(keras.config.backend())


# ----- devices, threads, precision ---------------------------------------------------------------------------
def detect_device(backend: str) -> tuple[str, str]:
    """("gpu" or "cpu", the device's name) as ``backend`` sees it: torch.cuda, jax.devices(), tf.config."""
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "gpu", str(torch.cuda.get_device_name(0))
    elif backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu" or device.platform == "cuda":
            return "gpu", str(device.device_kind)
    else:
        if load_tensorflow():
            import tensorflow as tf

            gpu = tf.config.list_physical_devices("GPU")[0]
            return "gpu", str(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
    return "cpu", cpu_name()


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def bf16_units() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX); Linux only, False when unknown."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def auto_precision(backend: str, device: str) -> str:
    """``--precision auto`` (see ``PRECISIONS``): mixed_bfloat16 only where it was measured faster."""
    return "mixed_bfloat16" if backend == "tensorflow" and device == "cpu" and bf16_units() else "float32"


def resolve(*, precision: str = "auto", backend: str | None = None) -> dict[str, Any]:
    """The settings for this machine and backend (the loaded one when None): the device, inter-op threads (1 on
    a CPU for TensorFlow and PyTorch, the backend's default on a GPU and under JAX) and precision."""
    if backend is None:
        backend = load_backend()
    device, name = detect_device(backend)
    if precision == "auto":
        precision = auto_precision(backend, device)
    threads = 1 if device == "cpu" and backend in ("tensorflow", "torch") else 0
    return {"backend": backend, "device": device, "device_name": name, "inter_op_threads": threads,
            "precision": precision}


def _get_threads(backend: str) -> int:
    if backend == "tensorflow":
        import tensorflow as tf

        return int(tf.config.threading.get_inter_op_parallelism_threads())
    if backend == "torch":
        import torch

        return int(torch.get_num_interop_threads())
    return 0


def _set_threads(backend: str, threads: int) -> None:
    """Inter-op threads; a backend whose pools already started (tests, notebooks) keeps what it has."""
    if not threads:
        return
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_inter_op_parallelism_threads(threads)
        elif backend == "torch":
            import torch

            if torch.get_num_interop_threads() != threads:
                torch.set_num_interop_threads(threads)
    except RuntimeError:  # already initialised in this process: keep what is set
        pass


def apply(settings: Mapping[str, Any]) -> None:
    """Apply ``resolve()``'s settings to the loaded backend; must run before it executes its first operation."""
    import keras

    _set_threads(str(keras.config.backend()), int(settings.get("inter_op_threads") or 0))
    keras.mixed_precision.set_global_policy(settings.get("precision", "float32"))


@contextmanager
def applied(settings: Mapping[str, Any]) -> Iterator[None]:
    """``apply(settings)`` for the block, then the caller's dtype policy and thread count back.

    A notebook that calls the library keeps the Keras it had: a search under mixed_bfloat16 must not leave
    the user's next model in bfloat16. Backends fix their thread pools at their first operation, so a thread
    count that can no longer change stays as it is (``apply`` then kept the caller's anyway).
    """
    import keras

    backend = str(keras.config.backend())
    policy = keras.mixed_precision.global_policy()
    threads = _get_threads(backend)
    apply(settings)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
        _set_threads(backend, threads)


# ----- failures: out of memory, NaN --------------------------------------------------------------------------
def out_of_memory_errors() -> tuple[type[BaseException], ...]:
    """The exception classes an out-of-memory failure of the loaded backend arrives as; ``is_out_of_memory``
    tells which instances are one (PyTorch and JAX use broad RuntimeError classes)."""
    import keras

    backend = str(keras.config.backend())
    if backend == "torch":
        import torch

        return (MemoryError, torch.cuda.OutOfMemoryError, RuntimeError)
    if backend == "jax":
        import jax

        return (MemoryError, jax.errors.JaxRuntimeError)
    import tensorflow as tf

    return (MemoryError, tf.errors.ResourceExhaustedError)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (one of ``out_of_memory_errors()``) means memory ran out, not another failure: torch
    raises torch.cuda.OutOfMemoryError or a RuntimeError saying 'out of memory' (its CPU allocator), JAX an
    XlaRuntimeError starting RESOURCE_EXHAUSTED, TensorFlow ResourceExhaustedError; torch's CPU allocator says
    "can't allocate memory" instead."""
    if isinstance(exc, MemoryError) or type(exc).__name__ in ("OutOfMemoryError", "ResourceExhaustedError"):
        return True
    text = str(exc).lower()
    return any(sign in text for sign in ("resource_exhausted", "out of memory", "can't allocate memory",
                                         "cannot allocate memory"))


def non_finite(logs: Mapping[str, Any]) -> str | None:
    """The first metric in an epoch's logs that is NaN or infinite (a diverged trial), else None.

    Keras hands callbacks plain Python floats on every backend, so one check serves all three; a value that is
    not a number (a backend tensor in a custom log) is converted first.
    """
    for key, value in logs.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number):
            return key
    return None
