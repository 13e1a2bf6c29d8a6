"""Experiment trackers: the search's progress events, also sent to TensorBoard and MLflow.

A tracker is a plain event consumer, ``__call__(event)`` for each event of ``run_search`` (``study``,
``trial_start``, ``epoch``, ``trial_end``, ``retrain``, ``note``) and ``close(outcome, *, error="")`` once at
the end, so it needs no hook inside training: the events already cross from child trial processes to the
parent (``engines/processes.py``), and the parent's trackers see every trial of every worker.

Trackers watch; they never decide. One that fails (a tracking server gone mid-study, a full disk) is switched
off after one warning and the search goes on, because the study in its Optuna storage is the record and a
missing chart is not worth a lost night of trials.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tuning.errors import ToolkitError, UnknownNameError

if TYPE_CHECKING:
    from tuning.engines import OnEvent
    from tuning.study import SearchOutcome

#: ``--track`` names and the (module, extra) each one needs.
TRACKERS: dict[str, tuple[str, str]] = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboard", "tensorboard")}


class Tracker(Protocol):
    def __call__(self, event: Mapping[str, Any]) -> None: ...

    def close(self, outcome: SearchOutcome | None, *, error: str = "") -> None: ...


@dataclass(frozen=True)
class TrackSpec:
    """One ``--track NAME[:URI]``; ``uri`` is empty where the tracker's default applies."""

    name: str
    uri: str = ""

    @property
    def label(self) -> str:
        """How warnings name it; two MLflow stores are two trackers."""
        return f"{self.name} {self.uri}" if self.uri else self.name


def require(module: str, extra: str, what: str) -> None:
    """A missing optional package is one line naming the extra that brings it."""
    if importlib.util.find_spec(module) is None:
        raise ToolkitError(f"{what} needs the {module.replace('_', '-')} package: pip install 'tuning[{extra}]'")


def parse_track(spec: str) -> TrackSpec:
    """``mlflow``, ``mlflow:http://127.0.0.1:5000``, ``mlflow:sqlite:///runs/mlflow.db``, ``tensorboard``."""
    name, _, uri = spec.strip().partition(":")
    if name not in TRACKERS:
        raise UnknownNameError("--track", name, tuple(TRACKERS))
    if uri and name == "tensorboard":
        raise ToolkitError(f"--track {spec}: tensorboard takes no URI; it writes runs/<study>/tensorboard/")
    return TrackSpec(name, uri)


def check_tracks(specs: Sequence[str]) -> list[TrackSpec]:
    """Every ``--track`` parsed and its package found, before the search writes anything."""
    tracks = [parse_track(s) for s in specs]
    for t in tracks:
        module, extra = TRACKERS[t.name]
        require(module, extra, f"--track {t.name}")
    return list({t: None for t in tracks})  # the same tracker twice would log every trial twice


def make_tracker(spec: TrackSpec, folder: Path) -> Tracker:
    if spec.name == "tensorboard":
        from tuning.tracking.tensorboard_writer import TensorBoardTracker

        return TensorBoardTracker(folder)
    from tuning.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(folder, uri=spec.uri)


#: ``final/metrics.json`` keys measured on the test split; its other numbers describe the retrain.
TEST_KEYS = ("accuracy", "balanced_accuracy", "roc_auc_macro", "n")


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The retrained model's numbers as flat metrics: ``test_*`` from the one test evaluation (with the
    accuracy's 95% interval), ``retrain_*`` for the retrain itself (its validation accuracy, epochs, seconds)."""
    out = {f"test_{k}": float(metrics[k]) for k in TEST_KEYS if isinstance(metrics.get(k), int | float)}
    ci = metrics.get("accuracy_ci95")
    if isinstance(ci, list | tuple) and len(ci) == 2:
        out["test_accuracy_ci95_low"], out["test_accuracy_ci95_high"] = float(ci[0]), float(ci[1])
    for key in ("val_accuracy", "epochs_trained", "best_epoch", "seconds"):
        if isinstance(metrics.get(key), int | float) and not isinstance(metrics.get(key), bool):
            out[f"retrain_{key}"] = float(metrics[key])
    return out


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class Tracked:
    """``on_event`` plus the trackers: each event goes to the caller first, then to every tracker still on.

    A tracker that raises is switched off, and the caller hears of it once as a ``note`` event (the CLI prints
    notes), so the search keeps its progress lines and its trials.
    """

    def __init__(self, on_event: OnEvent, trackers: Sequence[tuple[str, Tracker]]) -> None:
        self.on_event = on_event
        self.live: dict[str, Tracker] = dict(trackers)
        self.failed: dict[str, str] = {}

    def __call__(self, event: Mapping[str, Any]) -> None:
        self.on_event(event)
        for name, tracker in list(self.live.items()):
            self._guard(name, lambda t=tracker: t(event))

    def close(self, outcome: SearchOutcome | None, *, error: str = "") -> None:
        for name, tracker in list(self.live.items()):
            self._guard(name, lambda t=tracker: t.close(outcome, error=error))
        self.live.clear()

    def _guard(self, name: str, call: Any) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a tracker's failure must never end the search
            self.live.pop(name, None)
            self.failed[name] = _reason(exc)
            self.on_event({"event": "note", "message": f"Warning: {name} tracking stopped ({_reason(exc)}); "
                                                       "the search goes on without it"})


@contextmanager
def tracking(on_event: OnEvent, tracks: Sequence[TrackSpec], folder: Path) -> Iterator[Tracked]:
    """The search's ``on_event`` with trackers attached; they are closed with the error if the block raises
    (the caller closes them with the outcome otherwise)."""
    trackers: list[tuple[str, Tracker]] = []
    tracked = Tracked(on_event, trackers)
    for spec in tracks:
        tracked._guard(spec.label, lambda s=spec: trackers.append((s.label, make_tracker(s, folder))))
    tracked.live = dict(trackers)
    try:
        yield tracked
    except BaseException as exc:
        tracked.close(None, error=_reason(exc) if not isinstance(exc, KeyboardInterrupt) else "interrupted (Ctrl-C)")
        raise
    tracked.close(None)  # no-op when the caller already closed them with the outcome


def finish(tracked: Tracked, outcome: SearchOutcome | None) -> SearchOutcome | None:
    """Close the trackers with what the search produced and pass it on."""
    tracked.close(outcome)
    return outcome
