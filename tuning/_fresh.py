"""One call in a fresh interpreter, so the process that asks never imports what the call needs.

A search whose trials train in worker processes only coordinates: it must not hold TensorFlow (or a Keras
backend) beside the worker that trains, about 600 MB of the process tree's memory otherwise (BENCHMARKS.md,
"Process memory"). What it still needs from them (the device probe, building a missing dataset cache,
retraining the best trial) runs through ``call_in_fresh_process`` and comes back as a plain value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tuning import errors
from tuning.errors import StudyError, ToolkitError

T = TypeVar("T")


def call_in_fresh_process(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a spawned child (it dies with this process); its ``ToolkitError`` is raised here
    with the same class and message, and a child that dies (killed for memory, say) is a ``StudyError``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from tuning.engines.processes import _die_with_parent

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this one's state
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_die_with_parent) as pool:
        try:
            outcome = pool.submit(_call, fn, args, kwargs).result()
        except BrokenProcessPool:
            raise StudyError(f"the child process running {fn.__name__} died before it finished (killed, perhaps "
                             "for memory: the kernel log, dmesg, says); rerun, or free memory first") from None
    if outcome[0] == "error":
        raise _rebuilt(outcome[1], outcome[2])
    return outcome[1]


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    from tuning import runtime

    try:  # the backend's C++ start-up notices hidden wherever the call first imports it; errors come back below
        with runtime.stderr_hidden():
            return ("ok", fn(*args, **kwargs))
    except ToolkitError as exc:  # sent as (class name, message): not every subclass unpickles from its message
        return ("error", type(exc).__name__, str(exc))


def _rebuilt(name: str, message: str) -> ToolkitError:
    """The child's error as the same class where it takes just a message (UnknownNameError does not)."""
    cls = getattr(errors, name, ToolkitError)
    if not (isinstance(cls, type) and issubclass(cls, ToolkitError)) or cls.__init__ is not ToolkitError.__init__:
        cls = ToolkitError
    return cls(message)
