"""Engine logic with the ``fake_train`` trial function (results computed from the params, no Keras) and a real
Optuna journal storage: samplers, the staged order and its resume, surplus trials, failures and their limit.

The real end-to-end runs of the same engines are in ``test_engines.py`` (marked slow)."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tuning.engines import TrialLimitReached, run_engine
from tuning.engines._common import TrialRunner, run_one
from tuning.engines.optuna_engine import load_study
from tuning.errors import StudyError
from tuning.pipeline import SearchRequest, resolve_space
from tuning.space import SearchSpace
from tuning.study import StudyConfig, default_storage
from tuning.train import TrialData

STAGED_EXTRA = """
[staged]
order = ["learning_rate", "dropout"]
"""


def _setup(space_path: Path, folder: Path, **request: Any) -> tuple[StudyConfig, SearchSpace, TrialData]:
    """A study config as the pipeline resolves it; the dataset is never read (the fake trains nothing)."""
    req = SearchRequest(model="alexnet", data=folder / "no-data", space=str(space_path), budget="quick", **request)
    space, trials, epochs = resolve_space(req, "quick")
    sampler = {"optuna": "tpe", "staged": "-"}[req.engine] if req.sampler == "auto" else req.sampler
    config = StudyConfig(
        name=folder.name, model="alexnet", dataset=str(req.data), engine=req.engine, sampler=sampler,
        pruner=req.pruner, budget="quick", trials=trials, epochs=epochs, seed=req.seed,
        storage=default_storage(folder), space=space.to_dict(), repeats=req.repeats, max_failures=req.max_failures,
    )
    return config, space, TrialData.for_space(req.data, space, seed=req.seed)


def _run(config: StudyConfig, space: SearchSpace, data: TrialData, folder: Path,
         on_event: Callable[[Mapping[str, Any]], None] = lambda e: None, **kwargs: Any) -> Any:
    return run_engine(config, space, data, folder, on_event=on_event, **kwargs)


def _states(study: Any) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def _staged_space(tiny_space: Callable[[str], Path], tmp_path: Path) -> Path:
    text = tiny_space("alexnet").read_text().replace("step = 0.1", "step = 0.1\ngrid = [0.1, 0.3]") + STAGED_EXTRA
    path = tmp_path / "staged.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_optuna_samplers_record_each_trial_value_history_and_params(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path, sampler: str
) -> None:
    folder = tmp_path / sampler
    config, space, data = _setup(tiny_space("alexnet"), folder, sampler=sampler, trials=5, pruner="none")
    study = _run(config, space, data, folder)
    trials = study.get_trials(deepcopy=False)
    assert _states(study) == ["COMPLETE"] * 5 and len(fake_train.calls) == 5
    for t in trials:
        assert set(t.params) == {"learning_rate", "dropout"}
        assert space.params["learning_rate"].contains(t.params["learning_rate"])
        assert t.value == pytest.approx(fake_train.score(t.params))  # the best epoch's val_accuracy
        assert t.user_attrs["epochs"] == config.epochs
        history = json.loads((folder / "trials" / str(t.number) / "history.json").read_text())
        assert history["status"] == "complete" and history["value"] == t.value
        assert len(history["history"]["val_accuracy"]) == config.epochs
    trained = [params for params, _, _ in fake_train.calls]
    assert all(p["image_size"] == 32 and p["optimizer"] == "adam" for p in trained)  # the base fills the rest


def test_a_seeded_sampler_repeats_its_sequence_and_a_resumed_study_draws_new_points(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    sequences = []
    for name in ("a", "b"):
        folder = tmp_path / name
        config, space, data = _setup(tiny_space("alexnet"), folder, trials=4, seed=7, pruner="none")
        sequences.append([t.params for t in _run(config, space, data, folder).get_trials(deepcopy=False)])
    assert sequences[0] == sequences[1]
    folder = tmp_path / "a"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=8, seed=7, pruner="none")
    resumed = [t.params for t in _run(config, space, data, folder).get_trials(deepcopy=False)]
    assert resumed[:4] == sequences[0]  # the first four are kept, not retrained
    assert len(fake_train.calls) == 4 + 4 + 4
    assert all(p not in sequences[0] for p in resumed[4:])  # the seed is offset by the trials already there


def test_grid_visits_every_point_once_and_stops(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "grid"
    config, space, data = _setup(tiny_space("alexnet"), folder, sampler="grid", trials=50, pruner="none")
    assert config.trials == 12  # 2 learning rates x 6 dropouts (step 0.1 on [0, 0.5]): capped at the grid
    study = _run(config, space, data, folder)
    points = sorted((t.params["learning_rate"], t.params["dropout"]) for t in study.get_trials(deepcopy=False))
    assert points == sorted((lr, d / 10) for lr in (1e-2, 1e-3) for d in range(6))
    assert _states(study) == ["COMPLETE"] * 12 and len(fake_train.calls) == 12


def test_median_pruning_stops_poor_trials_and_they_count_as_finished(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "pruned"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=10, epochs=4, pruner="median")
    study = load_study(config, space)
    # five good ones set the median (no trial is judged before five finished); the worse two fall below it,
    # and only after half their epochs (an early epoch ranks configurations poorly: docs/engines-study.md)
    for lr in (1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-2, 1e-4):
        study.enqueue_trial({"learning_rate": lr, "dropout": 0.1})
    config = replace(config, trials=7)
    study = _run(config, space, data, folder)
    assert _states(study) == ["COMPLETE"] * 5 + ["PRUNED", "PRUNED"]
    assert [len(t.user_attrs["history"]["val_accuracy"]) for t in study.trials] == [4] * 5 + [3, 3]
    assert [max(t.intermediate_values.values()) for t in study.trials[:5]] == [t.value for t in study.trials[:5]]


def test_early_trials_and_epochs_are_never_pruned(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """The four trials before the fifth finished ones are never judged, however poor (the study's own winner,
    a learning rate of 1e-5, starts slowly); nor is any trial in the first half of its epochs."""
    folder = tmp_path / "early"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=10, epochs=6, pruner="median")
    study = load_study(config, space)
    for lr in (1e-3, 1e-4, 1e-2, 1e-4, 1e-3, 1e-3, 1e-2):
        study.enqueue_trial({"learning_rate": lr, "dropout": 0.1})
    study = _run(replace(config, trials=7), space, data, folder)
    assert _states(study)[:5] == ["COMPLETE"] * 5
    assert all(len(t.user_attrs["history"]["val_accuracy"]) >= 4 for t in study.trials)  # warm-up: 3 of 6 epochs


def test_staged_walks_the_declared_order_keeps_the_best_of_each_axis_and_resumes_mid_stage(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "staged"
    config, space, data = _setup(_staged_space(tiny_space, tmp_path), folder, engine="staged", pruner="none")
    assert config.trials == 4  # base + 1 other learning rate + 2 other dropouts (the base value is not retrained)
    started: list[dict[str, Any]] = []

    def stop_at_third(event: Mapping[str, Any]) -> None:
        if event["event"] == "trial_start":
            started.append(dict(event["params"]))
            if len(started) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(config, space, data, folder, on_event=stop_at_third)
    assert len(fake_train.calls) == 2
    study = _run(config, space, data, folder)
    trials = study.get_trials(deepcopy=False)
    assert _states(study) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].user_attrs["fail_reason"] == "interrupted (Ctrl-C)"
    searched = [{k: p[k] for k in ("learning_rate", "dropout")} for p, _, _ in fake_train.calls]
    # 1e-2 is worse than the base's 1e-3 (score), so the dropout stage keeps 1e-3; finished ones are not rerun
    assert searched == [{"learning_rate": 1e-3, "dropout": 0.0}, {"learning_rate": 1e-2, "dropout": 0.0},
                        {"learning_rate": 1e-3, "dropout": 0.1}, {"learning_rate": 1e-3, "dropout": 0.3}]
    assert [t.user_attrs["stage"] for t in trials] == ["base", "learning_rate", "dropout", "dropout", "dropout"]
    assert trials[3].params == trials[2].params  # the interrupted configuration was run again
    best = max((t for t in trials if t.value is not None), key=lambda t: t.value)
    assert best.params == {"learning_rate": 1e-3, "dropout": 0.1}
    assert _states(_run(config, space, data, folder)) == _states(study) and len(fake_train.calls) == 4


def test_staged_limit_stops_after_n_new_trials_and_a_rerun_continues_the_walk(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "limited"
    config, space, data = _setup(_staged_space(tiny_space, tmp_path), folder, engine="staged", pruner="none")
    with pytest.raises(TrialLimitReached):
        _run(config, space, data, folder, limit=2)
    assert len(fake_train.calls) == 2
    study = _run(config, space, data, folder)
    assert _states(study) == ["COMPLETE"] * 4 and len(fake_train.calls) == 4  # 1e-3 is the base: no retry


def test_staged_honours_trials_and_a_rerun_with_more_continues_the_plan(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """`--engine staged --trials 2` trains two configurations of the four-trial plan and says so; asking for
    the whole plan afterwards trains only the two it had not reached."""
    path = _staged_space(tiny_space, tmp_path)
    folder = tmp_path / "staged"
    config, space, data = _setup(path, folder, engine="staged", pruner="none", trials=2)
    assert config.trials == 2
    events: list[Mapping[str, Any]] = []
    study = _run(config, space, data, folder, on_event=events.append)
    first = [(t.params, t.user_attrs["stage"]) for t in study.get_trials(deepcopy=False)]
    assert _states(study) == ["COMPLETE", "COMPLETE"]
    assert [stage for _, stage in first] == ["base", "learning_rate"]
    assert [e["message"] for e in events if e["event"] == "note"] == [
        "Staged: stopped after 2 finished trials of the plan's 4 (--trials 2); rerun with --trials 4 to continue "
        "the plan"]

    config, space, data = _setup(path, folder, engine="staged", pruner="none")  # no --trials: the whole plan
    assert config.trials == 4
    events.clear()
    study = _run(config, space, data, folder, on_event=events.append)
    trials = study.get_trials(deepcopy=False)
    assert [(t.params, t.user_attrs["stage"]) for t in trials[:2]] == first
    assert [t.user_attrs["stage"] for t in trials[2:]] == ["dropout", "dropout"]
    assert _states(study) == ["COMPLETE"] * 4 and len(fake_train.calls) == 4  # the first two were looked up
    assert not [e for e in events if e["event"] == "note"]


def test_a_failed_staged_configuration_loses_its_axis_and_is_not_retried(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    fake_train.fail = lambda p: p["dropout"] == 0.1  # the best dropout by score, but it runs out of memory
    folder = tmp_path / "oom"
    config, space, data = _setup(_staged_space(tiny_space, tmp_path), folder, engine="staged", pruner="none")
    study = _run(config, space, data, folder)
    failed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL"]
    assert [t.params["dropout"] for t in failed] == [0.1]
    assert failed[0].user_attrs["fail_reason"] == "out of memory: fake"
    calls = len(fake_train.calls)
    _run(config, space, data, folder)
    assert len(fake_train.calls) == calls  # a failure that says something about the configuration is final


def test_surplus_trials_from_a_race_neither_count_as_done_nor_as_failures_on_resume(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "surplus"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=2, pruner="none", max_failures=1)
    study = _run(config, space, data, folder)
    runner = TrialRunner(config, space, data, folder, lambda e: None)
    for _ in range(2):  # two late workers start a trial after the study already holds its 2 finished ones
        assert run_one(study, runner, space.suggest_optuna, prune=False, limit=config.trials) is None
    surplus = study.get_trials(deepcopy=False)[2:]
    assert [t.state.name for t in surplus] == ["FAIL", "FAIL"] and all(t.user_attrs["surplus"] for t in surplus)
    assert len(fake_train.calls) == 2  # a surplus trial trains nothing
    resumed = _run(replace(config, trials=3), space, data, folder)  # two FAILs, yet max_failures=1 is not hit
    assert _states(resumed) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    assert len(fake_train.calls) == 3


def test_failed_and_nan_trials_are_recorded_with_their_reason_and_the_study_goes_on(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    fake_train.fail = lambda p: p["learning_rate"] == 1e-2
    fake_train.nan = lambda p: p["learning_rate"] == 5e-3
    folder = tmp_path / "failures"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=2, pruner="none")
    study = load_study(config, space)
    for lr in (1e-2, 5e-3, 1e-3, 2e-3):
        study.enqueue_trial({"learning_rate": lr, "dropout": 0.0})
    study = _run(config, space, data, folder)
    trials = study.get_trials(deepcopy=False)
    assert _states(study) == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert [t.user_attrs["fail_reason"] for t in trials[:2]] == ["out of memory: fake", "loss became nan at epoch 1"]
    for t in trials[:2]:
        history = json.loads((folder / "trials" / str(t.number) / "history.json").read_text())
        assert history["status"] == "failed" and history["reason"] == t.user_attrs["fail_reason"]
        assert t.value is None
    assert all(math.isfinite(t.value) for t in trials[2:])


def test_max_failures_stops_the_study_with_the_count_and_the_option(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    fake_train.fail = lambda p: True
    folder = tmp_path / "failing"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=5, pruner="none", max_failures=2)
    with pytest.raises(StudyError, match=r"^2 trials failed \(limit --max-failures 2\); see the reasons in .*trials"):
        _run(config, space, data, folder)
    assert len(fake_train.calls) == 2  # it stops at the limit, not after every trial
    default = replace(config, name="default", storage=default_storage(tmp_path / "default"), max_failures=0)
    with pytest.raises(StudyError, match=r"^5 trials failed \(limit --max-failures 5\)"):
        _run(default, space, data, tmp_path / "default")  # default: max(3, trials)


def test_repeats_average_the_seeds_and_record_the_spread(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "repeats"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=1, repeats=3, pruner="none", seed=2)
    trial = _run(config, space, data, folder).trials[0]
    assert [seed for _, _, seed in fake_train.calls] == [2, 3, 4]
    scores = [fake_train.score(trial.params, seed) for seed in (2, 3, 4)]
    assert trial.value == pytest.approx(sum(scores) / 3)
    assert trial.user_attrs["spread"] == pytest.approx(0.01 * math.sqrt(2 / 3))
    history = json.loads((folder / "trials" / "0" / "history.json").read_text())
    assert len(history["repeats"]) == 2



# ----- the failure limit (--max-failures) and --trials, for every engine that has them ---------------------
def _kt(tiny_space: Callable[[str], Path], folder: Path, sampler: str, **request: Any
        ) -> tuple[StudyConfig, SearchSpace, TrialData]:
    config, space, data = _setup(tiny_space("alexnet"), folder, pruner="none", sampler=sampler, **request)
    return replace(config, engine="kerastuner"), space, data


def test_a_rerun_after_max_failures_stopped_the_study_trains_again_and_counts_only_its_own_failures(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    fake_train.fail = lambda p: True
    folder = tmp_path / "rerun"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=3, pruner="none", max_failures=2)
    with pytest.raises(StudyError, match=r"^2 trials failed \(limit --max-failures 2\)"):
        _run(config, space, data, folder)
    with pytest.raises(StudyError, match=r"^2 trials failed \(limit --max-failures 2\)"):
        _run(config, space, data, folder)  # still failing: two NEW failures stop it again, not zero
    assert len(fake_train.calls) == 4
    fake_train.fail = lambda p: False  # the cause is fixed: the same command continues the study
    study = _run(config, space, data, folder)
    assert _states(study) == ["FAIL"] * 4 + ["COMPLETE"] * 3 and len(fake_train.calls) == 7


def test_the_failure_limit_spans_the_worker_processes_of_one_command(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """A command's children are replaced after ``--trials-per-process`` trials; each gets the command's
    ``first_trial``, so their failures add up instead of starting from zero in every child."""
    fake_train.fail = lambda p: True
    folder = tmp_path / "children"
    config, space, data = _setup(tiny_space("alexnet"), folder, trials=5, pruner="none", max_failures=3)
    for _ in range(2):  # children of one trial each
        with pytest.raises(TrialLimitReached):
            _run(config, space, data, folder, limit=1, first_trial=0)
    with pytest.raises(StudyError, match=r"^3 trials failed \(limit --max-failures 3\)"):
        _run(config, space, data, folder, limit=1, first_trial=0)  # the third child's failure is the third
    assert len(fake_train.calls) == 3


def test_kerastuner_stops_at_max_failures_with_the_optuna_engines_message(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    fake_train.fail = lambda p: True
    folder = tmp_path / "kt-failing"
    config, space, data = _kt(tiny_space, folder, "random", trials=5, max_failures=2)
    with pytest.raises(StudyError, match=r"^2 trials failed \(limit --max-failures 2\); see the reasons in "
                                         r".*trials/\*/history\.json"):
        _run(config, space, data, folder)
    assert len(fake_train.calls) == 2  # Keras Tuner's own limit (3 consecutive) does not apply
    default = replace(config, max_failures=0)
    fake_train.calls.clear()
    with pytest.raises(StudyError, match=r"^5 trials failed \(limit --max-failures 5\)"):
        _run(default, space, data, folder)  # default: max(3, trials), counted over this run only
    assert len(fake_train.calls) == 5
    fake_train.fail = lambda p: False
    study = _run(config, space, data, folder)
    assert _states(study) == ["FAIL"] * 7 + ["COMPLETE"] * 5


@pytest.mark.parametrize("sampler", ["random", "bayesian", "hyperband"])
def test_kerastuner_trials_means_finished_trials_for_every_tuner(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path, sampler: str
) -> None:
    """Hyperband's bracket at 2 epochs holds 2 trials, and Keras Tuner's max_trials counts failures: neither
    decides how many trials a study finishes."""
    calls = [0]

    def first_fails(params: Mapping[str, Any]) -> bool:
        calls[0] += 1
        return calls[0] == 1

    fake_train.fail = first_fails
    folder = tmp_path / sampler
    config, space, data = _kt(tiny_space, folder, sampler, trials=3)
    notes: list[Mapping[str, Any]] = []
    study = _run(config, space, data, folder, on_event=lambda e: notes.append(e) if e["event"] == "note" else None)
    assert _states(study) == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"] and not notes
    assert len(fake_train.calls) == 4
    assert all(epochs <= config.epochs for _, epochs, _ in fake_train.calls)
    assert _states(_run(config, space, data, folder)) == _states(study) and len(fake_train.calls) == 4
    study = _run(replace(config, trials=5), space, data, folder)  # a rerun asking for more continues
    assert _states(study) == ["FAIL"] + ["COMPLETE"] * 5 and len(fake_train.calls) == 6


def test_kerastuner_says_why_a_space_too_small_for_trials_finished_fewer(
    fake_train: Any, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "small"
    config, space, data = _kt(tiny_space, folder, "random", trials=20)
    space = space.with_search(["augmentation"])  # two points only
    notes: list[str] = []
    study = _run(config, space, data, folder, on_event=lambda e: notes.append(e["message"]) if e["event"] == "note"
                 else None)
    assert _states(study) == ["COMPLETE", "COMPLETE"]
    assert notes == ["Keras Tuner (random) found no new configuration in the search space after 2 finished trials "
                     "of --trials 20: the space holds no more distinct points; widen it (--params, the space file) "
                     "for more"]


def _search(args: list[str]) -> Any:
    from click.testing import CliRunner

    from tuning.cli import cli

    return CliRunner().invoke(cli, ["search", "--model", "alexnet", "--budget", "quick", "--pruner", "none",
                                    "--trials-per-process", "0", *args])


def test_the_cli_shows_the_kerastuner_failure_limit_as_one_error_line(
    fake_train: Any, tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    fake_train.fail = lambda p: True
    folder = tmp_path / "runs" / "kt"
    result = _search(["--data", str(tiny_dataset), "--space", str(tiny_space("alexnet")), "--engine", "kerastuner",
                      "--sampler", "random", "--trials", "4", "--max-failures", "2", "--study", str(folder)])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (f"Error: 2 trials failed (limit --max-failures 2); see the reasons in "
                                              f"{folder}/trials/*/history.json, fix the space or data, then rerun "
                                              "to continue")
    assert "Traceback" not in result.output and result.output.count("Error") == 1
    assert len(fake_train.calls) == 2


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="PyTorch is installed here")
def test_gp_without_pytorch_is_a_one_line_error_before_anything_is_written(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "runs" / "gp"
    result = _search(["--data", str(tiny_dataset), "--space", str(tiny_space("alexnet")), "--sampler", "gp",
                      "--study", str(folder)])
    assert result.exit_code == 1
    assert result.output == ("Error: --sampler gp needs PyTorch (pip install torch), which is not installed; install "
                             "it or choose another sampler (tpe, cmaes, nsga2, random, grid)\n")
    assert not folder.exists()


def test_every_optuna_sampler_the_engine_names_can_be_built_or_says_what_to_install(
    tiny_space: Callable[[str], Path],
) -> None:
    """cmaes is a dependency of the toolkit; gp's torch is not (an error naming it, above)."""
    from tuning.engines.optuna_engine import SAMPLERS, make_sampler
    from tuning.errors import ToolkitError

    space = SearchSpace.from_dict(resolve_space(SearchRequest(model="alexnet", data=Path("x"),
                                                              space=str(tiny_space("alexnet")), budget="quick"),
                                                "quick")[0].to_dict())
    built = []
    for name in SAMPLERS:
        try:
            make_sampler(name, space, 0)
            built.append(name)
        except ToolkitError as exc:
            assert str(exc).startswith(f"--sampler {name} needs ")
    assert {"tpe", "cmaes", "random", "grid"} <= set(built)


def test_the_search_help_says_which_failures_max_failures_counts() -> None:
    from click.testing import CliRunner

    from tuning.cli import cli

    text = " ".join(CliRunner().invoke(cli, ["search", "--help"], terminal_width=200).output.split())
    assert ("--max-failures INTEGER RANGE Stop after this many trials of this run failed (optuna and kerastuner "
            "engines); failures of earlier runs do not count, so a rerun after fixing the cause trains again "
            "[0: max(3, trials)].") in text
