"""The main job end to end on tiny real data: search, retrain, test, report, export, predict, resume."""

from __future__ import annotations

import csv
import json
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.pipeline import SearchOutcome, SearchRequest, run_search

#: Every test here trains tiny real models end to end (make test; left out of make test-fast).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[SearchOutcome, SearchRequest]:
    root = tmp_path_factory.mktemp("study")
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=2, study="tiny", runs=root / "runs", seed=1)
    events: list[dict] = []
    return run_search(request, on_event=events.append), request


def test_two_trial_search_writes_every_result(finished: tuple[SearchOutcome, SearchRequest]) -> None:
    outcome, _ = finished
    folder = outcome.folder
    assert outcome.counts.get("complete", 0) + outcome.counts.get("pruned", 0) == 2
    config = tomllib.loads((folder / "config.toml").read_text())
    assert config["seed"] == 1 and config["model"] == "alexnet" and config["versions"]["keras"]
    assert config["space"]["search"]["params"] == ["learning_rate", "dropout"]
    for n in (0, 1):
        history = json.loads((folder / "trials" / str(n) / "history.json").read_text())
        assert len(history["history"]["val_accuracy"]) >= 1
    metrics = json.loads((folder / "final" / "metrics.json").read_text())
    assert metrics["n"] == sum(sum(row) for row in metrics["confusion_matrix"]) > 0
    assert 0.0 <= metrics["accuracy_ci95"][0] <= metrics["accuracy"] <= metrics["accuracy_ci95"][1] <= 1.0
    page = (folder / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # curves of the best trial and final model, confusion
    for figure in ("best_trial_curves.png", "final_curves.png", "confusion.png"):
        assert (folder / "report" / figure).stat().st_size > 1000
    card = json.loads((folder / "export" / "model_card.json").read_text())
    assert card["classes"] == ["Action", "Anime", "Romance"]


def test_exported_model_predicts_like_the_in_memory_model(finished: tuple[SearchOutcome, SearchRequest]) -> None:
    """predictions.csv was written by the model in memory; the exported file must give the same numbers."""
    from tuning.data.images import load_rgb
    from tuning.export import load_model

    outcome, request = finished
    with open(outcome.folder / "final" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:8]
    model = load_model(outcome.model)
    images = np.stack([load_rgb(Path(request.data) / r["file"], 32) for r in rows])
    probs = np.asarray(model.predict(images, verbose=0))
    expected = np.array([[float(r[f"p_{c}"]) for c in ("Action", "Anime", "Romance")] for r in rows])
    assert np.abs(probs - expected).max() < 1e-5
    # No random layer ships: a bare call (which Keras runs in training mode) answers like predict.
    def layers(m: object) -> list:
        return [x for layer in getattr(m, "layers", []) for x in (layer, *layers(layer))]

    assert "ResizeRGB" in {type(layer).__name__ for layer in layers(model)}  # nested layers are walked
    assert not [layer.name for layer in layers(model) if type(layer).__name__.startswith("Random")]
    assert np.abs(np.asarray(model(images)) - probs).max() < 1e-5


def test_predict_cli_reads_a_folder_and_reports_unreadable_files(
    finished: tuple[SearchOutcome, SearchRequest], tmp_path: Path
) -> None:
    outcome, request = finished
    images = tmp_path / "imgs"
    images.mkdir()
    for path in sorted((Path(request.data) / "raw" / "Anime").iterdir())[:3]:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "broken.png").write_text("not a png")
    result = CliRunner().invoke(cli, ["predict", str(outcome.model), str(images), "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 4
    assert [r for r in rows if "error" in r][0]["file"].endswith("broken.png")
    good = [r for r in rows if "top" in r]
    assert all(len(r["top"]) == 2 and r["top"][0]["probability"] >= r["top"][1]["probability"] for r in good)


def test_rerunning_resumes_and_more_trials_add_only_the_difference(
    finished: tuple[SearchOutcome, SearchRequest],
) -> None:
    _, request = finished
    again = run_search(request, on_event=lambda e: None)
    assert sum(again.counts.values()) == 2  # nothing repeated
    request.trials = 3
    more = run_search(request, on_event=lambda e: None)
    assert more.counts.get("complete", 0) + more.counts.get("pruned", 0) == 3
    request.trials = 2


def test_resuming_with_other_settings_is_refused(finished: tuple[SearchOutcome, SearchRequest]) -> None:
    from dataclasses import replace

    from tuning.errors import StudyError

    _, request = finished
    with pytest.raises(StudyError, match="another epochs"):
        run_search(replace(request, epochs=5), on_event=lambda e: None)


def test_mixed_bfloat16_trains_but_ships_and_tests_a_float32_model(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """--precision mixed_bfloat16 speeds training up; the model tested and exported computes in float32, and
    the exported file fed the raw test files still answers as the test did."""
    import keras

    from tuning.data.images import load_raw_rgb
    from tuning.errors import StudyError, UnknownNameError
    from tuning.export import load_model
    from tuning.predict import load_predictor

    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=1, epochs=1, study="bf16", runs=tmp_path / "runs", seed=3,
                            precision="mixed_bfloat16")
    try:
        outcome = run_search(request, on_event=lambda e: None)
    finally:
        keras.config.set_dtype_policy("float32")  # the search set it for this process
    assert outcome.config.precision == "mixed_bfloat16"
    trial = json.loads((outcome.folder / "trials" / "0" / "history.json").read_text())
    assert trial["precision"] == "mixed_bfloat16"  # the trial trained under it (clear_session used to reset it)
    assert tomllib.loads((outcome.folder / "config.toml").read_text())["runtime"]["precision"] == "mixed_bfloat16"
    policies = {layer.dtype_policy.name for layer in load_model(outcome.folder / "final" / "model.keras").layers}
    assert policies == {"float32"}
    with open(outcome.folder / "final" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    probs = load_predictor(outcome.model).run([load_raw_rgb(tiny_dataset / r["file"]) for r in rows])
    tested = np.array([[float(r[f"p_{c}"]) for c in ("Action", "Anime", "Romance")] for r in rows])
    assert np.abs(probs - tested).max() < 1e-4
    with pytest.raises(StudyError, match="another precision"):
        run_search(SearchRequest(**{**request.__dict__, "precision": "float32"}), on_event=lambda e: None)
    try:  # the default, auto, resumes a study with the precision it was started with, whatever the machine
        again = run_search(SearchRequest(**{**request.__dict__, "precision": "auto"}), on_event=lambda e: None)
    finally:
        keras.config.set_dtype_policy("float32")
    assert again.config.precision == "mixed_bfloat16"
    with pytest.raises(UnknownNameError, match="float32, mixed_bfloat16, mixed_float16"):
        run_search(SearchRequest(**{**request.__dict__, "precision": "bf16"}), on_event=lambda e: None)
