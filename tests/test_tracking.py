"""Trackers as the search feeds them: TensorBoard event files read back with TensorBoard's own reader, MLflow
runs read back from a real local tracking store with MLflow's client, and a tracker that breaks mid-study
while the search goes on. Trials train with ``fake_train``; the events are the engines' real ones."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tuning.engines import run_engine
from tuning.errors import ToolkitError
from tuning.pipeline import SearchRequest, resolve_space, run_search
from tuning.space import SearchSpace
from tuning.study import StudyConfig, default_storage
from tuning.tracking import Tracked, check_tracks, parse_track, tracking
from tuning.train import TrialData


def _setup(space_path: Path, folder: Path, **request: Any) -> tuple[StudyConfig, SearchSpace, TrialData]:
    req = SearchRequest(model="alexnet", data=folder / "no-data", space=str(space_path), budget="quick", **request)
    space, trials, epochs = resolve_space(req, "quick")
    config = StudyConfig(
        name=folder.name, model="alexnet", dataset=str(req.data), engine=req.engine,
        sampler="tpe" if req.sampler == "auto" else req.sampler, pruner=req.pruner, budget="quick", trials=trials,
        epochs=epochs, seed=req.seed,
        storage=default_storage(folder), space=space.to_dict(), repeats=req.repeats,
    )
    return config, space, TrialData(req.data, seed=req.seed, test_fraction=space.test_fraction())


def _search(tracked: Tracked, config: StudyConfig, space: SearchSpace, data: TrialData, folder: Path) -> Any:
    """What ``pipeline._execute`` does up to the retrain: the study event, then the engine's trials."""
    tracked({"event": "study", "folder": str(folder), "config": config, "space": space})
    study = run_engine(config, space, data, folder, on_event=tracked)
    tracked({"event": "note", "message": "a note from the engine"})
    return study


def _accumulator(path: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


# ----- spec parsing ------------------------------------------------------------------------------------------
def test_track_specs_parse_names_and_uris_and_refuse_unknown_ones() -> None:
    assert parse_track("mlflow").uri == ""
    assert parse_track("mlflow:http://127.0.0.1:5000") == parse_track(" mlflow:http://127.0.0.1:5000 ")
    assert parse_track("mlflow:sqlite:///runs/m.db").uri == "sqlite:///runs/m.db"
    assert [t.name for t in check_tracks(["tensorboard", "mlflow", "tensorboard"])] == ["tensorboard", "mlflow"]
    with pytest.raises(ToolkitError, match="unknown --track 'wandb'; known: mlflow, tensorboard"):
        parse_track("wandb")
    with pytest.raises(ToolkitError, match="tensorboard takes no URI"):
        parse_track("tensorboard:/tmp/x")


def test_a_missing_tracker_package_names_the_extra_and_writes_no_study(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            study="s", runs=tmp_path / "runs", track=("mlflow",))
    needs = r"^--track mlflow needs the mlflow package: pip install 'tuning\[mlflow\]'$"
    with pytest.raises(ToolkitError, match=needs):
        run_search(request)
    assert not (tmp_path / "runs").exists()


# ----- TensorBoard -------------------------------------------------------------------------------------------
def test_tensorboard_files_hold_every_trials_epochs_and_hparams(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    from tensorboard.plugins.hparams import metadata

    from tuning.tracking.tensorboard_writer import TensorBoardTracker

    folder = tmp_path / "tb"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=3, pruner="none", sampler="random")
    fake_train.fail = lambda p: len(fake_train.calls) == 2  # the second trial fails
    tracked = Tracked(lambda e: None, [("tensorboard", TensorBoardTracker(folder))])
    study = _search(tracked, config, space, data, folder)
    tracked.close(None)

    root = folder / "tensorboard"
    experiment = metadata.parse_experiment_plugin_data(
        _accumulator(root).PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    assert [h.name for h in experiment.hparam_infos] == ["learning_rate", "dropout"]
    assert experiment.hparam_infos[0].domain_interval.min_value == pytest.approx(1e-4)
    assert {m.name.tag for m in experiment.metric_infos} >= {"val_accuracy", "objective"}
    for trial in study.get_trials(deepcopy=False):
        acc = _accumulator(root / f"trial-{trial.number:04d}")
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        assert {k: v.number_value for k, v in start.hparams.items()} == pytest.approx(trial.params)
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        if trial.state.name == "FAIL":
            assert end.status == 2 and "val_accuracy" not in acc.Tags()["scalars"]  # api_pb2.STATUS_FAILURE
            continue
        assert end.status == 1  # STATUS_SUCCESS
        epochs = acc.Scalars("val_accuracy")
        assert [e.step for e in epochs] == [1, 2]
        expected = trial.user_attrs["history"]["val_accuracy"]
        assert [e.value for e in epochs] == pytest.approx(expected, rel=1e-6)
        assert acc.Scalars("objective")[-1].value == pytest.approx(trial.value, rel=1e-6)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_tensorboard_server_shows_every_trial_in_its_hparams_table(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """``tensorboard --logdir runs/<study>/tensorboard``, the real server on 127.0.0.1, asked what its HParams
    dashboard shows: one session per trial with its parameters, status and last val_accuracy."""
    import json
    import queue
    import shutil
    import subprocess
    import sys
    import threading
    import time
    import urllib.request

    from tuning.tracking.tensorboard_writer import TensorBoardTracker

    folder = tmp_path / "served"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=3, pruner="none")
    tracked = Tracked(lambda e: None, [("tensorboard", TensorBoardTracker(folder))])
    study = _search(tracked, config, space, data, folder)
    tracked.close(None)

    exe = shutil.which("tensorboard", path=str(Path(sys.executable).parent))
    assert exe is not None, "the tensorboard package installs the tensorboard command"
    process = subprocess.Popen([exe, "--logdir", str(folder / "tensorboard"), "--host", "127.0.0.1", "--port", "0",
                                "--load_fast", "false"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True).start()
        base, deadline = "", time.monotonic() + 120
        while not base and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                assert process.poll() is None, "tensorboard exited before serving"
                continue
            if line.startswith("TensorBoard ") and " at http://" in line:
                base = line.split(" at ", 1)[1].split()[0].rstrip("/")
        assert base, "tensorboard printed no address"
        body = json.dumps({"experimentName": "", "startIndex": 0, "sliceSize": 100,
                           "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE"],
                           "colParams": [{"hparam": "learning_rate"}, {"hparam": "dropout"},
                                         {"metric": {"tag": "val_accuracy", "group": ""}}]}).encode()
        groups: list[Any] = []
        while len(groups) < 3 and time.monotonic() < deadline:  # it loads the event files in the background
            request = urllib.request.Request(f"{base}/data/plugin/hparams/session_groups", data=body, headers={
                "Content-Type": "application/json", "X-XSRF-Protected": "1"})
            with urllib.request.urlopen(request, timeout=10) as response:
                groups = json.loads(response.read()).get("sessionGroups", [])
            if len(groups) < 3:
                time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
    shown = {g["name"]: g for g in groups}
    assert sorted(shown) == ["trial-0000", "trial-0001", "trial-0002"]
    for trial in study.trials:
        group = shown[f"trial-{trial.number:04d}"]
        assert group["hparams"] == pytest.approx(trial.params)
        assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert metrics["val_accuracy"] == pytest.approx(trial.user_attrs["history"]["val_accuracy"][-1], rel=1e-6)


NO_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # any import of TensorFlow now fails, as on a JAX or PyTorch install without it
from pathlib import Path
from tuning.space import load_space
from tuning.tracking.tensorboard_writer import TensorBoardTracker

tracker = TensorBoardTracker(Path(sys.argv[1]))
tracker({"event": "study", "space": load_space(sys.argv[2]), "config": None})
tracker({"event": "trial_start", "number": 0, "params": {"learning_rate": 0.001, "dropout": 0.2}})
for epoch in (1, 2):
    tracker({"event": "epoch", "number": 0, "epoch": epoch, "epochs": 2, "logs": {"val_accuracy": 0.25 * epoch}})
tracker({"event": "trial_end", "number": 0, "status": "complete", "value": 0.5, "reason": "", "seconds": 1.0})
tracker.close(None)
"""


def test_tensorboard_files_are_written_without_tensorflow(tiny_space: Callable[[str], Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    from tensorboard.plugins.hparams import metadata

    run = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(tmp_path), str(tiny_space("alexnet"))],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stderr
    acc = _accumulator(tmp_path / "tensorboard" / "trial-0000")
    assert [(e.step, e.value) for e in acc.Scalars("val_accuracy")] == [(1, 0.25), (2, 0.5)]
    start = metadata.parse_session_start_info_plugin_data(
        acc.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
    assert {k: v.number_value for k, v in start.hparams.items()} == pytest.approx({"learning_rate": 0.001,
                                                                                   "dropout": 0.2})


def test_tensorboard_keeps_the_first_repeats_epochs_only(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    from tuning.tracking.tensorboard_writer import TensorBoardTracker

    folder = tmp_path / "rep"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=1, pruner="none", repeats=2)
    tracked = Tracked(lambda e: None, [("tensorboard", TensorBoardTracker(folder))])
    study = _search(tracked, config, space, data, folder)
    tracked.close(None)
    acc = _accumulator(folder / "tensorboard" / "trial-0000")
    first = study.trials[0].user_attrs["history"]["val_accuracy"]
    assert [e.value for e in acc.Scalars("val_accuracy")] == pytest.approx(first, rel=1e-6)
    assert acc.Scalars("objective")[-1].value == pytest.approx(study.trials[0].value, rel=1e-6)  # mean of 2


# ----- MLflow ------------------------------------------------------------------------------------------------
def _runs(uri: str, name: str) -> tuple[Any, list[Any], Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("tuning.role") == "study"]
    assert len(parents) == 1
    return client, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id], parents[0]


@pytest.mark.slow
def test_mlflow_logs_the_study_as_parent_and_trials_as_children(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    from tuning.tracking.mlflow_tracker import MlflowTracker

    folder = tmp_path / "ml"
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    (tmp_path / "store").mkdir()
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=3, pruner="none", sampler="random")
    fake_train.fail = lambda p: len(fake_train.calls) == 2
    tracked = Tracked(lambda e: None, [("mlflow", MlflowTracker(folder, uri=uri))])
    study = _search(tracked, config, space, data, folder)
    tracked.close(None)

    client, children, parent = _runs(uri, config.name)
    assert parent.info.status == "FINISHED" and parent.data.params["engine"] == "optuna"
    assert parent.data.params["searched"] == "learning_rate,dropout"
    assert parent.data.tags["tuning.note"] == "a note from the engine"
    by_trial = {int(r.data.tags["tuning.trial"]): r for r in children}
    assert sorted(by_trial) == [t.number for t in study.trials]
    for trial in study.trials:
        run = by_trial[trial.number]
        assert float(run.data.params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
        assert run.data.params["optimizer"] == "adam"  # the base values the trial trained with
        if trial.state.name == "FAIL":
            assert run.info.status == "FAILED" and run.data.tags["state"] == "failed"
            assert run.data.tags["fail_reason"] == "out of memory: fake"
            continue
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "complete"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx(trial.user_attrs["history"]["val_accuracy"])
        assert run.data.metrics["objective"] == pytest.approx(trial.value)

    # A rerun of the same study continues its parent run with the new trials.
    config.trials = 4
    tracked = Tracked(lambda e: None, [("mlflow", MlflowTracker(folder, uri=uri))])
    _search(tracked, config, space, data, folder)
    tracked.close(None, error="StudyError: something")
    _, children, parent = _runs(uri, config.name)
    assert sorted(int(r.data.tags["tuning.trial"]) for r in children) == [0, 1, 2, 3, 4]  # 3 done + 1 failed + 1
    assert parent.info.status == "FAILED"
    assert parent.data.tags["tuning.error"] == "StudyError: something"


@pytest.mark.slow
def test_two_mlflow_stores_each_get_every_trial(fake_train: Any, tiny_space: Callable[[str], Path],
                                                tmp_path: Path) -> None:
    folder = tmp_path / "two"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=2, pruner="none")
    uris = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    with tracking(lambda e: None, check_tracks([f"mlflow:{u}" for u in uris]), folder) as tracked:
        _search(tracked, config, space, data, folder)
    for uri in uris:
        _, children, parent = _runs(uri, config.name)
        assert len(children) == 2 and parent.info.status == "FINISHED"


# ----- failures ----------------------------------------------------------------------------------------------
class BreaksAfter:
    """A tracker whose backend goes away after ``n`` events (a tracking server that dies mid-study)."""

    def __init__(self, n: int) -> None:
        self.n, self.seen, self.closed = n, 0, False

    def __call__(self, event: Mapping[str, Any]) -> None:
        self.seen += 1
        if self.seen > self.n:
            raise ConnectionError("tracking server went away\nsecond line")

    def close(self, outcome: Any, *, error: str = "") -> None:
        self.closed = True


def test_a_tracker_that_breaks_mid_study_warns_once_and_the_search_goes_on(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    from tuning.tracking.tensorboard_writer import TensorBoardTracker

    folder = tmp_path / "broken"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=3, pruner="none")
    seen: list[Mapping[str, Any]] = []
    broken = BreaksAfter(4)
    tracked = Tracked(seen.append, [("broken", broken), ("tensorboard", TensorBoardTracker(folder))])
    study = _search(tracked, config, space, data, folder)
    tracked.close(None)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    notes = [e["message"] for e in seen if e["event"] == "note" and "tracking stopped" in e["message"]]
    assert notes == ["Warning: broken tracking stopped (ConnectionError: tracking server went away); "
                     "the search goes on without it"]
    assert broken.seen == 5 and not broken.closed  # switched off: no more events, no close
    assert sum(e["event"] == "trial_end" for e in seen) == 3  # the caller still saw every event
    for n in range(3):  # the other tracker kept working
        assert len(_accumulator(folder / "tensorboard" / f"trial-{n:04d}").Scalars("val_accuracy")) == 2


@pytest.mark.slow
def test_an_mlflow_store_that_breaks_mid_study_is_one_warning_and_the_search_finishes(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """The real MLflow tracker on a real SQLite store whose file is overwritten after the first trial."""
    from tuning.tracking.mlflow_tracker import MlflowTracker

    folder = tmp_path / "corrupt"
    db = tmp_path / "mlflow.db"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=3, pruner="none")
    seen: list[Mapping[str, Any]] = []

    def watch(event: Mapping[str, Any]) -> None:
        seen.append(event)
        if event["event"] == "trial_start" and event["number"] == 1:
            with open(db, "r+b") as fh:  # in place: the store's open connections see it too
                fh.write(b"this is no longer a database" * 4096)

    tracked = Tracked(watch, [("mlflow", MlflowTracker(folder, uri=f"sqlite:///{db}"))])
    study = _search(tracked, config, space, data, folder)
    tracked.close(None)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    notes = [e["message"] for e in seen if e["event"] == "note" and "tracking stopped" in e["message"]]
    assert len(notes) == 1 and notes[0].startswith("Warning: mlflow tracking stopped (")
    assert "database" in notes[0]  # the store's own error, not one of the tracker's
    assert sum(e["event"] == "trial_end" for e in seen) == 3


def test_an_unreachable_mlflow_server_is_one_warning_and_the_search_finishes(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path / "offline"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=2, pruner="none")
    seen: list[Mapping[str, Any]] = []
    with tracking(seen.append, check_tracks([f"mlflow:http://127.0.0.1:{port}"]), folder) as tracked:
        study = _search(tracked, config, space, data, folder)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    notes = [e["message"] for e in seen if e["event"] == "note" and "tracking stopped" in e["message"]]
    assert len(notes) == 1 and notes[0].startswith(f"Warning: mlflow http://127.0.0.1:{port} tracking stopped (")
    assert f"127.0.0.1:{port}/api/" in notes[0]  # MLflow's own error, naming the server it could not reach
    assert tracked.failed.keys() == {f"mlflow http://127.0.0.1:{port}"}


def test_an_error_in_the_search_closes_trackers_with_it(tmp_path: Path) -> None:
    broken = BreaksAfter(100)
    errors: list[str] = []

    class Records(BreaksAfter):
        def close(self, outcome: Any, *, error: str = "") -> None:
            errors.append(error)

    with pytest.raises(RuntimeError), tracking(lambda e: None, [], tmp_path) as tracked:
        tracked.live = {"a": Records(100), "b": broken}
        raise RuntimeError("disk full")
    assert errors == ["RuntimeError: disk full"] and broken.closed


# ----- through the CLI and the whole pipeline ----------------------------------------------------------------
def test_search_refuses_an_unknown_tracker_in_one_line_before_writing(tiny_dataset: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from tuning.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["search", "--model", "alexnet", "--data", str(tiny_dataset), "--study", "s",
                                      "--tensorboard", "--track", "wandb:http://x"])
    assert result.exit_code == 1
    assert result.output == "Error: unknown --track 'wandb'; known: mlflow, tensorboard\n"
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_tracked_search_logs_trials_and_the_final_model_report_and_card(
    fake_train: Any, tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """The real pipeline (trials from the fake trainer, a real retrain, report and export): TensorBoard and the
    default MLflow store beside the study folders both receive it, and the parent run holds the artefacts."""
    runs = tmp_path / "runs"
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=2, epochs=1, study="tracked", runs=runs, pruner="none",
                            track=("tensorboard", "mlflow"), trials_per_process=0)
    outcome = run_search(request)
    assert outcome is not None
    client, children, parent = _runs(f"sqlite:///{runs.resolve()}/mlflow.db", "tracked")
    assert len(children) == 2 and parent.info.status == "FINISHED"
    assert parent.data.metrics["test_accuracy"] == pytest.approx(outcome.metrics["accuracy"])
    assert parent.data.metrics["best_value"] == pytest.approx(outcome.best_value)
    low, high = outcome.metrics["accuracy_ci95"]
    assert parent.data.metrics["test_accuracy_ci95_low"] == pytest.approx(low)
    assert parent.data.metrics["test_n"] == outcome.metrics["n"]
    assert parent.data.metrics["retrain_val_accuracy"] == pytest.approx(outcome.metrics["val_accuracy"])
    assert "test_seed" not in parent.data.metrics and "test_val_accuracy" not in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"model", "report", "model_card", "final", "config.toml"} <= artifacts
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "model_card")} == {
        "model_card/model_card.md", "model_card/model_card.json"}
    assert "report/index.html" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert (runs / "mlartifacts").is_dir()
    final = _accumulator(runs / "tracked" / "tensorboard" / "final")
    assert final.Scalars("test_accuracy")[0].value == pytest.approx(outcome.metrics["accuracy"], rel=1e-6)
    assert sorted(p.name for p in (runs / "tracked" / "tensorboard").iterdir() if p.is_dir()) == [
        "final", "trial-0000", "trial-0001"]


@pytest.mark.slow
def test_trials_in_child_processes_reach_the_parents_trackers(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """``--trials-per-process 1`` trains each trial in its own child process; its events are relayed to the
    parent, whose tracker writes every trial's curves (real Keras training, one epoch each)."""
    from tuning.engines.optuna_engine import load_study
    from tuning.study import read_config

    runs = tmp_path / "runs"
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=2, epochs=1, study="children", runs=runs, pruner="none", trials_per_process=1,
                            track=("tensorboard",))
    outcome = run_search(request)
    assert outcome is not None
    study = load_study(read_config(outcome.folder))
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert len(pids) == 2 and os.getpid() not in pids  # two children, neither of them this process
    for trial in study.trials:
        acc = _accumulator(outcome.folder / "tensorboard" / f"trial-{trial.number:04d}")
        assert [e.value for e in acc.Scalars("val_accuracy")] == pytest.approx(
            trial.user_attrs["history"]["val_accuracy"], rel=1e-6)


@pytest.mark.slow
def test_search_cli_prints_one_warning_for_an_unreachable_tracker_and_succeeds(
    fake_train: Any, tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from click.testing import CliRunner

    from tuning.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(cli, [
        "search", "--model", "alexnet", "--data", str(tiny_dataset), "--space", str(tiny_space("alexnet")),
        "--budget", "quick", "--trials", "2", "--epochs", "1", "--study", "cli", "--trials-per-process", "0",
        "--pruner", "none", "--tensorboard", "--track", f"mlflow:http://127.0.0.1:{port}"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning: mlflow")]
    assert len(warnings) == 1 and "tracking stopped" in warnings[0]
    assert "Test accuracy" in result.output
    assert len(list((tmp_path / "runs" / "cli" / "tensorboard").glob("trial-*"))) == 2
