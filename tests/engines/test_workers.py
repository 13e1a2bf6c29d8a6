"""Several workers on one study, and a worker killed mid-trial: real processes, a real journal storage."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tuning.pipeline import SearchRequest, run_search
from tuning.study import read_config

#: Every test here trains tiny real models end to end (make test; left out of make test-fast).
pytestmark = pytest.mark.slow


def _study(folder: Path) -> Any:
    from tuning.engines.optuna_engine import load_study

    return load_study(read_config(folder))


def test_two_local_workers_finish_exactly_n_trials(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=4, epochs=2, study=str(tmp_path / "two"), pruner="none", workers=2)
    outcome = run_search(request, on_event=lambda e: None)
    trials = _study(outcome.folder).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"]["pid"] for t in finished}) == 2  # both processes trained
    assert not [t for t in trials if t.state.name == "RUNNING"]


def test_workers_on_a_machine_with_several_gpus_each_get_their_own(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--workers 2`` where two GPUs are visible: each worker process sees one (CUDA_VISIBLE_DEVICES), all on
    one study; the parent's own setting is left as it was. (On this CPU the indices name no device: the
    assignment is what is tested, and the trials still train.)"""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=4, epochs=1, study=str(tmp_path / "gpus"), pruner="none", workers=2)
    outcome = run_search(request, on_event=lambda e: None)
    finished = [t for t in _study(outcome.folder).get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    seen = {t.user_attrs["worker"]["pid"]: t.user_attrs["worker"]["gpus"] for t in finished}
    assert sorted(seen.values()) == ["3", "5"]  # two processes, one GPU each
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_a_worker_killed_mid_trial_is_failed_and_rerun_on_restart(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "killed"
    command = [sys.executable, "-m", "tuning", "search", "--model", "alexnet", "--data", str(tiny_dataset),
               "--space", str(tiny_space("alexnet")), "--budget", "quick", "--trials", "3", "--epochs", "3",
               "--study", str(folder), "--pruner", "none"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = folder / "optuna.journal"
    deadline = time.monotonic() + 120
    running = []
    while not running and time.monotonic() < deadline:  # poll the storage until a trial is training
        if journal.exists() and first.poll() is None:
            study = _study(folder)
            running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        time.sleep(0.2)
    assert running, "no trial started within two minutes"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed = running[0]
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    trials = _study(folder).get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state.name == "FAIL"
    assert re.fullmatch(r"worker \d+ died mid-trial", by_number[killed.number].user_attrs["fail_reason"])
    assert by_number[killed.number].user_attrs["worker"]["pid"] != first.pid  # a child trained it, and died too
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3
    assert any(t.params == killed.params and t.number > killed.number for t in complete)  # re-run
    assert "Test accuracy" in rerun.stdout



def test_recycled_child_processes_share_one_study(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """--trials-per-process 1: each trial in a fresh process; the study and its report come out whole."""
    events: list[dict] = []
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=3, epochs=1, study=str(tmp_path / "recycled"), pruner="none",
                            trials_per_process=1)
    outcome = run_search(request, on_event=events.append)
    ends = [e for e in events if e["event"] == "trial_end"]
    assert len(ends) == 3 and len({e["pid"] for e in ends}) == 3
    assert os.getpid() not in {e["pid"] for e in ends}
    assert outcome.counts == {"complete": 3, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    assert (outcome.folder / "report" / "index.html").exists()


def test_recycled_child_processes_add_up_their_failures_for_max_failures(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """--trials-per-process 1 and every trial failing: the second child's failure is the command's second,
    so --max-failures 2 stops the study there instead of each new child counting from zero (for ever)."""
    from tuning.errors import StudyError

    text = tiny_space("alexnet").read_text().replace("low = 1e-4\nhigh = 1e-2", "low = 1e34\nhigh = 1e35")
    text = text.replace("learning_rate = 1e-3", "learning_rate = 1e34").replace("grid = [1e-2, 1e-3]", "grid = [1e34]")
    path = tmp_path / "bad.toml"
    path.write_text(text.replace('optimizer = "adam"', 'optimizer = "sgd"'))  # every trial's loss turns NaN
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(path), budget="quick", trials=3, epochs=1,
                            study=str(tmp_path / "failing"), pruner="none", trials_per_process=1, max_failures=2)
    with pytest.raises(StudyError, match=r"^2 trials failed \(limit --max-failures 2\)"):
        run_search(request, on_event=lambda e: None)
    assert [t.state.name for t in _study(tmp_path / "failing").get_trials(deepcopy=False)] == ["FAIL", "FAIL"]
