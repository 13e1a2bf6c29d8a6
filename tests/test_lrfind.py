"""The LR range test: exponential rates per batch, fastai's smoothing and stop rule, the suggested range, and
``--lr-range`` narrowing the space's learning-rate axis (recorded in config.toml, compared on resume)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.errors import SpaceError, ToolkitError
from tuning.lrfind import (
    LRFindResult,
    auto_range,
    cached_result,
    find_lr,
    narrow,
    parse_lr_range,
    rates,
    smooth,
    suggest,
)
from tuning.space import Float, load_space

FLOAT32 = {"device": "cpu", "inter_op_threads": 1, "precision": "float32"}


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _ratios(values: list[float]) -> np.ndarray:
    return np.diff(np.log(np.asarray(values)))


# ----- the rule, on numbers ----------------------------------------------------------------------------------
def test_rates_rise_by_one_factor_per_batch_from_start_to_end() -> None:
    r = rates(1e-7, 1.0, 100)
    assert r[0] == pytest.approx(1e-7) and r[-1] == pytest.approx(1.0)
    assert np.allclose(_ratios(list(r)), math.log(1e7) / 99)


def test_smoothing_is_fastais_bias_corrected_average() -> None:
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards the average's 0 start
    assert smooth([1.0, 3.0]) == pytest.approx([1.0, (0.98 * 0.02 * 1 + 0.02 * 3) / (1 - 0.98 ** 2)])


def test_suggestion_lies_between_the_steepest_fall_and_the_minimum() -> None:
    lr = list(rates(1e-6, 1.0, 61))
    x = np.log10(lr)
    loss = list(2.0 - np.tanh(2 * (x + 3)) + np.where(x > -1, 20 * (x + 1) ** 2, 0.0))  # falls fastest at 1e-3
    steepest, min_loss, low, high = suggest(lr, loss)
    assert steepest == pytest.approx(1e-3, rel=0.3)
    assert min_loss == pytest.approx(lr[int(np.argmin(loss))])
    assert low == pytest.approx(steepest / 10) and high == pytest.approx(min_loss / 10)
    assert lr[0] <= low < high < min_loss


def test_a_loss_that_only_rises_has_no_suggestion() -> None:
    lr = list(rates(1e-3, 1.0, 10))
    with pytest.raises(ToolkitError, match="the loss only rose from the rate 0.00215 on"):
        suggest(lr, [1.0 + i for i in range(10)])
    with pytest.raises(ToolkitError, match="only 3 batch"):
        suggest(lr[:3], [1.0, 0.5, 0.4])


# ----- narrowing the space -----------------------------------------------------------------------------------
def test_narrow_keeps_the_grid_values_inside_and_at_least_two(tiny_space: Callable[[str], Path]) -> None:
    space = load_space(tiny_space("alexnet"))  # learning_rate 1e-4..1e-2, grid [1e-2, 1e-3], base 1e-3
    wide = narrow(space, 5e-4, 1e-2, what="--lr-range")
    param = wide.params["learning_rate"]
    assert isinstance(param, Float)
    assert (param.low, param.high, param.grid) == (5e-4, 1e-2, (1e-2, 1e-3))
    tight = narrow(space, 2e-4, 5e-4, what="--lr-range").params["learning_rate"]
    assert isinstance(tight, Float) and tight.grid == (2e-4, 5e-4)  # none inside: the range's ends
    moved = narrow(space, 2e-3, 5e-3, what="--lr-range")
    assert moved.base["learning_rate"] == 2e-3  # the base is moved into the range
    assert type(space).from_dict(moved.to_dict()).to_dict() == moved.to_dict()  # still a valid declaration


def test_a_range_outside_the_declared_one_is_refused(tiny_space: Callable[[str], Path]) -> None:
    space = load_space(tiny_space("alexnet"))
    with pytest.raises(SpaceError, match=r"1e-06..0.001 is outside the declared learning_rate range \[0.0001, "
                                         r"0.01\]"):
        narrow(space, 1e-6, 1e-3, what="--lr-range 1e-6,1e-3")


def test_auto_range_is_clipped_to_the_declared_range(tiny_space: Callable[[str], Path]) -> None:
    space = load_space(tiny_space("alexnet"))
    assert auto_range(space, (3.14159e-5, 2.71828e-3)) == (1e-4, 2.72e-3)
    with pytest.raises(SpaceError, match="widen params.learning_rate or pass --lr-range LOW,HIGH"):
        auto_range(space, (1e-7, 1e-5))


@pytest.mark.parametrize(("text", "message"), [
    ("5,1", "LOW must be above 0 and below HIGH"),
    ("0,1e-3", "LOW must be above 0 and below HIGH"),
    ("fast,slow", "expected auto or LOW,HIGH as two numbers"),
    ("1e-4", "expected auto or LOW,HIGH as two numbers"),
])
def test_bad_lr_ranges_are_refused(text: str, message: str) -> None:
    with pytest.raises(ToolkitError, match=message):
        parse_lr_range(text)


@pytest.mark.parametrize(("value", "message"), [
    ("5,1", "Error: --lr-range 5,1: LOW must be above 0 and below HIGH, e.g. --lr-range 1e-4,1e-3\n"),
    ("a,b", "Error: --lr-range 'a,b': expected auto or LOW,HIGH as two numbers, e.g. --lr-range 1e-4,1e-3\n"),
])
def test_cli_bad_lr_range_is_a_one_line_error(value: str, message: str, tiny_dataset: Path, tmp_path: Path) -> None:
    code, out = _run("search", "--model", "alexnet", "--data", str(tiny_dataset), "--lr-range", value,
                     "--study", str(tmp_path / "runs" / "x"))
    assert (code, out) == (1, message)
    assert not (tmp_path / "runs").exists()


def test_cli_lr_range_outside_the_declared_one_is_a_one_line_error(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    code, out = _run("search", "--model", "alexnet", "--data", str(tiny_dataset), "--space",
                     str(tiny_space("alexnet")), "--budget", "quick", "--lr-range", "1e-6,1e-3",
                     "--study", str(tmp_path / "runs" / "x"))
    assert code == 1
    assert out.startswith("Error: --lr-range 1e-6,1e-3: 1e-06..0.001 is outside the declared learning_rate range "
                          "[0.0001, 0.01] of ") and out.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_lr_range_is_recorded_and_a_resume_without_it_is_refused(tiny_dataset: Path, tiny_space: Callable[[str], Path],
                                                                 tmp_path: Path) -> None:
    from tuning.pipeline import SearchRequest, resolve_config
    from tuning.study import study_paths, write_config

    folder = tmp_path / "runs" / "narrow"
    space = str(tiny_space("alexnet"))
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=space, budget="quick", study=str(folder),
                            lr_range="1e-4,1e-3")
    config = resolve_config(request, settings=FLOAT32)
    assert config.space["params"]["learning_rate"] == {"type": "float", "low": 1e-4, "high": 1e-3, "log": True,
                                                       "grid": [1e-4, 1e-3]}
    write_config(folder, config)
    toml = study_paths(folder)["config"].read_text(encoding="utf-8")
    assert "high = 0.001" in toml and "low = 0.0001" in toml
    written = study_paths(folder)["config"].read_bytes()
    code, out = _run("search", "--model", "alexnet", "--data", str(tiny_dataset), "--space", space, "--budget",
                     "quick", "--study", str(folder))
    assert code == 1
    assert out.startswith(f"Error: {folder} holds a study with a search space that differs in params") and \
        out.count("\n") == 1
    assert study_paths(folder)["config"].read_bytes() == written


def test_auto_without_a_finished_range_test_says_what_to_run(tiny_dataset: Path, tiny_space: Callable[[str], Path],
                                                            tmp_path: Path) -> None:
    from tuning.pipeline import SearchRequest, resolve_config

    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(tiny_space("alexnet")), budget="quick",
                            study=str(tmp_path / "runs" / "a"), runs=tmp_path / "runs", lr_range="auto")
    with pytest.raises(ToolkitError, match="no finished range test for alexnet"):
        resolve_config(request, settings=FLOAT32)  # resolving never trains
    assert not (tmp_path / "runs").exists()


# ----- real training -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sgd_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny space on plain SGD with rates up to 1 declared: SGD's loss explodes at high rates (Adam's on
    the tiny net only flattens at ln 3), so the range test sees a real divergence."""
    from tests.conftest import TINY_SPACE

    path = tmp_path_factory.mktemp("sgd") / "tiny-sgd.toml"
    text = TINY_SPACE.format(model="alexnet").replace('optimizer = "adam"', 'optimizer = "sgd"')
    path.write_text(text.replace("high = 1e-2", "high = 1.0", 1), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def found(tiny_dataset: Path, sgd_space: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[LRFindResult, Path]:
    """One range test from 1e-3 up to a rate of 1000 (SGD diverges long before), on the tiny set.

    Seed 1: on 50 images the loss at low rates is flat at ln 3 and the batch order decides whether noise puts
    the minimum in the skipped first tenth; under the per-epoch order of ``tuning.train.epoch_order`` seed 0
    does (no range to suggest), seed 1 does not, as seed 0 did under tf.data's own shuffle before."""
    runs = tmp_path_factory.mktemp("lrfind") / "runs"
    space, _ = load_space(sgd_space).with_budget("quick")
    return find_lr("alexnet", tiny_dataset, space, budget="quick", start=1e-3, end=1e3, steps=40, seed=1,
                   runs=runs, settings=FLOAT32), runs


@pytest.mark.slow
def test_the_rate_rises_exponentially_per_batch_and_stops_on_divergence(found: tuple[LRFindResult, Path]) -> None:
    result, _ = found
    assert result.rates[0] == pytest.approx(1e-3)
    assert np.allclose(_ratios(result.rates), math.log(1e6) / 39)  # one factor per batch, as asked
    assert result.stopped in ("diverged", "nan")
    assert len(result.rates) < 40 and result.stopped_at is not None and result.stopped_at < 1e3
    if result.stopped == "diverged":
        assert result.losses[-1] > 4 * min(result.losses)
        assert all(v <= 4 * min(result.losses[: i + 1]) for i, v in enumerate(result.losses[:-1]))


@pytest.mark.slow
def test_the_suggestion_lies_inside_the_tested_range_below_divergence(found: tuple[LRFindResult, Path]) -> None:
    result, runs = found
    assert result.rates[0] <= result.low < result.high <= result.min_loss < result.stopped_at  # type: ignore[operator]
    folder = runs / "lr-find" / "alexnet-tiny"
    assert (folder / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((folder / "lr_find.json").read_text(encoding="utf-8"))
    assert saved["rates"] == result.rates and saved["losses"] == result.losses
    assert saved["suggestion"]["low"] == result.low and saved["suggestion"]["high"] == result.high


@pytest.mark.slow
def test_auto_reuses_the_finished_range_test(found: tuple[LRFindResult, Path], tiny_dataset: Path,
                                             sgd_space: Path) -> None:
    from tuning.pipeline import SearchRequest, resolve_config

    result, runs = found
    space = load_space(sgd_space)
    assert cached_result("alexnet", tiny_dataset, space.with_budget("quick")[0], budget="quick", runs=runs)
    low, high = auto_range(space, result.suggestion)
    request = SearchRequest(model="alexnet", data=tiny_dataset, space=str(sgd_space), budget="quick",
                            study=str(runs / "auto"), runs=runs, lr_range="auto")
    lr = resolve_config(request, settings=FLOAT32).space["params"]["learning_rate"]
    assert (lr["low"], lr["high"]) == (low, high)
    assert 1e-4 <= low < high <= 1.0  # inside the declared range
    assert cached_result("alexnet", tiny_dataset, space.with_budget("quick")[0].with_base({"dropout": 0.2}),
                         budget="quick", runs=runs) is None  # another space: the finder would run again


@pytest.mark.slow
def test_cli_lr_find_prints_one_summary_line(tiny_dataset: Path, sgd_space: Path, tmp_path: Path,
                                             monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _run("lr-find", "--model", "alexnet", "--data", str(tiny_dataset), "--space", str(sgd_space),
                     "--budget", "quick", "--start", "1e-3", "--end", "1e3", "--steps", "30", "--precision",
                     "float32")
    assert code == 0, out
    summary = [line for line in out.splitlines() if line.startswith("Suggested learning rate ")]
    assert len(summary) == 1 and summary[0].endswith(str(Path("runs/lr-find/alexnet-tiny/lr_find.png")))
    assert (tmp_path / "runs" / "lr-find" / "alexnet-tiny" / "lr_find.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (("--start", "1", "--end", "0.1"), "Error: --start 1 and --end 0.1: need 0 < start < end\n"),
    (("--model", "vgg19"), "Error: unknown model 'vgg19'; known: alexnet, efficientnetv2_b0, mobilenet_v3_large, "
                           "mobilenet_v3_small, vgg16, vgg16_imagenet\n"),
])
def test_cli_lr_find_bad_options_are_one_line_errors(args: tuple[str, ...], message: str, tiny_dataset: Path,
                                                     tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _run("lr-find", "--model", "alexnet", "--data", str(tiny_dataset), *args)
    assert (code, out) == (1, message)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_search_lr_range_auto_runs_the_finder_and_searches_inside_its_range(
    fake_train: Any, tiny_dataset: Path, sgd_space: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """End to end: no lr_find.json yet, so the search runs the range test first, then every trial draws its rate
    from the suggestion (clipped to the declared range), which config.toml records."""
    import tomllib

    monkeypatch.chdir(tmp_path)
    code, out = _run("search", "--model", "alexnet", "--data", str(tiny_dataset), "--space", str(sgd_space),
                     "--budget", "quick", "--trials", "3", "--pruner", "none", "--precision", "float32",
                     "--lr-range", "auto", "--study", "auto", "--trials-per-process", "0")
    assert code == 0, out
    found = json.loads((tmp_path / "runs/lr-find/alexnet-tiny/lr_find.json").read_text(encoding="utf-8"))
    low, high = auto_range(load_space(sgd_space), (found["suggestion"]["low"], found["suggestion"]["high"]))
    config = tomllib.loads((tmp_path / "runs/auto/config.toml").read_text(encoding="utf-8"))
    lr = config["space"]["params"]["learning_rate"]
    assert (lr["low"], lr["high"]) == (low, high)
    assert f"Learning rate searched in {low:.3g} .. {high:.3g} (--lr-range auto)\n" in out
    assert len(fake_train.calls) == 3
    assert all(low <= params["learning_rate"] <= high for params, _, _ in fake_train.calls)
