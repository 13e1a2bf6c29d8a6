"""TensorBoard event files for a study: ``runs/<study>/tensorboard/<trial>/`` per trial, plus the HParams
experiment at the top, so ``tensorboard --logdir runs/<study>/tensorboard`` shows the table and the
parallel-coordinates view of every trial.

Written with the ``tensorboard`` package's own event-file writer and HParams protos, not ``tf.summary``: it
needs no TensorFlow, so a study on the JAX or PyTorch backend writes the same files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuning.space import SearchSpace
    from tuning.study import SearchOutcome

#: Metrics the HParams table shows as columns (the last value written in each trial's run).
METRICS = ("val_accuracy", "val_loss", "accuracy", "loss", "objective")


def run_name(number: str | int) -> str:
    """A trial's run folder: ``trial-0007`` sorts in trial order in TensorBoard's run list."""
    return f"trial-{number:04d}" if isinstance(number, int) else f"trial-{number}"


def hparam_value(value: Any) -> bool | int | float | str:
    """HParams hold bools, numbers and strings; anything else (a list) is shown as its text."""
    return value if isinstance(value, bool | int | float | str) else str(value)


class TensorBoardTracker:
    """Scalars per epoch (the first repeat's, as ``history.json`` keeps them), the trial's objective at its
    end, its searched parameters as HParams and its status as the session's end."""

    def __init__(self, folder: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.root = Path(folder) / "tensorboard"
        self._writer_class = EventFileWriter
        self.writers: dict[str, Any] = {}
        self.last_epoch: dict[str, int] = {}
        self.repeating: set[str] = set()  # trials past their first repeat: nothing more per epoch
        self.searched: tuple[str, ...] = ()

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        if kind == "study":
            self.searched = tuple(event["space"].search)
            self._write(self.root, self._experiment(event["space"]))
        elif kind == "trial_start":
            key = run_name(event["number"])
            self.last_epoch[key] = 0
            self.repeating.discard(key)
            params = {k: hparam_value(v) for k, v in event["params"].items() if k in self.searched}
            self._summary(key, _session_start(params, key), step=0)
        elif kind == "epoch":
            key = run_name(event["number"])
            if key in self.repeating or event["epoch"] <= self.last_epoch.get(key, 0):
                self.repeating.add(key)  # the epochs start again: a later repeat
                return
            self.last_epoch[key] = event["epoch"]
            self._scalars(key, event["logs"], step=event["epoch"])
        elif kind == "trial_end":
            key = run_name(event["number"])
            step = self.last_epoch.get(key, 0)
            self.repeating.discard(key)
            self._scalars(key, {"objective": event["value"]}, step=step)
            self._summary(key, _session_end(event["status"]), step=step)
            writer = self.writers.pop(key, None)
            if writer is not None:
                writer.close()

    def close(self, outcome: SearchOutcome | None, *, error: str = "") -> None:
        for writer in self.writers.values():  # trials cut short: what they wrote is kept
            writer.close()
        self.writers.clear()
        if outcome is not None:
            from tuning.tracking import final_metrics

            self._scalars("final", {"best_value": outcome.best_value, **final_metrics(outcome.metrics)}, step=0)
            if "final" in self.writers:
                self.writers.pop("final").close()

    # ----- writing ---------------------------------------------------------------------------------------
    def _writer(self, key: str) -> Any:
        if key not in self.writers:
            self.writers[key] = self._writer_class(str(self.root / key), flush_secs=5)
        return self.writers[key]

    def _summary(self, key: str, summary: Any, *, step: int) -> None:
        from tensorboard.compat.proto import event_pb2

        self._writer(key).add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def _scalars(self, key: str, values: Mapping[str, Any], *, step: int) -> None:
        from tensorboard.compat.proto import summary_pb2

        summary = summary_pb2.Summary()
        for tag, value in values.items():
            if isinstance(value, int | float) and math.isfinite(value):
                summary.value.add(tag=tag, simple_value=float(value))
        if summary.value:
            self._summary(key, summary, step=step)

    def _write(self, folder: Path, summary: Any) -> None:
        from tensorboard.compat.proto import event_pb2

        writer = self._writer_class(str(folder), flush_secs=5)
        try:
            writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
        finally:
            writer.close()

    def _experiment(self, space: SearchSpace) -> Any:
        """The HParams experiment: each searched parameter with its domain, and the metric columns."""
        from tensorboard.plugins.hparams import summary_v2 as hp

        hparams = []
        for name in self.searched:
            d = space.params[name].to_dict()
            hparams.append(hp.HParam(name, _domain(hp, d)))
        metrics = [hp.Metric(m, display_name=m) for m in METRICS]
        return hp.hparams_config_pb(hparams=hparams, metrics=metrics, time_created_secs=time.time())


def _domain(hp: Any, d: Mapping[str, Any]) -> Any:
    """TensorBoard's domain for a parameter; None (no filter widget) where its values mix types."""
    if d["type"] == "bool":
        return hp.Discrete([False, True])
    if "values" in d:
        values = [hparam_value(v) for v in d["values"]]
        kinds = {bool if isinstance(v, bool) else str if isinstance(v, str) else float for v in values}
        return hp.Discrete([float(v) for v in values] if kinds == {float} else values) if len(kinds) == 1 else None
    if d["type"] == "int":
        return hp.IntInterval(int(d["low"]), int(d["high"]))
    return hp.RealInterval(float(d["low"]), float(d["high"]))


def _session_start(params: Mapping[str, Any], key: str) -> Any:
    from tensorboard.plugins.hparams import summary_v2 as hp

    return hp.hparams_pb(dict(params), trial_id=key)


def _session_end(status: str) -> Any:
    """Failed trials show as failed sessions; complete and pruned ones as finished (pruning is a result)."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    end = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.STATUS_FAILURE if status == "failed" else api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    return _plugin_summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))


def _plugin_summary(tag: str, data: Any) -> Any:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return summary
