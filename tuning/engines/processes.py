"""Trials in child processes: parallel local workers, and recycling that keeps memory flat.

TensorFlow keeps about 20-25 MB per trained model that ``clear_session()`` does not give back (measured in
BENCHMARKS.md), so a long study in one process grows without bound. Each worker slot therefore runs its
trials in a child process that exits after ``per_process`` trials and is replaced by a fresh one; the study
itself lives in the storage, so nothing is lost between children. Children die with the parent
(``PR_SET_PDEATHSIG``), so killing the command never leaves a trial training on its own.
"""

from __future__ import annotations

import ctypes
import os
import queue as queue_module
import signal
import sys
from pathlib import Path
from typing import Any

from tuning import runtime
from tuning.engines import OnEvent, TrialLimitReached
from tuning.errors import StudyError, ToolkitError

DONE, ERROR = "engine_done", "engine_error"


def run_workers(folder: Path, *, data_dir: Path, workers: int, per_process: int, on_event: OnEvent,
                first_trial: int | None = None) -> None:
    """Run the study in ``config.toml`` with ``workers`` slots until it is complete; events are forwarded.

    ``first_trial``: the study's first trial number of this command, so ``--max-failures`` counts the failures
    of every child it starts, not only those of the latest (a child is replaced after ``per_process`` trials).
    """
    import multiprocessing

    # A fresh interpreter: TensorFlow (and CUDA) state is not forkable. It inherits os.environ, KERAS_BACKEND
    # included (pipeline.choose_backend set it), and _child makes the study's backend the one it loads.
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    limit = per_process or None

    gpus = runtime.visible_gpus()

    def spawn(slot: int) -> Any:
        process = context.Process(target=_child, args=(folder, data_dir, slot, limit, first_trial, events), daemon=True)
        gpu = runtime.worker_gpu(slot, gpus)  # several GPUs: each worker sees its own (spawn copies os.environ)
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        try:
            process.start()
        finally:
            if gpu is not None:
                if saved is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = saved
        return process

    children = {slot: spawn(slot) for slot in range(workers)}
    state: dict[str, Any] = {"done": False, "errors": [], "deaths": 0}

    def handle(event: dict[str, Any]) -> None:
        if event["event"] == DONE:
            state["done"] = True
        elif event["event"] == ERROR:
            state["errors"].append(event["message"])
        else:
            on_event(event)

    try:
        while children:
            try:
                handle(events.get(timeout=0.5))
            except queue_module.Empty:
                pass
            for slot, process in list(children.items()):
                if process.is_alive():
                    continue
                process.join()
                _drain(events, handle)  # a child's last words arrive after it exits
                if process.exitcode and process.exitcode > 0 and not state["errors"]:
                    state["errors"].append(f"worker process {process.pid} exited with code {process.exitcode}")
                if process.exitcode and process.exitcode < 0:  # killed (e.g. out of memory): its trial is failed
                    state["deaths"] += 1
                    if state["deaths"] > 3 and not state["errors"]:
                        state["errors"].append(f"worker processes keep dying (last: signal {-process.exitcode})")
                if state["done"] or state["errors"]:
                    del children[slot]
                else:
                    children[slot] = spawn(slot)
    except KeyboardInterrupt:
        for process in children.values():  # they got the same Ctrl-C: let them mark their trials failed
            process.join(timeout=30)
        raise
    if state["errors"]:
        raise StudyError(state["errors"][0])


def _drain(events: Any, handle: Any) -> None:
    while True:
        try:
            handle(events.get_nowait())
        except queue_module.Empty:
            return


def _child(folder: Path, data_dir: Path, slot: int, limit: int | None, first_trial: int | None,
           events: Any) -> None:
    """One worker process: trials until the study is complete or ``limit`` is reached."""
    _die_with_parent()
    from tuning import runtime
    from tuning.study import read_config, study_paths

    try:
        config = read_config(folder)
        runtime.use_backend(config.backend)  # the study's, whatever this process's environment said
        runtime.load_backend()  # quietly, before anything else imports keras
        import optuna

        from tuning.engines import run_engine
        from tuning.space import SearchSpace
        from tuning.train import TrialData

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        space = SearchSpace.from_dict(config.space, source=str(study_paths(folder)["config"]))
        runtime.apply(config.runtime)
        data = TrialData.for_space(data_dir, space, seed=config.seed)
        run_engine(config, space, data, folder, on_event=events.put, worker=slot, limit=limit,
                   first_trial=first_trial)
        events.put({"event": DONE})
    except TrialLimitReached:
        pass
    except ToolkitError as exc:
        events.put({"event": ERROR, "message": str(exc)})
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)
