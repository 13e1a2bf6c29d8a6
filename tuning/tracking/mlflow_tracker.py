"""MLflow tracking: the study as a parent run, each trial as a child run, the final model and report as the
parent's artifacts.

Without a URI the store is ``sqlite:///<runs>/mlflow.db`` beside the study folders (artifacts in
``<runs>/mlartifacts/``), so ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`` shows every study
searched there; MLflow 3 refuses its old ``./mlruns`` file store by default. A resumed study continues its
parent run (found by its ``tuning.folder`` tag), so one study is one run however often it was restarted.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuning.study import SearchOutcome, StudyConfig

#: StudyConfig fields logged as the parent run's parameters (fixed for a study: a resume must match them).
STUDY_PARAMS = ("model", "dataset", "engine", "sampler", "pruner", "budget", "epochs", "seed", "objective",
                "repeats", "precision")
#: A trial's state -> the child run's MLflow status; pruned trials finished (pruning is a result).
STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}


def default_uri(folder: Path) -> str:
    return f"sqlite:///{Path(os.path.abspath(folder)).parent.as_posix()}/mlflow.db"


def artifact_root(uri: str) -> str | None:
    """A local SQLite store keeps artifacts beside it; a server chooses its own (None)."""
    if uri.startswith("sqlite:///"):
        file = Path(uri[len("sqlite:///"):].partition("?")[0])
        return (Path(os.path.abspath(file)).parent / "mlartifacts").as_uri()
    return None


class MlflowTracker:
    def __init__(self, folder: Path, *, uri: str = "") -> None:
        # MLflow retries an unreachable server for minutes by default; a tracker gives up sooner and is
        # switched off (the user's own MLFLOW_HTTP_REQUEST_* settings win).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # their INFO lines ("Creating initial MLflow database tables")
            logging.getLogger(name).setLevel(logging.WARNING)  # after the import, which sets them up

        self.folder = Path(folder)
        self.uri = uri or default_uri(self.folder)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.parent = ""
        self.experiment = ""
        self.children: dict[str, str] = {}
        self.last_epoch: dict[str, int] = {}
        self.repeating: set[str] = set()

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        if kind == "study":
            self._open(event["config"], tuple(event["space"].search))
        elif kind == "trial_start":
            self._trial_start(str(event["number"]), event["params"])
        elif kind == "epoch":
            key = str(event["number"])
            if key in self.repeating or event["epoch"] <= self.last_epoch.get(key, 0):
                self.repeating.add(key)  # a later repeat starts its epochs again: the first one is logged
                return
            self.last_epoch[key] = event["epoch"]
            self._metrics(self.children[key], event["logs"], step=event["epoch"])
        elif kind == "trial_end":
            self._trial_end(str(event["number"]), event)
        elif kind == "retrain":
            self.client.set_tag(self.parent, "tuning.best_params", _text(event["params"]))
        elif kind == "note":
            self.client.set_tag(self.parent, "tuning.note", str(event["message"])[:5000])

    def close(self, outcome: SearchOutcome | None, *, error: str = "") -> None:
        if not self.parent:
            return
        for run in self.children.values():  # trials cut short by the error or Ctrl-C
            self.client.set_tag(run, "state", "interrupted")
            self.client.set_terminated(run, "KILLED")
        self.children.clear()
        if outcome is not None:
            self._outcome(outcome)
        if error:
            self.client.set_tag(self.parent, "tuning.error", error[:5000])
        self.client.set_terminated(self.parent, "FAILED" if error else "FINISHED")

    # ----- runs ------------------------------------------------------------------------------------------
    def _open(self, config: StudyConfig, searched: tuple[str, ...]) -> None:
        folder = Path(os.path.abspath(self.folder)).as_posix()
        found = self.client.get_experiment_by_name(config.name)
        self.experiment = (found.experiment_id if found is not None else
                           self.client.create_experiment(config.name, artifact_location=artifact_root(self.uri)))
        runs = self.client.search_runs([self.experiment], f"tags.`tuning.folder` = '{_quoted(folder)}'",
                                       max_results=1, order_by=["attributes.start_time DESC"])
        if runs:  # a resumed study: the same parent run
            self.parent = runs[0].info.run_id
            self.client.update_run(self.parent, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment, run_name=config.name,
                                         tags={"tuning.folder": folder, "tuning.role": "study"})
            self.parent = run.info.run_id
            params = {k: getattr(config, k) for k in STUDY_PARAMS} | {"searched": ",".join(searched)}
            self._params(self.parent, params)
        self.client.set_tag(self.parent, "tuning.trials", str(config.trials))

    def _trial_start(self, key: str, params: Mapping[str, Any]) -> None:
        run = self.client.create_run(self.experiment, run_name=f"trial {key}", tags={
            "mlflow.parentRunId": self.parent, "tuning.trial": key, "tuning.role": "trial"})
        self.children[key] = run.info.run_id
        self.last_epoch[key] = 0
        self.repeating.discard(key)
        self._params(run.info.run_id, params)

    def _trial_end(self, key: str, event: Mapping[str, Any]) -> None:
        run = self.children.pop(key, None)
        if run is None:
            return
        self._metrics(run, {"objective": event["value"], "seconds": event["seconds"], **(event.get("costs") or {})},
                      step=self.last_epoch.get(key, 0))
        self.client.set_tag(run, "state", event["status"])
        if event.get("reason"):
            self.client.set_tag(run, "fail_reason", str(event["reason"])[:5000])
        self.client.set_terminated(run, STATUS.get(event["status"], "FINISHED"))

    def _outcome(self, outcome: SearchOutcome) -> None:
        from tuning.study import study_paths
        from tuning.tracking import final_metrics

        self._metrics(self.parent, {"best_value": outcome.best_value, **final_metrics(outcome.metrics)}, step=0)
        self.client.set_tag(self.parent, "tuning.best_trial", str(outcome.best_number))
        self.client.set_tag(self.parent, "tuning.best_params", _text(outcome.best_params))
        paths = study_paths(outcome.folder)
        self._artifact(outcome.model, "model")
        self._artifact(paths["final"] / "metrics.json", "final")
        self._artifact(outcome.report.parent, "report")
        for card in ("model_card.md", "model_card.json"):
            self._artifact(paths["export"] / card, "model_card")
        self._artifact(paths["config"], "")

    def _artifact(self, path: Path, where: str) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.parent, str(path), where or None)
        elif path.is_file():
            self.client.log_artifact(self.parent, str(path), where or None)

    def _params(self, run: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def _metrics(self, run: str, values: Mapping[str, Any], *, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
        if metrics:
            self.client.log_batch(run, metrics=metrics)


def _text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())[:5000]


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
