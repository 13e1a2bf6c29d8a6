"""Shared fixtures: seeded randomness everywhere, and small real datasets made on disk per session."""

from __future__ import annotations

import math
import os
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from tuning.train import TrialResult

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TINY_SPACE = """
model = "{model}"

[base]
optimizer = "adam"
learning_rate = 1e-3
momentum = 0.9
dropout = 0.0
augmentation = "small"
split = "70/15/15"
epochs = 2
batch_size = 16
image_size = 32
width = 0.125
dense_units = 16

[params.learning_rate]
type = "float"
low = 1e-4
high = 1e-2
log = true
grid = [1e-2, 1e-3]

[params.dropout]
type = "float"
low = 0.0
high = 0.5
step = 0.1

[params.augmentation]
type = "choice"
values = ["none", "small"]

[params.split]
type = "choice"
values = ["70/15/15"]

[params.image_size]
type = "choice"
values = [32]

[params.width]
type = "choice"
values = [0.125]

[params.dense_units]
type = "choice"
values = [16]

[params.batch_size]
type = "choice"
values = [16]

[params.optimizer]
type = "choice"
values = ["adam", "sgd"]

[params.momentum]
type = "float"
low = 0.0
high = 0.99
when = {{ optimizer = ["sgd"] }}

[augmentation.none]

[augmentation.small]
shift = 0.05
rotation = 10.0

[search]
params = ["learning_rate", "dropout"]

[budgets.quick]
trials = 2
epochs = 2
fixed = {{}}
"""


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Tests that draw random numbers draw the same ones on every run."""
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-class demo set of 24 images per class at 32-40 px, with raw/<class>/ folders."""
    from tuning.data.demo import make_demo

    root = tmp_path_factory.mktemp("tiny") / "tiny"
    make_demo(root / "raw", per_class=24, size=32, seed=0)
    return root


@pytest.fixture(scope="session")
def finished_study(tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
                   ) -> Path:
    """One finished tiny search (alexnet, 3 trials, no pruning), made once per session; copy before changing."""
    from tuning.pipeline import SearchRequest, run_search

    root = tmp_path_factory.mktemp("finished")
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=3, study="tiny", runs=root / "runs", seed=1, pruner="none")
    return run_search(request, on_event=lambda e: None).folder


@pytest.fixture(scope="module")
def study_copy(finished_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's own copy of the finished study (its storage is still the original's, read only)."""
    folder = tmp_path_factory.mktemp("copy") / finished_study.name
    shutil.copytree(finished_study, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_space(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Write a tiny search-space TOML for a model (32 px, width 0.125) and return its path."""
    folder = tmp_path_factory.mktemp("spaces")

    def write(model: str) -> Path:
        path = folder / f"tiny-{model}.toml"
        path.write_text(TINY_SPACE.format(model=model), encoding="utf-8")
        return path

    return write


class FakeTrain:
    """Stands in for ``train_trial`` where the engines call it: no Keras, a result computed from the params.

    ``score(params)`` is the final validation accuracy (highest near learning_rate 1e-3 and dropout 0.1, lower
    with each repeat's seed), reached linearly over the epochs; ``fail`` and ``nan`` choose params that end
    as a failed trial (with ``reason``) or with a NaN loss at epoch 1, as ``train_trial`` reports them.
    Every call is kept in ``calls`` as (params, epochs, seed).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], int, int]] = []
        self.fail: Callable[[Mapping[str, Any]], bool] = lambda params: False
        self.reason = "out of memory: fake"
        self.nan: Callable[[Mapping[str, Any]], bool] = lambda params: False

    @staticmethod
    def score(params: Mapping[str, Any], seed: int = 0) -> float:
        lr_term = abs(math.log10(float(params["learning_rate"])) + 3.0) / 4.0
        dropout_term = abs(float(params.get("dropout", 0.0)) - 0.1)
        return round(0.9 - lr_term - dropout_term - 0.01 * (seed % 7), 6)

    def __call__(self, model_name: str, params: Mapping[str, Any], data: Any, space: Any, *, epochs: int, seed: int,
                 hooks: Sequence[Callable[[int, Mapping[str, float]], bool]] = (), keep_model: bool = False,
                 objective: str = "val_accuracy"
                 ) -> TrialResult:
        from tuning.train import TrialResult

        params = dict(params)
        self.calls.append((params, epochs, seed))
        if self.fail(params):
            return TrialResult(params, "failed", reason=self.reason, seconds=0.01)
        history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
        final = self.score(params, seed)
        for epoch in range(epochs):
            if self.nan(params):
                return TrialResult(params, "failed", history, 0.01, "loss became nan at epoch 1")
            acc = final * (epoch + 1) / epochs
            logs = {"loss": 2.0 - acc, "accuracy": acc, "val_loss": 2.0 - acc, "val_accuracy": acc}
            for key, value in logs.items():
                history[key].append(value)
            if any(hook(epoch, logs) for hook in hooks):
                return TrialResult(params, "pruned", history, 0.01 * (epoch + 1))
        return TrialResult(params, "complete", history, 0.01 * epochs)


@pytest.fixture
def fake_train(monkeypatch: pytest.MonkeyPatch) -> FakeTrain:
    """Engines train with :class:`FakeTrain` instead of Keras (engine logic only: order, resume, failures)."""
    fake = FakeTrain()
    monkeypatch.setattr("tuning.engines._common.train_trial", fake)
    # No images behind a fake trainer, so nothing for the pre-trial split check to look at.
    monkeypatch.setattr("tuning.train.check_trainable", lambda data, space, folds=1: None)
    return fake


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the trained ``finished_study`` (directly or through ``study_copy``) is slow by
    construction: ``make test-fast`` (``-m "not slow"``) leaves it out without a marker on each one."""
    for item in items:
        if "finished_study" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ensemble_study(finished_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the finished study after ``tuning retrain --ensemble 2`` (made once; copy before changing).
    The command's output is beside it, in ``retrain.txt``; ``before/`` holds the copy's single-model files as
    they were before the ensemble run."""
    from click.testing import CliRunner

    from tuning.cli import cli

    root = tmp_path_factory.mktemp("ensemble")
    folder = root / finished_study.name
    shutil.copytree(finished_study, folder)
    shutil.copytree(folder / "final", root / "before")
    result = CliRunner().invoke(cli, ["retrain", "--study", str(folder), "--ensemble", "2"])
    assert result.exit_code == 0, result.output
    (root / "retrain.txt").write_text(result.output, encoding="utf-8")
    return folder
