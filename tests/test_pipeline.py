"""The main job end to end on tiny real data: search, retrain, test, report, export, predict, resume."""

from __future__ import annotations

import csv
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.pipeline import SearchOutcome, SearchRequest, resolve_config, run_search

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
    rows = [json.loads(line) for line in result.stdout.splitlines()]  # JSON lines: one object per image
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


@pytest.mark.parametrize(("change", "shown", "hint"), [
    ({"epochs": 5}, "epochs 2, not 5", "--epochs 2"),
    ({"objective": "val_loss"}, "objective 'val_accuracy', not 'val_loss'", "--objective val_accuracy"),
    ({"sampler": "random"}, "sampler 'tpe', not 'random'", "--sampler tpe"),
    ({"pruner": "hyperband"}, "pruner 'median', not 'hyperband'", "--pruner median"),
    ({"repeats": 2}, "repeats 1, not 2", "--repeats 1"),
    ({"seed": 9}, "seed 1, not 9", "--seed 1"),
])
def test_resuming_with_other_settings_is_refused(finished: tuple[SearchOutcome, SearchRequest], change: dict,
                                                 shown: str, hint: str) -> None:
    """Before, objective, sampler, pruner, repeats and storage were not compared: a maximised study could
    receive val_loss values."""
    from dataclasses import replace

    from tuning.errors import StudyError

    outcome, request = finished
    message = (f"{outcome.folder} holds a study with {shown}; rerun with {hint} to resume it, or pass --study "
               "NEW_NAME for a new study")
    with pytest.raises(StudyError) as err:
        run_search(replace(request, **change), on_event=lambda e: None)
    assert str(err.value) == message
    assert tomllib.loads((outcome.folder / "config.toml").read_text())["objective"] == "val_accuracy"


def test_resuming_on_another_storage_is_refused_on_the_command_line(
    finished: tuple[SearchOutcome, SearchRequest], tmp_path: Path
) -> None:
    outcome, request = finished
    other = (tmp_path / "other.db").as_posix()
    result = CliRunner().invoke(cli, [
        "search", "--model", "alexnet", "--data", str(request.data), "--space", str(request.space), "--budget",
        "quick", "--trials", "2", "--seed", "1", "--study", str(outcome.folder), "--storage", f"sqlite:///{other}"])
    assert result.exit_code == 1
    journal = (outcome.folder / "optuna.journal").as_posix()
    assert result.output == (
        f"Error: {outcome.folder} holds a study with storage 'journal:{journal}', not 'sqlite:///{other}'; rerun "
        f"with --storage journal:{journal} to resume it, or pass --study NEW_NAME for a new study\n")
    assert not (tmp_path / "other.db").exists()


def test_resuming_after_the_images_changed_is_refused(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """4 of the images rewritten in place under their own names: the path is the same, the data is not."""
    import shutil

    from tuning.errors import StudyError
    from tuning.study import write_config

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    request = SearchRequest(model="alexnet", data=data, space=str(tiny_space("alexnet")), budget="quick", trials=1,
                            study=str(tmp_path / "runs" / "s"), precision="float32")
    config = resolve_config(request)
    write_config(tmp_path / "runs" / "s", config)  # the state a search leaves after its first trial
    assert resolve_config(request) == config  # unchanged data resumes
    images = sorted((data / "raw" / "Anime").iterdir())[:4]
    for image, source in zip(images, sorted((data / "raw" / "Action").iterdir())):
        image.write_bytes(source.read_bytes())
    with pytest.raises(StudyError) as err:
        run_search(request)
    new = resolve_config(SearchRequest(**{**request.__dict__, "study": str(tmp_path / "fresh")})).dataset_sha256
    assert str(err.value) == (
        f"{tmp_path / 'runs' / 's'}: the images in {data.as_posix()}/raw (or their groups) changed since the study "
        "started (content "
        f"sha256 {config.dataset_sha256[:12]}, now {new[:12]}); restore them to resume, or pass --study NEW_NAME "
        "to search the new data")
    assert not (tmp_path / "runs" / "s" / "trials").exists()


def test_resuming_after_the_groups_changed_or_under_an_older_split_is_refused(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """Regrouping moves images between splits, and so does a toolkit whose split rule changed: either way the
    resumed trials would be scored on other images."""
    import shutil
    from dataclasses import replace as replaced

    from tuning.data.prepare import prepare
    from tuning.errors import StudyError
    from tuning.study import write_config

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    prepare(data, size=32)
    request = SearchRequest(model="alexnet", data=data, space=str(tiny_space("alexnet")), budget="quick", trials=1,
                            study=str(tmp_path / "runs" / "s"), precision="float32")
    config = resolve_config(request)
    write_config(tmp_path / "runs" / "s", config)
    assert resolve_config(request) == config
    prepare(data, size=32, group_by="regex:(\\d)\\.")  # ten groups a class: the last digit of the number
    with pytest.raises(StudyError, match=r"raw \(or their groups\) changed since the study started"):
        resolve_config(request)
    prepare(data, size=32, group_by="none")
    assert resolve_config(request) == config  # groups cleared: the digest is the ungrouped one again
    write_config(tmp_path / "runs" / "s", replaced(config, split_version=1))  # a study from before the change
    with pytest.raises(StudyError, match=r"split by an earlier version of the toolkit \(split version 1, now 2\)"):
        resolve_config(request)


def test_resolve_config_is_what_the_search_wrote_and_writes_nothing(
    finished: tuple[SearchOutcome, SearchRequest], tmp_path: Path
) -> None:
    from dataclasses import replace

    from tuning.study import read_config

    outcome, request = finished
    written = read_config(outcome.folder)
    assert resolve_config(replace(request, trials=written.trials)) == written  # (an earlier test added a trial)
    fresh = SearchRequest(**{**request.__dict__, "study": "new", "runs": tmp_path / "runs"})
    config = resolve_config(fresh)
    assert config.name == "new" and config.storage == f"journal:{(tmp_path / 'runs/new/optuna.journal').as_posix()}"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--sampler", "tpee", "unknown --sampler for the optuna engine 'tpee'; known: auto, cmaes, gp, grid, nsga2, "
                          "random, tpe"),
    ("--pruner", "early", "unknown --pruner 'early'; known: hyperband, median, none, sha"),
    ("--engine", "ray", "unknown engine 'ray'; known: kerastuner, optuna, staged"),
])
def test_a_bad_sampler_or_pruner_leaves_no_study_folder(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path, option: str, value: str, message: str
) -> None:
    """The sampler used to be checked by the engine, after config.toml was written."""
    folder = tmp_path / "runs" / "bad"
    result = CliRunner().invoke(cli, ["search", "--model", "alexnet", "--data", str(tiny_dataset), "--space",
                                      str(tiny_space("alexnet")), "--study", str(folder), option, value])
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"
    assert not (tmp_path / "runs").exists()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["sqlite", "driver", "postgresql"])
def test_a_storage_that_cannot_be_opened_is_one_line(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path, kind: str
) -> None:
    """Not ~60 lines of SQLAlchemy: the URL with its password masked, the cause, and nothing written."""
    port = _closed_port()
    url, shown, cause = {
        "sqlite": (f"sqlite:///{tmp_path}/no/such/dir/s.db", f"sqlite:///{tmp_path}/no/such/dir/s.db",
                   "unable to open database file"),
        "driver": ("mongo://me:secret@127.0.0.1/db", "mongo://me:***@127.0.0.1/db",
                   "Can't load plugin: sqlalchemy.dialects:mongo"),
        "postgresql": (f"postgresql+psycopg://me:secret@127.0.0.1:{port}/optuna",
                       f"postgresql+psycopg://me:***@127.0.0.1:{port}/optuna",
                       f'connection failed: connection to server at "127.0.0.1", port {port} failed: Connection '
                       "refused"),
    }[kind]
    folder = tmp_path / "runs" / "s"
    result = CliRunner().invoke(cli, ["search", "--model", "alexnet", "--data", str(tiny_dataset), "--space",
                                      str(tiny_space("alexnet")), "--study", str(folder), "--storage", url])
    assert result.exit_code == 1
    assert result.output == (f"Error: storage {shown} cannot be opened: {cause}; check the driver, host, port, "
                             "user, password and path of --storage\n")
    assert "secret" not in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "no").exists()


def test_the_callers_dtype_policy_is_restored(finished: tuple[SearchOutcome, SearchRequest]) -> None:
    """A notebook that set its own policy has it back after a search (here: resumed, retrained, exported)."""
    import keras

    _, request = finished
    keras.config.set_dtype_policy("mixed_float16")
    try:
        run_search(request)
        after = keras.config.dtype_policy().name
    finally:
        keras.config.set_dtype_policy("float32")
    assert after == "mixed_float16"


def test_mixed_bfloat16_trains_but_ships_and_tests_a_float32_model(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """--precision mixed_bfloat16 speeds training up; the model tested and exported computes in float32, and
    the exported file fed the raw test files still answers as the test did."""
    import keras

    from tuning.data.images import load_raw_rgb
    from tuning.errors import StudyError, UnknownNameError
    from tuning.export import load_model
    from tuning.inference import load_predictor

    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=1, epochs=1, study="bf16", runs=tmp_path / "runs", seed=3,
                            precision="mixed_bfloat16")
    keras.config.set_dtype_policy("float32")
    outcome = run_search(request, on_event=lambda e: None)
    assert keras.config.dtype_policy().name == "float32"  # the caller's policy is back (it used to stay bf16)
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
    with pytest.raises(StudyError, match="with precision 'mixed_bfloat16', not 'float32'; rerun with --precision "
                                         "mixed_bfloat16 to resume it"):
        run_search(SearchRequest(**{**request.__dict__, "precision": "float32"}), on_event=lambda e: None)
    # the default, auto, resumes a study with the precision it was started with, whatever the machine
    again = run_search(SearchRequest(**{**request.__dict__, "precision": "auto"}), on_event=lambda e: None)
    assert again.config.precision == "mixed_bfloat16"
    with pytest.raises(UnknownNameError, match="float32, mixed_bfloat16, mixed_float16"):
        run_search(SearchRequest(**{**request.__dict__, "precision": "bf16"}), on_event=lambda e: None)


def test_optimisers_hold_the_split_fixed_and_split_sets_it(tiny_dataset: Path, tmp_path: Path) -> None:
    """The split is the evaluation protocol: an optimiser's trials are all scored on the same validation images
    (VGG16's space lists split among its searched axes; only the staged engine replays that stage)."""
    from tuning.errors import SpaceError, StudyError
    from tuning.space import SearchSpace

    base = {"model": "vgg16", "data": tiny_dataset, "budget": "quick"}
    settings = {"device": "cpu", "inter_op_threads": 1, "precision": "float32"}
    space = SearchSpace.from_dict(resolve_config(SearchRequest(**base, study=str(tmp_path / "a")),
                                                 settings=settings).space)
    assert "split" not in space.search and {"learning_rate", "dropout"} <= set(space.search)
    assert space.scored_val_fraction() is None and space.base["split"] == "70/15/15"
    staged = SearchSpace.from_dict(resolve_config(SearchRequest(**base, engine="staged", study=str(tmp_path / "b")),
                                                  settings=settings).space)
    assert "split" in staged.search and staged.scored_val_fraction() == 0.10 and staged.test_fraction() == 0.20
    custom = SearchSpace.from_dict(resolve_config(SearchRequest(**base, split="75/15/10", study=str(tmp_path / "c")),
                                                  settings=settings).space)
    assert custom.base["split"] == "75/15/10" and custom.test_fraction() == 0.10
    with pytest.raises(StudyError, match=r"^--params split: the split is the evaluation protocol"):
        resolve_config(SearchRequest(**base, params=("learning_rate", "split"), study=str(tmp_path / "d")),
                       settings=settings)
    with pytest.raises(SpaceError, match=r"^--split: '70/30' is not a split"):
        resolve_config(SearchRequest(**base, split="70/30", study=str(tmp_path / "e")), settings=settings)
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_the_staged_split_stage_scores_every_scheme_on_the_same_images(tiny_dataset: Path) -> None:
    from tuning.space import load_space
    from tuning.train import TrialData

    space = load_space("vgg16").with_budget("quick")[0].with_search(["learning_rate", "split"])
    data = TrialData.for_space(tiny_dataset, space, seed=0)
    views = {s: data.split(32, s) for s in space.schemes()}
    assert len(views) == 3
    vals = {tuple(sorted(v["val"][2])) for v in views.values()}
    tests = {tuple(sorted(v["test"][2])) for v in views.values()}
    assert len(vals) == 1 and len(tests) == 1 and len(next(iter(vals))) > 0
    assert len({len(v["train"][2]) for v in views.values()}) == 3


def test_summary_retrain_and_report_name_the_same_lowest_loss_trial(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """Under --objective val_loss the best trial is the lowest one. The summary, the retrain and the report
    each picked their own (the summary and the report's curves with max); now one rule names trial #1, never
    the highest loss (#2) nor the pruned trial whose last value (0.1) is lower than any complete one."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from tuning.engines.optuna_engine import load_study
    from tuning.evaluate import best_trial
    from tuning.pipeline import resolve_config
    from tuning.space import SearchSpace
    from tuning.study import write_config

    folder = tmp_path / "runs" / "loss"
    args = ["--model", "alexnet", "--data", str(tiny_dataset), "--space", str(tiny_space("alexnet")), "--budget",
            "quick", "--trials", "3", "--seed", "1", "--pruner", "none", "--precision", "float32", "--objective",
            "val_loss", "--study", str(folder)]
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            trials=3, seed=1, pruner="none", precision="float32", objective="val_loss",
                            study=str(folder))
    config = resolve_config(request)
    write_config(folder, config)  # the state a finished search left: its trials are all in the storage
    study = load_study(config, SearchSpace.from_dict(config.space))
    distributions = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                     "dropout": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.1)}
    history = {"loss": [1.2, 1.0], "accuracy": [0.3, 0.4], "val_loss": [1.1, 0.9], "val_accuracy": [0.3, 0.4]}
    for state, value, lr, dropout, attrs in [
        (TrialState.COMPLETE, 0.9, 1e-3, 0.0, {}),
        (TrialState.COMPLETE, 0.5, 1e-2, 0.1, {}),
        (TrialState.COMPLETE, 1.4, 1e-4, 0.2, {}),
        (TrialState.PRUNED, 0.1, 3e-3, 0.3, {}),
        (TrialState.FAIL, None, 5e-3, 0.4, {"fail_reason": "out of memory: fake"}),
    ]:
        study.add_trial(create_trial(state=state, value=value, params={"learning_rate": lr, "dropout": dropout},
                                     distributions=distributions,
                                     user_attrs={"history": history, "seconds": 1.0, "epochs": 2, **attrs}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"surplus": True}))  # lost a worker race

    result = CliRunner().invoke(cli, ["search", *args])
    assert result.exit_code == 0, result.output
    assert "Trials: 3 complete, 1 pruned, 1 failed\n" in result.output  # the surplus trial is not counted
    assert "Best trial #1: validation loss 0.500\n" in result.output
    metrics = json.loads((folder / "final" / "metrics.json").read_text())
    assert (metrics["params"]["learning_rate"], metrics["params"]["dropout"]) == (1e-2, 0.1)  # #1 retrained
    assert best_trial(load_study(config), "val_loss").number == 1  # what 'tuning retrain' retrains
    page = (folder / "report" / "index.html").read_text()
    assert "Best trial #1: val_loss 0.5." in page and "Best trial #1: curves" in page
    assert "<td>3 complete, 1 pruned, 1 failed</td>" in page
    assert "1 surplus trial(s) left out" in page
    table = page.split("Trials, best first (val_loss):")[1].split("</table>")[0]
    assert re.findall(r"<tr><td>(\d+)</td><td>(\w+)</td>", table) == [
        ("1", "complete"), ("0", "complete"), ("2", "complete"), ("3", "pruned"), ("4", "failed")]


def test_objective_auto_follows_the_class_balance_and_a_resume_keeps_its_own(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """Plain accuracy rewards ignoring a small class, so with class weights (unequal classes) auto ranks
    trials by balanced accuracy; the short names are aliases; a resumed study keeps the objective it has."""
    import shutil

    from tuning.data.prepare import prepare
    from tuning.errors import UnknownNameError
    from tuning.study import write_config

    settings = {"device": "cpu", "inter_op_threads": 1, "precision": "float32"}
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    base = {"model": "alexnet", "data": data, "space": str(tiny_space("alexnet")), "budget": "quick"}

    def objective(**changes: Any) -> str:
        return resolve_config(SearchRequest(**{**base, "study": str(tmp_path / "s"), **changes}),
                              settings=settings).objective

    first = sorted(p for p in (data / "raw").iterdir() if p.is_dir())[0]
    for extra in sorted(p for p in first.rglob("*") if p.is_file())[:3]:  # one class smaller than the others
        extra.unlink()
    prepare(data, size=32, balance="undersample")
    assert objective() == "val_accuracy"
    prepare(data, size=32, balance="weights")
    assert objective() == "val_balanced_accuracy"
    assert objective(objective="macro_f1") == "val_macro_f1" and objective(objective="val_loss") == "val_loss"
    write_config(tmp_path / "s", resolve_config(SearchRequest(**base, study=str(tmp_path / "s"),
                                                              objective="accuracy"), settings=settings))
    assert objective() == "val_accuracy"  # resuming: auto keeps the study's own
    with pytest.raises(UnknownNameError, match="unknown --objective 'f1'; known: accuracy, auto, balanced_accuracy, "):
        objective(objective="f1")
