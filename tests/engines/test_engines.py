"""The engines on tiny real data with a real Optuna journal storage: staged order and resume, failures,
seeded reproducibility, Keras Tuner trials recorded in the same storage."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tuning.engines import run_engine
from tuning.errors import DataError, StudyError
from tuning.pipeline import SearchRequest, resolve_config
from tuning.space import SearchSpace
from tuning.study import StudyConfig
from tuning.train import TrialData, check_trainable

#: Every test here trains tiny real models end to end (make test; left out of make test-fast).
pytestmark = pytest.mark.slow

STAGED_EXTRA = """
[staged]
order = ["learning_rate", "dropout"]
"""


def _setup(tiny_dataset: Path, space_path: Path, folder: Path, **request: object) -> tuple[StudyConfig, SearchSpace,
                                                                                           TrialData]:
    req = SearchRequest(model="alexnet", data=tiny_dataset, space=str(space_path), budget="quick", study=str(folder),
                        **{"pruner": "none", **request})
    config = resolve_config(req, settings={"device": "cpu", "inter_op_threads": 1, "precision": "float32"})
    space = SearchSpace.from_dict(config.space)
    return config, space, TrialData.for_space(tiny_dataset, space, seed=req.seed)


def _staged_space(tiny_space: Callable[[str], Path], tmp_path: Path) -> Path:
    text = tiny_space("alexnet").read_text().replace('step = 0.1', 'step = 0.1\ngrid = [0.1, 0.3]') + STAGED_EXTRA
    path = tmp_path / "staged.toml"
    path.write_text(text)
    return path


def test_staged_visits_the_grid_in_declared_order_and_resumes_mid_stage(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "staged"
    config, space, data = _setup(tiny_dataset, _staged_space(tiny_space, tmp_path), folder, engine="staged")
    assert config.trials == 4  # base + 1 new learning rate + 2 dropouts (the base's own value is not retried)
    started: list[dict] = []

    def stop_at_third(event: dict) -> None:
        if event["event"] == "trial_start":
            started.append(event["params"])
            if len(started) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_engine(config, space, data, folder, on_event=stop_at_third)
    study = run_engine(config, space, data, folder, on_event=lambda e: None)
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1
    interrupted = [t for t in trials if t.state.name == "FAIL"][0]
    assert interrupted.user_attrs["fail_reason"] == "interrupted (Ctrl-C)"
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    assert [t.user_attrs["stage"] for t in completed] == ["base", "learning_rate", "dropout", "dropout"]
    assert completed[0].params == {"learning_rate": 1e-3, "dropout": 0.0}
    assert completed[1].params["learning_rate"] == 1e-2 and completed[1].params["dropout"] == 0.0
    best_lr = max(completed[:2], key=lambda t: t.value).params["learning_rate"]
    assert [t.params for t in completed[2:]] == [{"learning_rate": best_lr, "dropout": d} for d in (0.1, 0.3)]
    assert interrupted.params == completed[2].params  # the interrupted configuration was run again


def test_nan_loss_fails_its_trial_with_the_reason_and_the_study_goes_on(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    text = tiny_space("alexnet").read_text().replace("high = 1e-2\nlog = true", "high = 1e35\nlog = true")
    text = text.replace('optimizer = "adam"', 'optimizer = "sgd"')  # plain SGD diverges at once; Adam would not
    path = tmp_path / "wild.toml"
    path.write_text(text)
    folder = tmp_path / "nan"
    config, space, data = _setup(tiny_dataset, path, folder, engine="optuna", trials=1)
    from tuning.engines.optuna_engine import load_study

    study = load_study(config, space)
    study.enqueue_trial({"learning_rate": 1e35, "dropout": 0.0})  # weights overflow: the loss turns NaN
    study.enqueue_trial({"learning_rate": 1e-3, "dropout": 0.0})
    study = run_engine(config, space, data, folder, on_event=lambda e: None)
    first, *rest = study.get_trials(deepcopy=False)
    assert first.state.name == "FAIL"
    assert first.user_attrs["fail_reason"] == "loss became nan at epoch 1"
    history = json.loads((folder / "trials" / "0" / "history.json").read_text())
    assert history["status"] == "failed" and history["reason"] == first.user_attrs["fail_reason"]
    assert [t.state.name for t in rest] == ["COMPLETE"]


def test_a_study_that_keeps_failing_stops_with_a_clear_message(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    text = tiny_space("alexnet").read_text().replace("low = 1e-4\nhigh = 1e-2", "low = 1e34\nhigh = 1e35")
    text = text.replace("learning_rate = 1e-3", "learning_rate = 1e34").replace("grid = [1e-2, 1e-3]", "grid = [1e34]")
    text = text.replace('optimizer = "adam"', 'optimizer = "sgd"')  # every trial's loss turns NaN
    path = tmp_path / "bad.toml"
    path.write_text(text)
    folder = tmp_path / "failing"
    config, space, data = _setup(tiny_dataset, path, folder, engine="optuna", trials=3)
    config = replace(config, max_failures=2)
    with pytest.raises(StudyError, match=r"2 trials failed \(limit --max-failures 2\)"):
        run_engine(config, space, data, folder, on_event=lambda e: None)


def test_same_seed_gives_the_same_parameter_sequence(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    sequences = []
    for run in ("a", "b"):
        folder = tmp_path / run
        config, space, data = _setup(tiny_dataset, tiny_space("alexnet"), folder, engine="optuna", trials=3,
                                     seed=7)
        config = replace(config, epochs=1)
        study = run_engine(config, space, data, folder, on_event=lambda e: None)
        sequences.append([(t.params, t.value) for t in study.get_trials(deepcopy=False)])
    assert sequences[0] == sequences[1]


def test_repeats_average_seeds_and_record_the_spread(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "repeats"
    config, space, data = _setup(tiny_dataset, tiny_space("alexnet"), folder, engine="optuna", trials=1, repeats=2)
    study = run_engine(config, space, data, folder, on_event=lambda e: None)
    trial = study.trials[0]
    history = json.loads((folder / "trials" / "0" / "history.json").read_text())
    runs = [history["history"], *history["repeats"]]
    assert len(runs) == 2
    assert trial.value == pytest.approx(sum(max(r["val_accuracy"]) for r in runs) / 2)
    assert math.isfinite(history["spread"])


def test_kerastuner_trials_land_in_the_optuna_storage(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "kt"
    config, space, data = _setup(tiny_dataset, tiny_space("alexnet"), folder, engine="kerastuner", trials=2,
                                 sampler="random")
    study = run_engine(config, space, data, folder, on_event=lambda e: None)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        assert set(t.params) == {"learning_rate", "dropout"}
        assert space.params["learning_rate"].contains(t.params["learning_rate"])
        assert t.user_attrs["history"]["val_accuracy"]
        assert (folder / "trials" / f"kt-{t.user_attrs['kerastuner_trial_id']}" / "history.json").exists()
    assert (folder / "kerastuner" / folder.name).is_dir()


def test_a_dataset_prepared_with_class_weights_is_searched_as_prepared(
    tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """`tuning data prepare --balance weights --seed 5` is the user's choice: the search keeps every image
    (no undersampling rebuild) and trains with the stored class weights."""
    from tuning.data.demo import make_demo
    from tuning.data.prepare import prepare

    root = tmp_path / "imbalanced"
    make_demo(root / "raw", per_class=12, size=32, seed=3)
    for extra in sorted((root / "raw" / "Romance").iterdir())[:6]:
        extra.unlink()
    prepare(root, size=32, seed=5, balance="weights")
    cache = root / "cache" / "32px.npz"
    made = cache.stat().st_mtime_ns
    folder = tmp_path / "study"
    config, space, data = _setup(root, tiny_space("alexnet"), folder, engine="optuna", trials=1)
    assert data.class_weight(32) == pytest.approx({0: 30 / 36, 1: 30 / 36, 2: 30 / 18})
    study = run_engine(replace(config, epochs=1), space, data, folder, on_event=lambda e: None)
    assert [t.state.name for t in study.get_trials(deepcopy=False)] == ["COMPLETE"]
    assert len(data.arrays(32).y) == 30 and cache.stat().st_mtime_ns == made


# ----- datasets too small for the splits ------------------------------------------------------------------
def _lopsided(tmp_path: Path, *, balance: str) -> Path:
    """15 Action, 15 Anime, 1 Romance image, prepared with ``balance``."""
    from tuning.data.demo import make_demo
    from tuning.data.prepare import prepare

    root = tmp_path / f"lopsided-{balance}"
    make_demo(root / "raw", per_class=15, size=32, seed=3)
    for extra in sorted((root / "raw" / "Romance").iterdir())[1:]:
        extra.unlink()
    prepare(root, size=32, seed=0, balance=balance)
    return root


@pytest.mark.parametrize("balance, message", [
    # undersampling cuts every class to the one Romance image: one image cannot be in train, val and test
    ("undersample", "class 'Action' has 1 image group(s) (an image with its near-duplicates, or a --group-by "
                    "group), fewer than the 3 splits (train, val, test) need"),
    # weights keep all 31 images, but Romance's one image could only ever be on one side
    ("weights", "class 'Romance' has 1 image group(s) (an image with its near-duplicates, or a --group-by "
                "group), fewer than the 3 splits (train, val, test) need"),
])
def test_a_class_missing_from_a_split_stops_the_study_before_any_trial(
    tiny_space: Callable[[str], Path], tmp_path: Path, balance: str, message: str
) -> None:
    root = _lopsided(tmp_path, balance=balance)
    folder = tmp_path / "study"
    config, space, data = _setup(root, tiny_space("alexnet"), folder, engine="optuna", trials=1)
    with pytest.raises(DataError) as info:
        run_engine(config, space, data, folder, on_event=lambda e: pytest.fail(f"a trial event: {e}"))
    assert str(info.value).startswith(f"{root}: {message}, since a group stays on one side; add images to raw/")
    assert not (folder / "trials").exists() and not (folder / "optuna.journal").exists()


def test_every_searched_split_validates_every_class(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """98/1/1 (a value of the staged split stage) asks for 0.24 validation images a class out of 24: the
    placement still gives every class at least one validation image in every scheme, so no trial records a NaN
    objective, and every scheme is scored on the same images."""
    text = tiny_space("alexnet").read_text().replace('values = ["70/15/15"]', 'values = ["70/15/15", "98/1/1"]')
    path = tmp_path / "splits.toml"
    path.write_text(text.replace('params = ["learning_rate", "dropout"]', 'params = ["learning_rate", "split"]'))
    config, space, data = _setup(tiny_dataset, path, tmp_path / "staged", engine="staged", trials=1)
    assert "split" in space.search
    check_trainable(data, space)
    views = {scheme: data.split(32, scheme) for scheme in space.schemes()}
    for view in views.values():
        assert set(view["val"][1].tolist()) == {0, 1, 2} and set(view["train"][1].tolist()) == {0, 1, 2}
    assert len({tuple(sorted(v["val"][2])) for v in views.values()}) == 1


def test_the_cli_shows_a_too_small_split_as_one_line(tiny_space: Callable[[str], Path], tmp_path: Path) -> None:
    """Through the default path (trials in child processes) the user gets one ``Error:`` line, exit 1."""
    from click.testing import CliRunner

    from tuning.cli import cli

    root = _lopsided(tmp_path, balance="weights")
    result = CliRunner().invoke(cli, ["search", "--model", "alexnet", "--data", str(root), "--space",
                                      str(tiny_space("alexnet")), "--budget", "quick", "--trials", "1",
                                      "--study", str(tmp_path / "runs" / "small")])
    assert result.exit_code == 1, result.output
    last = result.output.splitlines()[-1]
    assert last.startswith(f"Error: {root}: class 'Romance' has 1 image group(s)")
    assert "Traceback" not in result.output and result.output.count("Error") == 1
    assert not (tmp_path / "runs" / "small" / "trials").exists()


def test_a_too_small_split_leaves_no_study_folder(tiny_space: Callable[[str], Path], tmp_path: Path) -> None:
    """The split check runs before the study folder is written: the user's next try with more images starts
    clean instead of meeting a half-made study."""
    from tuning.pipeline import run_search

    root = _lopsided(tmp_path, balance="weights")
    folder = tmp_path / "runs" / "small"
    with pytest.raises(DataError, match="class 'Romance' has 1 image group"):
        run_search(SearchRequest(model="alexnet", data=root, space=str(tiny_space("alexnet")), budget="quick",
                                 trials=1, study=str(folder)))
    assert not folder.exists()


def test_the_cv_objective_is_the_mean_of_independently_trained_folds(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """`--cv 2`: the trial's value is the mean of two trainings, each validating on its own half of train+val;
    trained again by hand, fold by fold, the same folds give the same values."""
    from tuning.engines._common import TrialRunner
    from tuning.train import train_trial

    folder = tmp_path / "cv"
    config, space, data = _setup(tiny_dataset, tiny_space("alexnet"), folder, engine="optuna", trials=1, cv=2,
                                 epochs=1)
    assert config.cv == 2
    params = space.resolve({})
    outcome = TrialRunner(config, space, data, folder, on_event=lambda e: None).run(0, params)
    by_hand = [train_trial(config.model, params, data.with_fold(k, 2), space, epochs=1, seed=config.seed)
               .objective(config.objective) for k in range(2)]
    assert outcome.status == "complete"
    assert outcome.value == pytest.approx(sum(by_hand) / 2, abs=1e-6)
    assert outcome.spread == pytest.approx(abs(by_hand[0] - by_hand[1]) / 2, abs=1e-6)
    recorded = json.loads((folder / "trials" / "0" / "history.json").read_text())
    assert recorded["values"] == pytest.approx(by_hand, abs=1e-6) and recorded["folds"] == 2
    vals = [set(data.with_fold(k, 2).split(32, "70/15/15")["val"][2]) for k in range(2)]
    tests = [set(data.with_fold(k, 2).split(32, "70/15/15")["test"][2]) for k in range(2)]
    assert not vals[0] & vals[1] and tests[0] == tests[1] == set(data.split(32, "70/15/15")["test"][2])


def test_a_fold_without_some_class_is_refused_before_any_trial(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """24 images a class fit the split, but not 30 folds of their 20 train+val images."""
    folder = tmp_path / "study"
    config, space, data = _setup(tiny_dataset, tiny_space("alexnet"), folder, engine="optuna", trials=1, cv=30)
    with pytest.raises(DataError, match=r"class 'Action' has no image in val in fold \d+ of --cv 30 .*use fewer folds"):
        run_engine(config, space, data, folder, on_event=lambda e: pytest.fail(f"a trial event: {e}"))


# ----- every engine and sampler, end to end through the CLI ------------------------------------------------
def _engine_samplers() -> list[tuple[str, str]]:
    """Every (engine, sampler) the engines accept; an Optuna sampler whose package is missing here (gp
    without torch) is left out: choosing it is a one-line error, tested in test_engine_logic.py."""
    from tuning.engines.kerastuner_engine import TUNERS
    from tuning.engines.optuna_engine import SAMPLERS, _installed

    return ([("optuna", s) for s in SAMPLERS if _installed(s)] + [("kerastuner", s) for s in TUNERS]
            + [("staged", "auto")])


@pytest.mark.parametrize("engine, sampler", _engine_samplers())
def test_every_engine_and_sampler_finishes_its_trials_and_writes_the_report_and_the_model(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path, engine: str, sampler: str
) -> None:
    """`tuning search` with the tiniest settings (32 px, width 0.125, 1 epoch, 2 trials) from a fresh study:
    the summary counts the requested trials as finished, and the report figures and the export exist."""
    from click.testing import CliRunner

    from tuning.cli import cli
    from tuning.engines.optuna_engine import load_study
    from tuning.study import read_config

    space = _staged_space(tiny_space, tmp_path) if engine == "staged" else tiny_space("alexnet")
    folder = tmp_path / "runs" / f"{engine}-{sampler}"
    result = CliRunner().invoke(cli, [
        "search", "--model", "alexnet", "--data", str(tiny_dataset), "--space", str(space), "--engine", engine,
        "--sampler", sampler, "--pruner", "none", "--budget", "quick", "--trials", "2", "--epochs", "1",
        "--trials-per-process", "0", "--precision", "float32", "--study", str(folder)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    config = read_config(folder)
    assert config.trials == 2 or engine == "staged"  # staged: --trials caps the plan (where it does, else the plan)
    study = load_study(config)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states == ["COMPLETE"] * config.trials, result.output
    assert f"Trials: {config.trials} complete" in result.output
    figures = {p.name for p in (folder / "report").glob("*.png")}
    assert {"history.png", "confusion.png"} <= figures, figures
    assert (folder / "report" / "index.html").stat().st_size > 0
    assert (folder / "export" / "model.keras").stat().st_size > 0
