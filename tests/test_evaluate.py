"""Retraining options on tiny real data: fit on train or train+val, several seeds, the metrics they write."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tuning.cli import cli
from tuning.errors import StudyError, UnknownNameError
from tuning.evaluate import best_epoch_count, best_trial, retrain_and_test, retrain_study
from tuning.space import SearchSpace
from tuning.study import StudyConfig, read_config
from tuning.train import TrialData


@pytest.fixture(scope="module")
def study(study_copy: Path) -> Path:
    return study_copy


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "final" / "metrics.json").read_text())


def test_search_retrains_on_train_with_one_seed_and_writes_full_metrics(study: Path) -> None:
    m = _metrics(study)
    assert m["fit_on"] == "train" and m["seeds"]["k"] == 1 and m["seeds"]["accuracies"] == [m["accuracy"]]
    assert 0.0 <= m["roc_auc_macro"] <= 1.0 and set(m["roc_auc_per_class"]) == set(m["classes"])
    assert m["n"] == m["split_sizes"]["test"] == sum(v["support"] for v in m["per_class"].values())
    assert 1 <= m["best_epoch"] <= m["epochs_trained"] == 2
    with open(study / "final" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "true", "predicted", "p_Action", "p_Anime", "p_Romance"]
    assert len(rows) == m["n"]
    probs = np.array([[float(r[f"p_{c}"]) for c in m["classes"]] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert [m["classes"][i] for i in probs.argmax(axis=1)] == [r["predicted"] for r in rows]
    correct = sum(r["true"] == r["predicted"] for r in rows)
    assert m["accuracy"] == pytest.approx(correct / len(rows))


def test_best_epoch_count_follows_the_objective() -> None:
    history = {"val_accuracy": [0.3, 0.6, 0.5], "val_loss": [1.0, 0.9, 0.7]}
    assert best_epoch_count(history, "val_accuracy") == 2
    assert best_epoch_count(history, "val_loss") == 3
    assert best_epoch_count({}, "val_accuracy") == 0


@pytest.mark.slow
def test_retraining_keeps_the_epoch_best_by_the_studys_objective(
    tiny_dataset: Path, tiny_space: Callable[[str], Path], tmp_path: Path
) -> None:
    """Under ``--objective val_loss`` the kept weights (and the reported best epoch) are those of the lowest
    validation loss, not of the highest validation accuracy: checked on a real four-epoch retraining whose two
    choices differ, by evaluating the shipped model on the validation split."""
    import keras

    space = SearchSpace.from_toml(tiny_space("alexnet"))
    config = StudyConfig(name="loss", model="alexnet", dataset=str(tiny_dataset), engine="optuna", sampler="tpe",
                         pruner="none", budget="quick", trials=1, epochs=4, seed=0, storage="journal:unused",
                         space=space.to_dict(), objective="val_loss")
    data = TrialData.for_space(tiny_dataset, space, seed=0)
    params = space.resolve({})
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # the loss recomputed below must match the logged one closely
    try:
        m = retrain_and_test(config, space, data, params, tmp_path / "study")
    finally:
        keras.config.set_dtype_policy(policy)
    history = m["history"]
    lowest = int(np.argmin(history["val_loss"]))
    assert lowest != int(np.argmax(history["val_accuracy"]))  # the two objectives disagree on this run
    assert m["best_epoch"] == lowest + 1
    assert m["val_accuracy"] == pytest.approx(history["val_accuracy"][lowest])
    x, y, _ = data.split(32, str(params["split"]))["val"]
    shipped = keras.models.load_model(tmp_path / "study" / "final" / "model.keras")
    probs = np.asarray(shipped.predict(x, verbose=0), dtype=np.float64)
    loss = float(np.mean(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))
    assert loss == pytest.approx(history["val_loss"][lowest], abs=1e-3)


def test_retrain_cli_on_train_plus_val_with_two_seeds(study: Path, tmp_path: Path) -> None:
    from tuning.engines.optuna_engine import load_study

    folder = tmp_path / "copy"
    shutil.copytree(study, folder)
    before = _metrics(study)
    result = CliRunner().invoke(cli, ["retrain", "--study", str(folder), "--fit-on", "train+val", "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "Across 2 seeds: mean" in result.output and "95% Wilson CI" in result.output
    assert "  Test split disjoint by near-duplicate groups only" in result.output  # no --group-by on this set
    m = _metrics(folder)
    config = read_config(folder)
    best = best_trial(load_study(config), config.objective)
    assert m["fit_on"] == "train+val"
    assert m["epochs_trained"] == m["best_epoch"] == best_epoch_count(best.user_attrs["history"], "val_accuracy")
    assert "val_accuracy" not in m["history"]  # nothing left to validate on: no best-epoch restore
    assert m["split_sizes"] == before["split_sizes"]  # the same test split, and val is folded into training
    s = m["seeds"]
    assert s["k"] == 2 and s["accuracies"][0] == pytest.approx(m["accuracy"])
    assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert (folder / "export" / "model.keras").exists() and (folder / "report" / "index.html").exists()


def test_bad_retrain_options_are_refused(study: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown --fit-on value 'all'; known: train, train\\+val"):
        retrain_study(study, fit_on="all")
    with pytest.raises(StudyError, match="--seeds must be >= 1, got 0"):
        retrain_study(study, seeds=0)
    result = CliRunner().invoke(cli, ["retrain", "--study", str(study.parent / "nope")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "no study here" in result.output


def test_the_trial_to_retrain_follows_the_objective_and_needs_a_complete_one() -> None:
    """``tuning retrain`` picks by ``tuning.trials.best_trial``: lowest val_loss, never a pruned trial."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="loss", direction="minimize")
    for state, value in ((TrialState.COMPLETE, 0.8), (TrialState.COMPLETE, 0.3), (TrialState.COMPLETE, 1.2),
                         (TrialState.PRUNED, 0.1)):
        study.add_trial(create_trial(state=state, value=value))
    assert best_trial(study, "val_loss").number == 1
    assert best_trial(study, "val_accuracy").number == 2
    empty = optuna.create_study(study_name="empty")
    empty.add_trial(create_trial(state=TrialState.FAIL))
    with pytest.raises(StudyError, match="^study 'empty': no trial completed, so there is nothing to retrain$"):
        best_trial(empty, "val_accuracy")


def test_metrics_and_report_say_whether_the_test_split_is_group_disjoint_and_hold_it_against_the_baseline(
        study: Path) -> None:
    from scipy.stats import binomtest

    m = _metrics(study)
    assert m["group_disjoint"] is True and m["grouped_by"] == "near-duplicates"
    assert m["groups"]["test"] == m["split_sizes"]["test"]  # no source groups and no near copies: one image each
    assert set(m["split_drift"]) == set(m["classes"]) and m["split_max_drift"] < 0.1
    base = m["baseline"]
    majority = max(v["support"] for v in m["per_class"].values())
    assert base["accuracy"] == pytest.approx(majority / m["n"])
    correct = round(m["accuracy"] * m["n"])
    assert base["p_value"] == pytest.approx(binomtest(correct, m["n"], majority / m["n"], alternative="greater").pvalue)
    assert base["beats"] == (base["p_value"] < 0.05)
    html = (study / "report" / "index.html").read_text(encoding="utf-8")
    assert "Test split disjoint by near-duplicate groups only" in html
    assert ("Beats the trivial baseline" if base["beats"] else "does not beat the trivial baseline") in html


@pytest.mark.slow
def test_a_grouped_dataset_is_tested_on_unseen_groups_and_the_summary_says_so(
        tiny_space: Callable[[str], Path], tmp_path: Path) -> None:
    """Families kept apart (demo --groups, prepare --group-by folder): no family of the test split was trained
    on, and the search summary states it next to the headline figure."""
    from tuning.data.demo import make_demo

    data = tmp_path / "families"
    make_demo(data / "raw", per_class=24, size=32, seed=0, family_size=4)
    runner = CliRunner()
    assert runner.invoke(cli, ["data", "prepare", str(data), "--size", "32", "--group-by", "folder"]).exit_code == 0
    result = runner.invoke(cli, ["search", "--model", "alexnet", "--data", str(data), "--space",
                                 str(tiny_space("alexnet")), "--budget", "quick", "--trials", "1", "--epochs", "1",
                                 "--study", str(tmp_path / "runs" / "g"), "--pruner", "none"])
    assert result.exit_code == 0, result.output
    m = _metrics(tmp_path / "runs" / "g")
    assert m["group_disjoint"] is True and m["grouped_by"] == "source"
    assert sum(m["groups"].values()) == 18  # 6 families per class, each on one side
    with open(tmp_path / "runs" / "g" / "final" / "predictions.csv", newline="") as fh:
        tested = {Path(r["file"]).parent.name for r in csv.DictReader(fh)}
    trained = {Path(p).parent.name for p in (data / "raw").rglob("*.*")} - tested
    assert tested and trained and not tested & trained
    headline = result.output.split("Test accuracy", 1)[1].splitlines()
    assert headline[1].startswith(f"  Group-disjoint test split: its {m['groups']['test']} group(s)")
    assert "trivial baseline" in headline[2]


def _probs(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])


def test_an_ensemble_averages_its_members_probabilities(ensemble_study: Path) -> None:
    from tuning.evaluate import read_predictions
    from tuning.trials import top_trials

    m = json.loads((ensemble_study / "final" / "ensemble" / "metrics.json").read_text())
    config = read_config(ensemble_study)
    from tuning.engines.optuna_engine import load_study

    expected = [t.number for t in top_trials(load_study(config), 2, config.objective)]
    assert [member["trial"] for member in m["members"]] == expected  # best first: the best trial leads
    assert m["kind"] == "ensemble" and m["tta"] == "none" and len(m["members"]) == 2
    rows = read_predictions(ensemble_study, model="ensemble")
    members = [_csv(ensemble_study / "final" / "ensemble" / "members" / f"trial-{n}" / "predictions.csv")
               for n in expected]
    assert all([r["file"] for r in rows] == [r["file"] for r in member] for member in members)
    mean = np.mean([_probs(member) for member in members], axis=0)
    assert np.abs(_probs(rows) - mean).max() < 2e-6  # six decimals in the files
    assert m["accuracy"] == pytest.approx(np.mean([r["true"] == r["predicted"] for r in rows]))
    for member, member_rows in zip(m["members"], members):
        assert member["accuracy"] == pytest.approx(np.mean([r["true"] == r["predicted"] for r in member_rows]))
        assert 0.0 <= member["balanced_accuracy_ci95"][0] < member["balanced_accuracy_ci95"][1] <= 1.0
        assert set(member["differs"]) <= {"learning_rate", "dropout"} and member["differs"]
    t = m["mcnemar"]
    assert t["single_trial"] == expected[0] and t["n"] == m["n"]
    assert t["both_right"] + t["only_single"] + t["only_ensemble"] + t["both_wrong"] == m["n"]
    assert t["single_accuracy"] == pytest.approx(m["members"][0]["accuracy"])
    assert t["both_right"] + t["only_ensemble"] == round(m["accuracy"] * m["n"])


def test_an_ensemble_run_keeps_the_single_model_and_says_which_ships(ensemble_study: Path) -> None:
    from tuning.evaluate import shipped_model

    final, before = ensemble_study / "final", ensemble_study.parent / "before"
    for name in ("model.keras", "predictions.csv", "architecture.json"):
        assert (final / name).read_bytes() == (before / name).read_bytes(), name
    single = _metrics(ensemble_study)
    assert single.pop("shipped") == "ensemble" and shipped_model(ensemble_study) == "ensemble"
    assert single == {k: v for k, v in json.loads((before / "metrics.json").read_text()).items() if k != "shipped"}
    output = (ensemble_study.parent / "retrain.txt").read_text()
    assert "Ensemble of 2: test accuracy" in output and "95% posterior interval" in output
    assert output.count("  member trial #") == 2 and "(best)" in output
    assert "McNemar, best single model (trial #" in output
    assert 'Shipped model: this one (final/ensemble/; final/metrics.json says "shipped": "ensemble")' in output
    assert not list(final.glob(".ensemble*"))  # built aside, swapped in whole


def test_flip_tta_averages_each_image_with_its_mirror_and_a_plain_retrain_ships_the_single_again(
        study: Path, tmp_path: Path) -> None:
    """``--tta flip`` with one model: the best trial's model, each test image averaged with its mirror; the
    exported file (one .keras) answers the same on the raw files. A plain retrain afterwards ships the single
    model again and leaves the TTA results where they were."""
    from tuning.data.images import load_raw_rgb
    from tuning.evaluate import mirror, read_predictions, shipped_model
    from tuning.export import load_model
    from tuning.inference import load_predictor

    folder = tmp_path / "tta"
    shutil.copytree(study, folder)
    result = CliRunner().invoke(cli, ["retrain", "--study", str(folder), "--tta", "flip"])
    assert result.exit_code == 0, result.output
    assert "Best model with flip TTA: test accuracy" in result.output and "with flip" in result.output
    m = json.loads((folder / "final" / "ensemble" / "metrics.json").read_text())
    assert m["kind"] == "tta" and m["tta"] == "flip" and len(m["members"]) == 1
    config = read_config(folder)
    space = SearchSpace.from_dict(config.space)
    x, _, ids = TrialData.for_space(Path(config.dataset), space, seed=config.seed).split(32, "70/15/15")["test"]
    network = load_model(folder / "final" / "ensemble" / m["members"][0]["model"])
    expected = (network.predict(x.astype("float32"), verbose=0) + network.predict(mirror(x).astype("float32"),
                                                                                 verbose=0)) / 2
    rows = read_predictions(folder, model="ensemble")
    assert [r["file"] for r in rows] == list(ids)
    assert np.abs(_probs(rows) - expected).max() < 1e-5
    assert m["members"][0]["accuracy_tta"] == pytest.approx(m["accuracy"])
    exported = load_predictor(folder / "export" / "model.keras")
    assert np.abs(exported.run([load_raw_rgb(Path(config.dataset) / r["file"]) for r in rows]) - _probs(rows)
                  ).max() < 1e-4
    card = json.loads((folder / "export" / "model_card.json").read_text())
    assert card["ensemble"]["tta"] == "flip" and card["test"]["accuracy"] == m["accuracy"]
    kept = (folder / "final" / "ensemble" / "metrics.json").read_bytes()
    assert CliRunner().invoke(cli, ["retrain", "--study", str(folder)]).exit_code == 0
    assert shipped_model(folder) == "single" and _metrics(folder)["shipped"] == "single"
    assert (folder / "final" / "ensemble" / "metrics.json").read_bytes() == kept


def test_an_ensemble_larger_than_the_study_is_one_line_naming_both_numbers(study: Path) -> None:
    result = CliRunner().invoke(cli, ["retrain", "--study", str(study), "--ensemble", "5"])
    assert result.exit_code == 1
    assert result.output == ("Error: --ensemble 5 asks for 5 distinct finished trials, but study 'tiny' has 3 "
                             "(complete ones only: a pruned trial's value is not its full budget's); use --ensemble 3 "
                             "or fewer\n")
    result = CliRunner().invoke(cli, ["retrain", "--study", str(study), "--ensemble", "2", "--seeds", "2"])
    assert result.exit_code == 1 and result.output.startswith("Error: --seeds 2 measures one configuration's")
    result = CliRunner().invoke(cli, ["retrain", "--study", str(study), "--tta", "rotate"])
    assert result.exit_code == 2 and "'rotate' is not one of 'none', 'flip'" in result.output
    with pytest.raises(StudyError, match="--ensemble must be >= 1, got 0"):
        retrain_study(study, ensemble=0)
    assert not (study / "final" / "ensemble").exists()


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_members_of_different_image_sizes_are_tested_on_the_same_images_and_export_as_one(
        study: Path, tmp_path: Path) -> None:
    """Two members at 32 and 24 px (the 24 px cache is prepared on the way): their predictions are paired by
    file, the ensemble is their mean, and the exported .keras file resizes for each inside and answers alike."""
    from tuning.data.images import load_raw_rgb
    from tuning.evaluate import Member, read_predictions, retrain_ensemble
    from tuning.export import export_study
    from tuning.inference import load_predictor
    from tuning.study import write_config

    folder = tmp_path / "sizes"
    shutil.copytree(study, folder)
    config = read_config(folder)
    shutil.copytree(config.dataset, tmp_path / "data")  # its own copy gets the 24 px cache
    config.dataset = str(tmp_path / "data")
    write_config(folder, config)
    space = SearchSpace.from_dict(config.space)
    data = TrialData.for_space(Path(config.dataset), space, seed=config.seed)
    params = dict(space.resolve({}))
    members = [Member(0, 0.5, params), Member(1, 0.4, {**params, "image_size": 24})]
    m = retrain_ensemble(config, space, data, members, folder)
    assert [r["image_size"] for r in m["members"]] == [32, 24]
    assert m["members"][0]["differs"] == {"image_size": 32} and "image_size" not in m["params"]
    rows = read_predictions(folder, model="ensemble")
    parts = [_csv(folder / "final" / "ensemble" / "members" / f"trial-{n}" / "predictions.csv") for n in (0, 1)]
    assert [r["file"] for r in parts[1]] == [r["file"] for r in rows] == [r["file"] for r in parts[0]]
    assert np.abs(_probs(rows) - (_probs(parts[0]) + _probs(parts[1])) / 2).max() < 2e-6
    model = export_study(folder).model
    card = json.loads((folder / "export" / "model_card.json").read_text())
    assert card["input"]["resized_to"] == [32, 32]
    assert [e["image_size"] for e in card["ensemble"]["members"]] == [32, 24]
    images = [load_raw_rgb(Path(config.dataset) / r["file"]) for r in rows]
    assert np.abs(load_predictor(model).run(images) - _probs(rows)).max() < 1e-4
