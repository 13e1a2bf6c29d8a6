"""Workers sharing a study through a real PostgreSQL server, as several machines would.

`.ci/run` starts a private server on 127.0.0.1 and sets TUNING_TEST_POSTGRES; elsewhere these tests are
skipped with that reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tuning.pipeline import SearchRequest, run_search

URL = os.environ.get("TUNING_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(not URL, reason="TUNING_TEST_POSTGRES is not set (.ci/run starts a server)")


@pytest.mark.slow
def test_two_workers_on_postgresql_finish_exactly_n_trials(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    import optuna

    name = f"pg-{uuid.uuid4().hex[:8]}"
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=4, epochs=2, study=str(tmp_path / name), storage=URL, pruner="none", workers=2)
    outcome = run_search(request, on_event=lambda e: None)
    assert outcome.config.storage == URL
    study = optuna.load_study(study_name=name, storage=URL)
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 4
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert len({t.user_attrs["worker"]["pid"] for t in trials if t.state.name == "COMPLETE"}) == 2
