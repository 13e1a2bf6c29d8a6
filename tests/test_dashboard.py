"""``tuning dashboard`` as a user runs it: the real optuna-dashboard server on 127.0.0.1, started on a finished
study's journal file and on SQLite, read through its HTTP API; and the one-line errors around it.

The studies are real Optuna storages written by the optuna engine with ``fake_train`` (no Keras)."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.engines import run_engine
from tuning.pipeline import SearchRequest, resolve_space
from tuning.study import StudyConfig, default_storage, write_config
from tuning.train import TrialData

pytest.importorskip("optuna_dashboard", reason="tuning dashboard needs the dashboard extra")
REPO = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 60.0


def _finished_study(space_path: Path, folder: Path, *, storage: str | None = None) -> Any:
    """A study folder with config.toml and 3 finished trials in its storage, as a search leaves it."""
    req = SearchRequest(model="alexnet", data=folder / "no-data", space=str(space_path), budget="quick")
    space, _, epochs = resolve_space(req, "quick")
    config = StudyConfig(
        name=folder.name, model="alexnet", dataset=str(req.data), engine="optuna", sampler="random", pruner="none",
        budget="quick", trials=3, epochs=epochs, seed=0, storage=storage or default_storage(folder),
        space=space.to_dict(),
    )
    write_config(folder, config)
    data = TrialData(req.data, seed=0, test_fraction=space.test_fraction())
    return run_engine(config, space, data, folder, on_event=lambda e: None)


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """Start ``tuning dashboard --study DIR --port 0`` in its own process; returns the URL it prints."""
    processes: list[subprocess.Popen[str]] = []

    def start(folder: Path) -> str:
        process = subprocess.Popen([sys.executable, "-m", "tuning", "dashboard", "--study", str(folder), "--port", "0"],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True).start()
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                assert process.poll() is None, "tuning dashboard exited before printing its address"
                continue
            if " at http://" in line:
                return line.rsplit(" at ", 1)[1].strip()
        raise AssertionError(f"tuning dashboard printed no address within {WAIT_SECONDS:.0f}s")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _studies(base: str) -> list[dict[str, Any]]:
    """The study list, polled until the server answers (it binds before it serves)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            return list(_get(f"{base}/api/studies")["study_summaries"])
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_dashboard_shows_the_study_its_trials_params_intermediate_values_and_attrs(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path, serve: Callable[[Path], str], kind: str
) -> None:
    folder = tmp_path / f"study-{kind}"
    storage = f"sqlite:///{folder}/optuna.db" if kind == "sqlite" else None
    study = _finished_study(tiny_space("alexnet"), folder, storage=storage)
    assert (folder / ("optuna.db" if kind == "sqlite" else "optuna.journal")).is_file()

    url = serve(folder)
    assert url.startswith("http://127.0.0.1:")
    base, _, page = url.partition("/dashboard")
    [summary] = _studies(base)
    assert summary["study_name"] == folder.name
    assert page == f"/studies/{summary['study_id']}"  # the command points at the study's own page
    with urllib.request.urlopen(url, timeout=10) as response:  # the page itself (the app that reads the API)
        assert response.status == 200 and b"<html" in response.read().lower()
    detail = _get(f"{base}/api/studies/{summary['study_id']}?after=0")
    trials = {t["number"]: t for t in detail["trials"]}
    assert sorted(trials) == [0, 1, 2]
    for trial in study.get_trials(deepcopy=False):
        shown = trials[trial.number]
        assert shown["state"] == "Complete"
        params = {p["name"]: float(p["param_external_value"]) for p in shown["params"]}
        assert params == pytest.approx(trial.params)
        steps = {v["step"]: v["value"] for v in shown["intermediate_values"]}
        assert steps == pytest.approx(trial.intermediate_values)  # one per epoch, as the pruner saw them
        assert len(steps) == 2
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert {"seconds", "epochs", "history", "worker"} <= attrs.keys()
        assert str(trial.user_attrs["epochs"]) == attrs["epochs"]


def test_dashboard_errors_are_one_line(fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["dashboard", "--study", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1

    folder = tmp_path / "busy"
    _finished_study(tiny_space("alexnet"), folder)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(cli, ["dashboard", "--study", str(folder), "--port", str(port)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot listen on 127.0.0.1:{port} (")
    assert result.output.endswith("pass another --port (0 picks a free one)\n")

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna_dashboard" else
                        real(name, *a))
    result = runner.invoke(cli, ["dashboard", "--study", str(folder)])
    assert result.exit_code == 1
    assert result.output == ("Error: tuning dashboard needs the optuna-dashboard package: "
                             "pip install 'tuning[dashboard]'\n")
