"""A real two-cost study end to end through the CLI (tiny Keras models, 1 epoch): the summary names the Pareto
front, the report draws and lists it, ``retrain --pick`` retrains the trial it names or refuses in one line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.engines.optuna_engine import load_study
from tuning.evaluate import pick_trial
from tuning.study import read_config
from tuning.trials import dominates, objective_values, pareto_front


@pytest.mark.slow
def test_a_multi_objective_search_reports_its_front_and_retrain_picks_from_it(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path, finished_study: Path
) -> None:
    space = tmp_path / "sized.toml"
    text = tiny_space("alexnet").read_text()
    space.write_text(text.replace('[params.dense_units]\ntype = "choice"\nvalues = [16]',
                                  '[params.dense_units]\ntype = "choice"\nvalues = [8, 16, 256]')
                     .replace('params = ["learning_rate", "dropout"]', 'params = ["learning_rate", "dense_units"]'))
    folder = tmp_path / "runs" / "pareto"
    result = CliRunner().invoke(cli, [
        "search", "--model", "alexnet", "--data", str(tiny_dataset), "--space", str(space), "--budget", "quick",
        "--trials", "4", "--epochs", "1", "--objectives", "accuracy,size_mb,latency_ms", "--sampler", "nsga2",
        "--study", str(folder), "--trials-per-process", "0", "--precision", "float32"])
    assert result.exit_code == 0, result.output
    config = read_config(folder)
    assert config.objectives == ["val_accuracy", "size_mb", "latency_ms"] and config.pruner == "none"
    study = load_study(config)
    front = pareto_front(study, config.objectives)
    assert front and all(t.state.name == "COMPLETE" for t in study.trials)
    numbers = ", ".join(f"#{t.number}" for t in front)
    assert (f"Pareto front: {len(front)} trial(s) ({numbers}) over val_accuracy, size_mb, latency_ms; pruning was "
            "off (multi-objective)") in result.output
    assert "pruning is off (Optuna does not prune multi-objective studies)" in result.output
    assert re.search(r"Best trial #\d+: validation accuracy [\d.]+, size_mb [\d.]+, latency_ms [\d.]+", result.output)
    per_trial = r"  trial +\d complete +val_acc [\d.]+ size_mb [\d.]+ latency_ms [\d.]+ best"  # costs on each line
    assert len(re.findall(per_trial, result.output)) == 4
    directions = ["maximize", "minimize", "minimize"]
    values = {t.number: list(objective_values(t, config.objectives).values()) for t in study.trials}
    for t in front:
        assert not any(dominates(v, values[t.number], directions) for v in values.values())

    page = (folder / "report" / "index.html").read_text()
    section = page[page.index("<h2>Pareto front</h2>"):page.index("<h2>Search figures</h2>")]
    assert f"Pareto front: {len(front)} of 4 complete trials" in section
    assert "Pruning is off: Optuna does not prune multi-objective studies." in section
    assert "<th>val_accuracy</th><th>size_mb</th><th>latency_ms</th>" in section
    rows = re.findall(r"<tr><td>(\d+)</td>", section)
    assert [int(n) for n in rows] == [t.number for t in front]
    assert (folder / "report" / "pareto.png").stat().st_size > 0
    single = (finished_study / "report" / "index.html").read_text()
    assert "<h2>Search</h2>" in single and "<h2>Pareto front</h2>" not in single  # no front of one objective

    metrics = json.loads((folder / "final" / "metrics.json").read_text())
    metrics_best = pick_trial(study, config, "best").number
    assert metrics["pick"] == "best" and metrics["trial"] == metrics_best

    before = (folder / "final" / "metrics.json").read_bytes()
    bad = CliRunner().invoke(cli, ["retrain", "--study", str(folder), "--pick", "trial:99"])
    assert bad.exit_code == 1 and bad.output == "Error: --pick trial:99: study 'pareto' has no trial #99 (trials 0-3)\n"
    assert (folder / "final" / "metrics.json").read_bytes() == before  # nothing the user had is touched

    other = next(t for t in front if t.number != metrics_best) if len(front) > 1 else study.trials[
        next(n for n in range(4) if n != metrics_best)]  # a trial that is not the best by quality
    pick = f"trial:{other.number}"
    result = CliRunner().invoke(cli, ["retrain", "--study", str(folder), "--pick", pick])
    assert result.exit_code == 0, result.output
    assert f"(trial #{other.number}, --pick {pick})" in result.output
    metrics = json.loads((folder / "final" / "metrics.json").read_text())
    assert metrics["trial"] == other.number and metrics["pick"] == pick
    assert metrics["params"]["dense_units"] == other.params["dense_units"]
    assert metrics["params"]["learning_rate"] == other.params["learning_rate"]
    page = (folder / "report" / "index.html").read_text()
    assert f"Retrained: trial #{other.number} (--pick {pick})" in page  # the Pareto section says which
    assert f"Best trial #{metrics_best}: val_accuracy" in page
    assert f"The final model is trial #{other.number} instead (tuning retrain --pick {pick})." in page
