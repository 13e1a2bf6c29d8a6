"""The study report on a small finished study: every section and figure, and honest notes where data are short."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import optuna
import pytest

from tuning.report import axis_groups, build_report, dataset_blocks
from tuning.study import read_config, write_config

FIGURES = ("curves_learning_rate.png", "curves_dropout.png", "best_trial_curves.png", "final_curves.png",
           "history.png", "importances.png", "parallel.png", "confusion.png", "test_images.png", "architecture.png")


@pytest.fixture(scope="module")
def study(study_copy: Path) -> Path:
    return study_copy


def test_report_has_every_section_and_figure(study: Path) -> None:
    page = build_report(study).read_text()
    for heading in ("Result", "Dataset", "Search", "Search figures", "Test results", "Appendix: final model structure"):
        assert f"<h2>{heading}</h2>" in page
    for figure in FIGURES:
        assert (study / "report" / figure).stat().st_size > 1000, figure
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert not re.search(r"""(src|href)=["']?(https?:|//|[^"'d])""", page)  # self-contained: nothing to fetch
    for text in ("95% Wilson CI", "macro one-vs-rest ROC-AUC", "raw files", "kept (balanced)", "optuna", "tpe",
                 "wall time", "3 complete", "Best trial #", "Trials, best first", "learning_rate", "ROC-AUC",
                 "Retrained with one seed", "No image was skipped"):
        assert text in page, text
    md = (study / "report" / "report.md").read_text()
    assert "## Search figures" in md and all(f"]({figure})" in md for figure in FIGURES)


def test_trials_table_is_sorted_by_objective(study: Path) -> None:
    page = (study / "report" / "index.html").read_text() if (study / "report" / "index.html").exists() else ""
    page = page or build_report(study).read_text()
    table = page.split("Trials, best first")[1].split("</table>")[0]
    values = [float(v) for v in re.findall(r"<tr><td>\d+</td><td>complete</td><td>([0-9.]+)</td>", table)]
    assert len(values) == 3 and values == sorted(values, reverse=True)


def test_too_few_trials_are_stated_not_crashed(study: Path, tmp_path: Path) -> None:
    """A copy of the study whose storage holds one trial: the report says what it cannot show."""
    folder = tmp_path / "one"
    shutil.copytree(study, folder)
    config = read_config(study)
    first = optuna.load_study(study_name=config.name, storage=_storage(config.storage)).get_trials()[0]
    config.storage = f"journal:{(folder / 'one.journal').as_posix()}"
    write_config(folder, config)
    optuna.create_study(study_name=config.name, storage=_storage(config.storage),
                        direction="maximize").add_trial(first)
    for figure in FIGURES:
        (folder / "report" / figure).unlink()
    page = build_report(folder).read_text()
    assert "Optimisation history needs at least two complete trials; this study has 1." in page
    assert "Parameter importances need at least 3 complete trials" in page
    assert "No parameter varied across trials" in page
    assert not (folder / "report" / "importances.png").exists()
    assert (folder / "report" / "confusion.png").exists()


def test_missing_test_images_leave_blank_cells(study: Path, tmp_path: Path) -> None:
    folder = tmp_path / "moved"
    shutil.copytree(study, folder)
    config = read_config(folder)
    config.dataset = str(tmp_path / "no-such-dataset")
    write_config(folder, config)
    page = build_report(folder).read_text()
    assert "manifest.csv is missing" in page
    assert (folder / "report" / "test_images.png").stat().st_size > 1000


def _storage(url: str) -> optuna.storages.BaseStorage:
    from tuning.engines._storage import open_storage

    return open_storage(url)


def test_dataset_card_counts_statuses_and_reasons(tmp_path: Path) -> None:
    rows = [("raw/a/1.png", "a", "ok"), ("raw/a/2.png", "a", "duplicate-of:raw/a/1.png"),
            ("raw/a/3.png", "a", "rejected"), ("raw/b/1.png", "b", "ok"), ("raw/b/2.png", "b", "ok"),
            ("raw/b/3.png", "b", "unreadable:truncated file")]
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "status"])
        writer.writerows(rows)
    metrics = {"classes": ["a", "b"], "params": {"image_size": 32, "split": "70/15/15"},
               "split_sizes": {"train": 2, "val": 0, "test": 1}}
    blocks = dataset_blocks(tmp_path, metrics)
    counts = blocks[0]
    assert counts.rows == [["a", 3, 1, 1, 0, 0, 1, "-"], ["b", 3, 0, 0, 1, 0, 2, "-"]]
    reasons = {row[0]: row[1:] for row in blocks[1].rows}
    assert reasons == {"duplicate": [1, "raw/a/2.png"], "rejected": [1, "raw/a/3.png"],
                       "unreadable:truncated file": [1, "raw/b/3.png"]}
    assert blocks[2].rows[0][1:5] == [2, 0, 1, "32 px"]


def _trial(number: int, params: dict, stage: str | None, value: float) -> optuna.trial.FrozenTrial:
    distributions = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                     "dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    attrs = {"history": {"loss": [1.0, 0.9], "val_loss": [1.1, 1.0], "accuracy": [0.4, 0.5],
                         "val_accuracy": [0.3, value]}}
    if stage:
        attrs["stage"] = stage
    trial = optuna.trial.create_trial(params=params, distributions=distributions, value=value, user_attrs=attrs)
    trial.number = number
    return trial


def test_staged_axis_groups_use_the_stage_and_the_trial_it_left() -> None:
    trials = [
        _trial(0, {"learning_rate": 1e-3, "dropout": 0.0}, "base", 0.5),
        _trial(1, {"learning_rate": 1e-2, "dropout": 0.0}, "learning_rate", 0.6),
        _trial(2, {"learning_rate": 1e-4, "dropout": 0.0}, "learning_rate", 0.4),
        _trial(3, {"learning_rate": 1e-2, "dropout": 0.3}, "dropout", 0.7),
    ]
    lr = axis_groups(trials, "learning_rate", staged=True)
    assert [(label, [t.number for t in ts]) for label, ts in lr] == [("0.0001", [2]), ("0.001", [0]), ("0.01", [1])]
    dropout = axis_groups(trials, "dropout", staged=True)  # departs from trial 1, the stage's winner
    assert [(label, [t.number for t in ts]) for label, ts in dropout] == [("0", [1]), ("0.3", [3])]
    # without stages every trial counts, grouped by value
    assert [len(ts) for _, ts in axis_groups(trials, "dropout", staged=False)] == [3, 1]


def test_many_numeric_values_are_binned() -> None:
    trials = [_trial(i, {"learning_rate": 10 ** (-4 + i * 0.2), "dropout": 0.0}, None, 0.5) for i in range(10)]
    groups = axis_groups(trials, "learning_rate", staged=False)
    assert len(groups) == 4 and sum(len(ts) for _, ts in groups) == 10
    assert all(" to " in label for label, _ in groups)


def test_a_val_loss_study_names_its_lowest_trial_and_counts_like_the_summary(study: Path, tmp_path: Path) -> None:
    """Every section reads the best trial and the state count from ``tuning.trials``: under val_loss the lowest
    complete trial (#1), not the highest (#2) nor the pruned one with a lower last value (#3); the surplus
    trial of a worker race is neither counted nor listed."""
    from optuna.trial import TrialState, create_trial

    from tuning.report import SECTIONS, best_trial_blocks, load_context

    folder = tmp_path / "loss"
    shutil.copytree(study, folder)
    config = read_config(study)
    template = optuna.load_study(study_name=config.name, storage=_storage(config.storage)).get_trials()[0]
    config.storage = f"journal:{(folder / 'loss.journal').as_posix()}"
    config.objective = "val_loss"
    write_config(folder, config)
    target = optuna.create_study(study_name=config.name, storage=_storage(config.storage), direction="minimize")
    for state, value, dropout, attrs in [(TrialState.COMPLETE, 0.9, 0.0, {}), (TrialState.COMPLETE, 0.5, 0.1, {}),
                                         (TrialState.COMPLETE, 1.4, 0.2, {}), (TrialState.PRUNED, 0.1, 0.3, {}),
                                         (TrialState.FAIL, None, 0.4, {"fail_reason": "out of memory: fake"})]:
        target.add_trial(create_trial(state=state, value=value, params={**template.params, "dropout": dropout},
                                      distributions=template.distributions, user_attrs={**template.user_attrs,
                                                                                        **attrs}))
    target.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"surplus": True}))

    ctx = load_context(folder)
    assert ctx.best.number == 1 and ctx.surplus == 1 and [t.number for t in ctx.complete] == [0, 1, 2]
    # the copied study's final model was retrained from the original storage's best (#0): said, not hidden
    assert best_trial_blocks(ctx)[0].text == ("Best trial #1: val_loss 0.5. The final model is trial #0, the best "
                                              "when it was retrained: 'tuning retrain' would test #1 now.")
    assert [heading for heading, _ in SECTIONS] == ["Result", "Ensemble", "Dataset", "Search", "Pareto front",
                                                    "Search figures",
                                                    "Test results", "Appendix: final model structure"]
    page = build_report(folder).read_text()
    assert "<h2>Search</h2>" in page and "<h2>Pareto front</h2>" not in page  # one objective: no front, no heading
    assert "<td>3 complete, 1 pruned, 1 failed</td>" in page and "1 surplus trial(s) left out" in page
    assert "Best trial #1: curves" in page
    table = page.split("Trials, best first (val_loss):")[1].split("</table>")[0]
    assert [int(n) for n in re.findall(r"<tr><td>(\d+)</td>", table)] == [1, 0, 2, 3, 4]


def test_the_dataset_card_classifies_statuses_by_the_manifest_rule(tmp_path: Path) -> None:
    """``tuning.data.manifest.status_kind`` decides, as for stats and review: a status the manifest does not
    describe (a bare 'unreadable', 'rejected:why', a typo) is 'other', never silently counted as usable."""
    from tuning.data.manifest import status_kind

    statuses = ["ok", "duplicate-of:raw/a/1.png", "rejected", "unreadable:truncated", "unreadable", "rejected:blurry",
                "okay", ""]
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "status"])
        writer.writerows([(f"raw/a/{i}.png", "a", s) for i, s in enumerate(statuses)])
    metrics = {"classes": ["a"], "params": {"image_size": 32, "split": "70/15/15"}, "split_sizes": {}}
    row = dataset_blocks(tmp_path, metrics)[0].rows[0]
    kinds = [status_kind(s) for s in statuses]
    assert row[:7] == ["a", 8, *(kinds.count(k) for k in ("duplicate", "rejected", "unreadable", "undescribed", "ok"))]
    assert row[2:7] == [1, 1, 1, 4, 1]
    skipped = {r[0]: r[1] for r in dataset_blocks(tmp_path, metrics)[1].rows}
    assert skipped == {"duplicate": 1, "rejected": 1, "unreadable:truncated": 1, "unreadable": 1,
                       "rejected:blurry": 1, "okay": 1, "": 1}


def test_the_ensemble_section_lists_members_and_the_mcnemar_line(ensemble_study: Path, study: Path,
                                                                  tmp_path: Path) -> None:
    import json

    folder = tmp_path / "ensemble"
    shutil.copytree(ensemble_study, folder)
    m = json.loads((folder / "final" / "ensemble" / "metrics.json").read_text())
    page = build_report(folder).read_text()
    section = page.split("<h2>Ensemble</h2>")[1].split("<h2>")[0]
    for member in m["members"]:
        assert f"<td>trial #{member['trial']}" in section
        assert f"<td>{member['accuracy']:.4g}</td>" in section
    assert "<td>the ensemble of 2 models</td>" in section and "95% posterior interval" in section
    t = m["mcnemar"]
    assert (f"McNemar, best single model (trial #{t['single_trial']}, accuracy {t['single_accuracy']:.3f}) vs the "
            f"ensemble of 2 models ({m['accuracy']:.3f}) on {t['n']} test images: both right "
            f"{t['both_right']}") in section
    assert f"exact two-sided p = {t['p_exact']:.4g}" in section
    assert "Shipped model: the ensemble of 2 models" in page.split("<h2>Ensemble</h2>")[0]
    assert "## Ensemble" in (folder / "report" / "report.md").read_text()
    assert "<h2>Ensemble</h2>" not in build_report(study).read_text()  # no ensemble run: no section
