"""Keras Tuner's own multi-machine mode: a chief and two workers on 127.0.0.1, real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tuning.engines.optuna_engine import load_study
from tuning.study import read_config

#: Every test here trains tiny real models end to end (make test; left out of make test-fast).
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_finish_and_the_chief_reports(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "ktdist"
    command = [sys.executable, "-m", "tuning", "search", "--model", "alexnet", "--data", str(tiny_dataset),
               "--space", str(tiny_space("alexnet")), "--budget", "quick", "--engine", "kerastuner",
               "--sampler", "random", "--trials", "3", "--epochs", "2", "--study", str(folder)]
    port = str(_free_port())
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port}
    chief = subprocess.Popen(command, env={**env, "KERASTUNER_TUNER_ID": "chief"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen(command, env={**env, "KERASTUNER_TUNER_ID": f"tuner{i}"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outputs = [w.communicate(timeout=480) for w in workers]
        chief_out, chief_err = chief.communicate(timeout=480)
    finally:
        for process in (chief, *workers):
            process.kill()
    for (out, err), worker in zip(outputs, workers):
        assert worker.returncode == 0, err[-2000:]
        assert "Keras Tuner worker finished its trials" in out
    assert chief.returncode == 0, chief_err[-2000:]
    assert "Test accuracy" in chief_out
    trials = load_study(read_config(folder)).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert len({t.user_attrs["kerastuner_trial_id"] for t in trials}) == 3
    assert (folder / "report" / "index.html").exists()
