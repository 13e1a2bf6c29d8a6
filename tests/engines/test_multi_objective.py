"""Multi-objective studies (``--objectives``): the engine with the fake trial function on a real tiny dataset
(costs are measured on the real rebuilt networks) and a real journal storage; the options' refusals; resume.

The real end-to-end run (train, report with its Pareto front, retrain --pick) is in ``tests/test_pareto.py``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.engines import run_engine
from tuning.errors import StudyError, UnknownNameError
from tuning.pipeline import SearchRequest, resolve_config
from tuning.space import SearchSpace
from tuning.study import StudyConfig, write_config
from tuning.train import TrialData
from tuning.trials import dominates, objective_values, pareto_front

FLOAT32 = {"device": "cpu", "inter_op_threads": 1, "precision": "float32"}


@pytest.fixture(scope="module")
def sized_space(tiny_space: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny space with the dense layer's width searched too, so trials differ in size."""
    text = tiny_space("alexnet").read_text()
    text = text.replace("[params.dense_units]\ntype = \"choice\"\nvalues = [16]",
                        "[params.dense_units]\ntype = \"choice\"\nvalues = [8, 16, 256]")
    text = text.replace('params = ["learning_rate", "dropout"]', 'params = ["learning_rate", "dropout", "dense_units"]')
    assert "values = [8, 16, 256]" in text
    path = tmp_path_factory.mktemp("sized") / "sized.toml"
    path.write_text(text)
    return path


def _request(data: Path, space: Path, runs: Path, **options: Any) -> SearchRequest:
    return SearchRequest(model="alexnet", data=data, space=str(space), budget="quick", runs=runs, study="multi",
                         **({"objectives": "accuracy,size_mb"} | options))


def _study(data: Path, space: Path, runs: Path, **options: Any) -> tuple[StudyConfig, SearchSpace, Path]:
    """A resolved multi-objective study (config written, as the search writes it before the first trial)."""
    config = resolve_config(_request(data, space, runs, **options), settings=FLOAT32)
    write_config(runs / "multi", config)
    return config, SearchSpace.from_dict(config.space), runs / "multi"


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_a_two_objective_study_records_quality_and_size_per_trial_unpruned_and_its_front_is_optunas(
    fake_train: Any, tiny_dataset: Path, sized_space: Path, tmp_path: Path, sampler: str
) -> None:
    config, space_obj, folder = _study(tiny_dataset, sized_space, tmp_path, sampler=sampler, trials=8,
                                       pruner="median")
    assert config.objectives == ["val_accuracy", "size_mb"] and config.objective == "val_accuracy"
    assert config.pruner == "none" and config.sampler == sampler
    study = run_engine(config, space_obj, TrialData.for_space(tiny_dataset, space_obj, seed=0), folder,
                       on_event=lambda e: None)
    trials = study.get_trials(deepcopy=False)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 8
    sizes = {}
    for t in trials:
        quality, size = t.values
        assert quality == pytest.approx(fake_train.score(t.params))  # the best epoch's val_accuracy, as before
        assert t.user_attrs["costs"] == {"size_mb": size}
        history = json.loads((folder / "trials" / str(t.number) / "history.json").read_text())
        assert history["status"] == "complete" and history["costs"] == {"size_mb": size}
        assert t.intermediate_values == {}  # nothing reported: Optuna cannot prune a multi-objective study
        sizes.setdefault(t.params["dense_units"], set()).add(size)
    assert all(len(v) == 1 for v in sizes.values())  # the size is the architecture's, whatever the learning rate
    by_units = {units: next(iter(v)) for units, v in sizes.items()}
    assert sorted(by_units, key=by_units.__getitem__) == sorted(by_units)  # a wider dense layer is larger
    front = pareto_front(study, config.objectives)
    assert {t.number for t in front} == {t.number for t in study.best_trials}
    values = {t.number: list(objective_values(t, config.objectives).values()) for t in trials}
    for t in front:  # no listed trial is dominated by any trial of the study
        assert not any(dominates(values[o], values[t.number], ["maximize", "minimize"]) for o in values)
    for t in trials:  # and every trial left out is dominated by one on the front
        if t not in front:
            assert any(dominates(values[f.number], values[t.number], ["maximize", "minimize"]) for f in front)


@pytest.mark.parametrize(("options", "message"), [
    ({"engine": "kerastuner"}, "--objectives needs --engine optuna: the kerastuner engine searches one objective "
                               "(use --objective)"),
    ({"engine": "staged"}, "--objectives needs --engine optuna: the staged engine searches one objective "
                           "(use --objective)"),
    ({"sampler": "cmaes"}, "--sampler cmaes searches one objective; with --objectives use tpe, nsga2, random, grid "
                           "(auto: tpe)"),
    ({"objective": "val_loss"}, "--objective val_loss and --objectives accuracy,size_mb disagree: the first of "
                                "--objectives is the quality objective; drop --objective"),
    ({"objectives": "accuracy"}, "--objectives 'accuracy': name the quality objective and at least one cost, e.g. "
                                 "--objectives balanced_accuracy,size_mb (costs: size_mb, latency_ms)"),
    ({"objectives": "size_mb,accuracy"}, "--objectives 'size_mb,accuracy': the first is the quality objective the "
                                         "trials are trained for (balanced_accuracy, macro_f1, val_accuracy, "
                                         "val_loss or auto); put size_mb after it"),
    ({"objectives": "accuracy,size_mb,size_mb"}, "--objectives 'accuracy,size_mb,size_mb': each objective once"),
    ({"objectives": "accuracy,flops"}, "unknown cost objective 'flops'; known: latency_ms, size_mb"),
    ({"objectives": "acc,size_mb"}, "unknown --objective 'acc'; known: accuracy, auto, balanced_accuracy, loss, "
                                    "macro_f1, val_accuracy, val_balanced_accuracy, val_loss, val_macro_f1"),
])
def test_bad_objectives_are_refused_before_anything_is_written(
    tiny_dataset: Path, sized_space: Path, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises((StudyError, UnknownNameError)) as err:
        resolve_config(_request(tiny_dataset, sized_space, tmp_path, **options), settings=FLOAT32)
    assert str(err.value) == message
    assert not (tmp_path / "multi").exists()


def test_the_cli_refuses_objectives_for_keras_tuner_and_staged_in_one_line(tiny_dataset: Path, tmp_path: Path
                                                                           ) -> None:
    for engine in ("kerastuner", "staged"):
        result = CliRunner().invoke(cli, ["search", "--model", "alexnet", "--data", str(tiny_dataset), "--engine",
                                          engine, "--objectives", "balanced_accuracy,size_mb", "--study",
                                          str(tmp_path / engine)])
        assert result.exit_code == 1
        assert result.output == (f"Error: --objectives needs --engine optuna: the {engine} engine searches one "
                                 "objective (use --objective)\n")
        assert not (tmp_path / engine).exists()


def test_objectives_are_recorded_in_config_toml_and_a_resume_keeps_or_defends_them(
    tiny_dataset: Path, sized_space: Path, tmp_path: Path
) -> None:
    config = resolve_config(_request(tiny_dataset, sized_space, tmp_path, objectives="auto,size_mb,latency_ms"),
                            settings=FLOAT32)
    assert config.objectives == ["val_accuracy", "size_mb", "latency_ms"]  # auto: the demo classes are balanced
    write_config(tmp_path / "multi", config)
    text = (tmp_path / "multi" / "config.toml").read_text()
    assert 'objectives = [\n    "val_accuracy",\n    "size_mb",\n    "latency_ms",\n]' in text
    resumed = resolve_config(_request(tiny_dataset, sized_space, tmp_path, objectives=None), settings=FLOAT32)
    assert resumed.objectives == config.objectives and resumed.pruner == "none"
    with pytest.raises(StudyError) as err:
        resolve_config(_request(tiny_dataset, sized_space, tmp_path, objectives="accuracy,size_mb"),
                       settings=FLOAT32)
    assert str(err.value) == (f"{tmp_path / 'multi'} holds a study with objectives "
                              "'val_accuracy,size_mb,latency_ms', not 'val_accuracy,size_mb'; rerun with --objectives "
                              "val_accuracy,size_mb,latency_ms to resume it, or pass --study NEW_NAME for a new study")


def test_a_single_objective_study_is_not_resumed_as_a_multi_objective_one(
    tiny_dataset: Path, sized_space: Path, tmp_path: Path
) -> None:
    write_config(tmp_path / "multi", resolve_config(_request(tiny_dataset, sized_space, tmp_path, objectives=None),
                                                    settings=FLOAT32))
    with pytest.raises(StudyError) as err:
        resolve_config(_request(tiny_dataset, sized_space, tmp_path), settings=FLOAT32)
    assert str(err.value) == (f"{tmp_path / 'multi'} holds a study with one objective, not objectives "
                              "val_accuracy,size_mb; rerun with no --objectives to resume it, or pass --study "
                              "NEW_NAME for a new study")


def test_mlflow_and_the_best_trial_readers_take_the_quality_value_of_a_multi_objective_study(
    fake_train: Any, tiny_dataset: Path, sized_space: Path, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from tuning.tracking import Tracked
    from tuning.tracking.mlflow_tracker import MlflowTracker
    from tuning.trials import best_first, best_trial, quality

    config, space, folder = _study(tiny_dataset, sized_space, tmp_path, trials=3)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracked = Tracked(lambda e: None, [("mlflow", MlflowTracker(folder, uri=uri))])
    tracked({"event": "study", "folder": str(folder), "config": config, "space": space})
    study = run_engine(config, space, TrialData.for_space(tiny_dataset, space, seed=0), folder, on_event=tracked)
    tracked.close(None)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(config.name).experiment_id])
    children = {int(r.data.tags["tuning.trial"]): r.data.metrics for r in runs if "tuning.trial" in r.data.tags}
    logged = {n: metrics["objective"] for n, metrics in children.items()}
    assert logged == pytest.approx({t.number: t.values[0] for t in study.trials})
    assert {n: metrics["size_mb"] for n, metrics in children.items()} == {t.number: t.values[1] for t in study.trials}
    best = best_trial(study, config.objective)
    assert quality(best) == max(t.values[0] for t in study.trials)
    assert [quality(t) for t in best_first(study.trials, config.objective)] == sorted(logged.values(), reverse=True)


def test_a_resumed_multi_objective_study_adds_trials_with_every_value(
    fake_train: Any, tiny_dataset: Path, sized_space: Path, tmp_path: Path
) -> None:
    config, space, folder = _study(tiny_dataset, sized_space, tmp_path, trials=2)
    data = TrialData.for_space(tiny_dataset, space, seed=0)
    run_engine(config, space, data, folder, on_event=lambda e: None)
    config.trials = 4
    study = run_engine(config, space, data, folder, on_event=lambda e: None)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4 and len(fake_train.calls) == 4
    assert all(len(t.values) == 2 and t.user_attrs["costs"]["size_mb"] == t.values[1] for t in study.trials)


def test_a_trial_whose_cost_cannot_be_measured_fails_with_the_reason_and_counts_toward_the_limit(
    fake_train: Any, tiny_dataset: Path, sized_space: Path, tmp_path: Path
) -> None:
    config, space, folder = _study(tiny_dataset, sized_space, tmp_path, trials=2)
    gone = tmp_path / "moved-away"  # the images went away after the search started: nothing to count classes on
    with pytest.raises(StudyError) as err:
        run_engine(config, space, TrialData.for_space(gone, space, seed=0), folder, on_event=lambda e: None)
    assert str(err.value).startswith("3 trials failed (limit --max-failures 3)")
    from tuning.engines.optuna_engine import load_study

    trials = load_study(config).trials
    assert [t.state.name for t in trials] == ["FAIL"] * 3 and all(t.values is None for t in trials)
    assert all(t.user_attrs["fail_reason"].startswith(f"{gone}: no such dataset folder") for t in trials)
    history = json.loads((folder / "trials" / "0" / "history.json").read_text())
    assert history["status"] == "failed" and history["reason"] == trials[0].user_attrs["fail_reason"]
