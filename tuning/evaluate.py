"""Retrain the best configuration from scratch and test it once on the split no trial has seen."""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning.data.splits import summarize_split
from tuning.errors import StudyError, UnknownNameError
from tuning.metrics import (
    balanced_accuracy_interval,
    confusion_matrix,
    macro_roc_auc,
    mcnemar,
    seed_summary,
    summarize,
    wilson_interval,
)
from tuning.models.describe import layer_table
from tuning.space import SearchSpace
from tuning.study import StudyConfig, read_config, study_paths
from tuning.train import EpochHook, TrialData, make_batches, train_trial
from tuning.trials import (
    best_first,
    completed,
    direction,
    objective_values,
    quality,
    real_trials,
    state_name,
    top_trials,
)
from tuning.trials import best_trial as _best_trial

#: What the final model may be fitted on; the test split is never among them.
FIT_ON = ("train", "train+val")
#: What ``--tta`` accepts: no test-time augmentation, or each image's left-right mirror averaged in.
TTA = ("none", "flip")
#: ``final/<ENSEMBLE>/``: an ensemble (or one model with TTA) beside the single model of ``final/``, never over it.
ENSEMBLE = "ensemble"


def save_model(model: Any, path: Path) -> None:
    """Keras insists on the .keras suffix, so the temporary file keeps it before the atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(tmp)
    os.replace(tmp, path)


def inference_model(model_name: str, params: Mapping[str, Any], trained: Any, n_classes: int) -> Any:
    """The trained network rebuilt without its augmentation layers, weights copied.

    Keras random layers also transform on a bare ``model(x)`` call (they default to training mode), so a
    shipped model must not contain them: then every way of calling it gives the same answer.
    """
    import keras

    from tuning.models import build_model
    from tuning.space import Augmentation

    size = int(params["image_size"])
    trained_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # mixed-precision training still ships a float32 model
    try:
        clean = build_model(model_name, {**params, "augmentation": Augmentation("none"), "weights": "none"},
                            (size, size, 3), n_classes)  # weights: the trained ones replace a backbone's at once
    finally:
        keras.config.set_dtype_policy(trained_policy)
    clean.set_weights(trained.get_weights())
    return clean


class _TrainPlusVal(TrialData):
    """The same splits with validation merged into training and nothing left to validate on.

    ``train_trial`` then logs no ``val_*`` metric, so its best-weights callback never fires and the weights of
    the last epoch are kept: with no validation set, the epoch count chosen during the search is the stop rule.
    """

    def __init__(self, base: TrialData) -> None:
        super().__init__(base.dataset, seed=base.seed, test_fraction=base.test_fraction)
        self._arrays = base._arrays  # share the arrays already loaded

    def split_rows(self, image_size: int, scheme: str) -> dict[str, np.ndarray]:
        rows = super().split_rows(image_size, scheme)
        return {"train": np.concatenate([rows["train"], rows["val"]]), "val": rows["val"][:0], "test": rows["test"]}


def best_epoch_count(history: Mapping[str, list[float]], objective: str) -> int:
    """Epochs up to the trial's best validation epoch (1-based); 0 when no epoch was validated."""
    values = np.asarray(history.get(objective, []), dtype=np.float64)
    if not len(values) or np.all(np.isnan(values)):
        return 0
    return int(np.nanargmin(values) if direction(objective) == "minimize" else np.nanargmax(values)) + 1


def best_trial(study: Any, objective: str) -> Any:
    """The trial to retrain: ``tuning.trials.best_trial`` (the summary and the report name the same one), or an
    error when none completed."""
    best = _best_trial(study, objective)
    if best is None:
        raise StudyError(f"study '{study.study_name}': no trial completed, so there is nothing to retrain")
    return best


#: ``tuning retrain --pick``: which trial's configuration is retrained (see ``pick_trial``).
PICKS = ("best", "best:OBJECTIVE", "trial:N", "smallest-within:DELTA")


def parse_pick(pick: str) -> tuple[str, str]:
    """``--pick`` as (rule, argument), checked for its form only (the study checks the rest)."""
    rule, _, arg = pick.partition(":")
    ok = {"best": True, "trial": arg.isdigit(), "smallest-within": _is_number(arg)}.get(rule, False)
    if not ok or (rule != "best" and not arg) or (rule == "best" and pick.endswith(":")):
        raise StudyError(f"--pick '{pick}': choose {', '.join(PICKS)} (e.g. best:size_mb, trial:3, "
                         "smallest-within:0.01)")
    return rule, arg


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) >= 0
    except ValueError:
        return False


def pick_trial(study: Any, config: StudyConfig, pick: str = "best") -> Any:
    """The trial ``tuning retrain --pick`` names; an error that says why when it names none that finished.

    - ``best``: the best by the quality objective (a multi-objective study's first), as the summary names it;
    - ``best:OBJECTIVE``: the best by one of the study's objectives (``best:size_mb``: the smallest model);
    - ``trial:N``: trial number N, which must be complete;
    - ``smallest-within:DELTA``: for the phone, the cheapest model (by the study's first cost objective: the
      smallest under ``size_mb``, the fastest under ``latency_ms``) among the complete trials whose quality is
      within DELTA of the best (absolute, in the objective's units: 0.01 is one point of accuracy); ties go
      to the better quality, then the lower trial number.
    """
    rule, arg = parse_pick(pick)
    objectives = config.objectives or [config.objective]
    if rule == "best" and not arg:
        return best_trial(study, config.objective)
    if rule == "trial":
        trials = {t.number: t for t in real_trials(study)}
        if int(arg) not in trials:
            shown = f"trials {min(trials)}-{max(trials)}" if trials else "no trials"
            raise StudyError(f"--pick {pick}: study '{config.name}' has no trial #{arg} ({shown})")
        chosen = trials[int(arg)]
        if not completed([chosen]):
            raise StudyError(f"--pick {pick}: trial #{arg} is {state_name(chosen)}, not complete, so it has no "
                             "result to retrain; pick a complete one ('tuning report' lists them)")
        return chosen
    pool = completed(study)
    if not pool:
        raise StudyError(f"study '{config.name}': no trial completed, so there is nothing to retrain")
    if rule == "best":
        name = arg if arg in objectives else f"val_{arg}"  # the short names --objective takes: val_ + name
        if name not in objectives:
            raise UnknownNameError("--pick objective", arg, objectives)
        scored = [t for t in pool if math.isfinite(objective_values(t, objectives)[name])]
        sign = 1.0 if direction(name) == "minimize" else -1.0
        return min(scored, key=lambda t: (sign * objective_values(t, objectives)[name], t.number))
    if len(objectives) < 2:
        raise StudyError(f"--pick {pick}: study '{config.name}' has no cost objective to be smallest by; it was "
                         "searched for one objective (search with --objectives QUALITY,size_mb)")
    cost, delta = objectives[1], float(arg)
    top = quality(best_first(pool, config.objective)[0])
    assert top is not None  # completed trials have a finite quality
    sign = 1.0 if direction(config.objective) == "minimize" else -1.0
    close = [t for t in pool if sign * (float(quality(t) or 0.0) - top) <= delta
             and math.isfinite(objective_values(t, objectives)[cost])]
    return min(close, key=lambda t: (objective_values(t, objectives)[cost], sign * float(quality(t) or 0.0),
                                     t.number))


def retrain_and_test(
    config: StudyConfig, space: SearchSpace, data: TrialData, params: Mapping[str, Any], folder: Path,
    *, fit_on: str = "train", seeds: int = 1, epochs: int | None = None, hooks: list[EpochHook] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``params`` from scratch with ``seeds`` seeds, test each once, keep the first seed's model.

    ``fit_on="train"`` keeps the weights of the validation epoch best by the study's objective (lowest
    ``val_loss`` under ``--objective val_loss``); ``"train+val"`` has no validation set,
    so it trains for ``epochs`` (the best trial's best epoch count) and keeps the last weights. Several seeds
    show how much the test accuracy owes to the seed; the shipped model is always seed ``config.seed``.
    Writes ``final/model.keras``, ``metrics.json``, ``architecture.json`` and ``predictions.csv``; ``extra``
    goes into ``metrics.json`` as it is (which trial was retrained, and why).
    """
    if fit_on not in FIT_ON:
        raise UnknownNameError("--fit-on value", fit_on, FIT_ON)
    if seeds < 1:
        raise StudyError(f"--seeds must be >= 1, got {seeds}")
    if fit_on == "train+val" and not epochs:
        raise StudyError("--fit-on train+val needs the epoch count to train for (the best trial's best epoch)")
    n_epochs = int(epochs or config.epochs)
    view = _TrainPlusVal(data) if fit_on == "train+val" else data
    final = study_paths(folder)["final"]
    accuracies: list[float] = []
    metrics: dict[str, Any] = {}
    for k in range(seeds):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(ran out of data|conditioned on metric).*")
            result = train_trial(config.model, params, view, space, epochs=n_epochs, seed=config.seed + k,
                                 hooks=hooks or (), keep_model=True, objective=config.objective)
        if result.status != "complete":
            raise StudyError(f"retraining the best configuration (seed {config.seed + k}) {result.status}: "
                             f"{result.reason}")
        views = data.split(int(params["image_size"]), str(params["split"]))
        x, y, ids = views["test"]
        shipped = inference_model(config.model, params, result.model, len(data.classes))  # tested as shipped
        probs = predict_probabilities(shipped, x, len(data.classes))
        pred = probs.argmax(axis=1)
        accuracies.append(float((pred == y).mean()) if len(y) else math.nan)
        if k:
            continue
        metrics = _test_metrics(y, probs, data.classes)
        metrics |= {
            "shipped": "single",
            "params": dict(params),
            "fit_on": fit_on,
            "epochs_trained": result.epochs,
            "best_epoch": result.best_epoch + 1 if fit_on == "train" else n_epochs,
            "val_accuracy": result.val_accuracy,
            "split_sizes": {name: int(len(v[1])) for name, v in views.items()},
            "history": result.history,
            "seconds": result.seconds,
            "seed": config.seed,
        }
        metrics |= _split_summary(data, params)
        save_model(shipped, final / "model.keras")
        _io.write_json(final / "architecture.json", layer_table(result.model))
        _io.write_text(final / "predictions.csv", _predictions_csv(ids, y, pred, probs, data.classes))
    metrics["seeds"] = seed_summary(accuracies)
    metrics |= dict(extra or {})
    _io.write_json(final / "metrics.json", metrics)
    return metrics


def _test_metrics(y: np.ndarray, probs: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """What every tested model records: accuracy and balanced accuracy with intervals, per class, ROC-AUC."""
    pred = probs.argmax(axis=1)
    auc, auc_per_class = macro_roc_auc(y, probs)
    return summarize(confusion_matrix(y, pred, len(classes)), classes) | {
        "balanced_accuracy_ci95": balanced_accuracy_interval(y, pred),
        "classes": list(classes),
        "roc_auc_macro": auc,
        "roc_auc_per_class": dict(zip(classes, auc_per_class)),
    }


def _split_summary(data: TrialData, params: Mapping[str, Any]) -> dict[str, Any]:
    """Group-disjointness and class-share drift of the split ``params`` trained on."""
    arrays = data.arrays(int(params["image_size"]))
    return summarize_split(arrays.y, arrays.groups, str(params["split"]), seed=data.seed,
                           test_fraction=data.test_fraction, classes=data.classes, scored_val=data.scored_val,
                           source_groups=arrays.source_groups)


def mirror(images: np.ndarray) -> np.ndarray:
    """(batch, height, width, channels) mirrored left-right: the ``--tta flip`` view (``tuning.tta.MirrorRGB``
    does the same inside an exported model)."""
    return np.ascontiguousarray(np.asarray(images)[:, :, ::-1, :])


def predict_probabilities(model: Any, x: np.ndarray, n_classes: int, *, tta: str = "none") -> np.ndarray:
    """A model's probabilities on prepared images; with ``tta="flip"`` the mean of each image's and its
    mirror's."""
    if tta not in TTA:
        raise UnknownNameError("--tta value", tta, TTA)

    def run(images: np.ndarray) -> np.ndarray:
        batches = make_batches(images, np.zeros(len(images), dtype=np.int64), n_classes, 64, shuffle_seed=None)
        return np.asarray(model.predict(batches, verbose=0), dtype=np.float64)

    probs = run(x)
    return (probs + run(mirror(x))) / 2 if tta == "flip" else probs


@dataclass(frozen=True)
class Member:
    """One configuration of an ensemble: its trial, objective value, resolved params and (train+val) epochs."""

    trial: int
    value: float
    params: dict[str, Any]
    epochs: int | None = None


def retrain_ensemble(
    config: StudyConfig, space: SearchSpace, data: TrialData, members: Sequence[Member], folder: Path,
    *, fit_on: str = "train", tta: str = "none", hooks: list[EpochHook] | None = None,
) -> dict[str, Any]:
    """Train each member from scratch (seed ``config.seed``), average their test probabilities, test once.

    The members are ranked best first, so the first is the study's best trial: the single model the ensemble
    is held against (McNemar on the same test images). Everything goes to ``final/ensemble/`` (the members'
    models and plain predictions, the ensemble's ``metrics.json`` and ``predictions.csv``), built aside and
    swapped in whole; ``final/``'s single model stays as it was, and only its ``metrics.json`` key ``shipped``
    turns to ``"ensemble"``, which is what report, export and summary go by. One member with ``tta="flip"`` is
    the single model with test-time augmentation.
    """
    if fit_on not in FIT_ON:
        raise UnknownNameError("--fit-on value", fit_on, FIT_ON)
    if tta not in TTA:
        raise UnknownNameError("--tta value", tta, TTA)
    if not members:
        raise StudyError("an ensemble needs at least one member")
    if fit_on == "train+val" and not all(m.epochs for m in members):
        raise StudyError("--fit-on train+val needs each member's epoch count (its trial's best epoch)")
    final = study_paths(folder)["final"]
    single_path = final / "metrics.json"
    if not single_path.exists():
        raise StudyError(f"{folder}: no final/metrics.json; retrain the single best model first "
                         "('tuning retrain --study S'): the ensemble is kept beside it, not instead of it")
    view = _TrainPlusVal(data) if fit_on == "train+val" else data
    work = final / f".{ENSEMBLE}.partial"
    if work.exists():
        shutil.rmtree(work)
    ref_ids: np.ndarray | None = None
    y = np.zeros(0, dtype=np.int64)
    plain: list[np.ndarray] = []
    augmented: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    for m in members:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(ran out of data|conditioned on metric).*")
            result = train_trial(config.model, m.params, view, space, epochs=int(m.epochs or config.epochs),
                                 seed=config.seed, hooks=hooks or (), keep_model=True, objective=config.objective)
        if result.status != "complete":
            raise StudyError(f"retraining ensemble member trial #{m.trial} {result.status}: {result.reason}")
        n_classes = len(data.classes)  # known once training has loaded the arrays
        network = inference_model(config.model, m.params, result.model, n_classes)
        x, y_m, ids = data.split(int(m.params["image_size"]), str(m.params["split"]))["test"]
        order = np.arange(len(ids))
        if ref_ids is None:
            ref_ids, y = ids, y_m
        else:
            where = {f: i for i, f in enumerate(ids)}
            if set(where) != set(ref_ids):
                raise StudyError(f"ensemble member trial #{m.trial} was tested on other images than trial "
                                 f"#{members[0].trial}; members must share the test split")
            order = np.array([where[f] for f in ref_ids])
        probs = predict_probabilities(network, x, n_classes)[order]
        plain.append(probs)
        augmented.append((probs + predict_probabilities(network, mirror(x), n_classes)[order]) / 2
                         if tta == "flip" else probs)
        member_dir = work / "members" / f"trial-{m.trial}"
        save_model(network, member_dir / "model.keras")
        _io.write_text(member_dir / "predictions.csv",
                       _predictions_csv(ref_ids, y, probs.argmax(axis=1), probs, data.classes))
        tested = _test_metrics(y, probs, data.classes)
        records.append({
            "trial": m.trial, "value": m.value, "params": dict(m.params), "image_size": int(m.params["image_size"]),
            "model": f"members/trial-{m.trial}/model.keras", "epochs_trained": result.epochs,
            **{k: tested[k] for k in ("n", "accuracy", "accuracy_ci95", "balanced_accuracy",
                                      "balanced_accuracy_ci95", "roc_auc_macro")},
            **({"accuracy_tta": float((augmented[-1].argmax(axis=1) == y).mean()) if len(y) else math.nan}
               if tta == "flip" else {}),
        })
    assert ref_ids is not None
    for record in records:  # what sets each member apart: the params not all members share
        record["differs"] = {k: v for k, v in record["params"].items()
                             if len({repr(r["params"].get(k)) for r in records}) > 1}
    probs = np.mean(augmented, axis=0)
    pred = probs.argmax(axis=1)
    metrics = _test_metrics(y, probs, data.classes)
    common = {k: v for k, v in members[0].params.items() if all(repr(r["params"].get(k)) == repr(v) for r in records)}
    metrics |= {
        "kind": "ensemble" if len(members) > 1 else "tta",
        "tta": tta,
        "params": common,
        "members": records,
        "mcnemar": _mcnemar_record(members[0].trial, plain[0].argmax(axis=1) == y, pred == y),
        "fit_on": fit_on,
        "seed": config.seed,
        "split_sizes": {name: int(len(v[1])) for name, v in
                        data.split(int(members[0].params["image_size"]), str(members[0].params["split"])).items()},
    }
    metrics |= _split_summary(data, members[0].params)
    _io.write_json(work / "metrics.json", metrics)
    _io.write_text(work / "predictions.csv", _predictions_csv(ref_ids, y, pred, probs, data.classes))
    _io.replace_dir(work, final / ENSEMBLE)
    single = _io.read_json(single_path)
    _io.write_json(single_path, {**single, "shipped": ENSEMBLE})  # the single model's results, kept
    return metrics


def _mcnemar_record(trial: int, single_right: np.ndarray, ensemble_right: np.ndarray) -> dict[str, Any]:
    """The best single model against the ensemble on the same test images (exact McNemar and its mid-p)."""
    only_single = int((single_right & ~ensemble_right).sum())
    only_ensemble = int((ensemble_right & ~single_right).sum())
    both = int((single_right & ensemble_right).sum())
    n = len(single_right)
    return {"single_trial": trial, "n": n, "both_right": both, "only_single": only_single,
            "only_ensemble": only_ensemble, "both_wrong": n - both - only_single - only_ensemble,
            "single_accuracy": (both + only_single) / n if n else math.nan,
            "single_accuracy_ci95": list(wilson_interval(both + only_single, n)),
            "p_exact": mcnemar(only_single, only_ensemble), "p_mid": mcnemar(only_single, only_ensemble, mid_p=True)}


def shipped_model(folder: Path) -> str:
    """Which model is the study's shipped one: ``"single"`` (``final/``) or ``"ensemble"`` (``final/ensemble/``)."""
    path = study_paths(folder)["final"] / "metrics.json"
    kind = str(_io.read_json(path).get("shipped", "single")) if path.exists() else "single"
    return kind if kind == ENSEMBLE and (path.parent / ENSEMBLE / "metrics.json").exists() else "single"


def retrain_members(folder: Path, *, ensemble: int = 1, tta: str = "none", seeds: int = 1,
                    fit_on: str = "train", weights: str | None = None, pick: str = "best") -> list[Member]:
    """The configurations ``tuning retrain`` trains, checked before anything trains: the best trial, or with
    ``ensemble`` > 1 or ``tta="flip"`` the ``ensemble`` best distinct trials (``tuning.trials.top_trials``);
    ``pick`` (``--pick``) names another single trial. ``weights`` (``--weights``) points a pretrained backbone
    at its file on this machine; it is checked here."""
    from tuning.engines.optuna_engine import load_study
    from tuning.models.backbones import check_study_weights

    folder = Path(folder)
    config = read_config(folder)
    if ensemble < 1:
        raise StudyError(f"--ensemble must be >= 1, got {ensemble}")
    if tta not in TTA:
        raise UnknownNameError("--tta value", tta, TTA)
    combined = ensemble > 1 or tta != "none"
    if combined and seeds > 1:
        raise StudyError(f"--seeds {seeds} measures one configuration's spread across seeds; it does not combine "
                         "with --ensemble or --tta (each member trains with the study's seed)")
    space = SearchSpace.from_dict(config.space, source=str(study_paths(folder)["config"]))
    if weights is not None:
        space = space.with_weights(weights)
    check_study_weights(config.model, space)
    study = load_study(config)
    if combined and pick != "best":
        raise StudyError(f"--pick {pick} chooses one trial, and --ensemble/--tta retrain the K best by the quality "
                         "objective: leave --pick out, or retrain the picked trial alone")
    picked = top_trials(study, ensemble, config.objective) if combined else [pick_trial(study, config, pick)]
    if len(picked) < ensemble:
        raise StudyError(f"--ensemble {ensemble} asks for {ensemble} distinct finished trials, but study "
                         f"'{config.name}' has {len(picked)} (complete ones only: a pruned trial's value is not "
                         f"its full budget's); use --ensemble {len(picked)} or fewer")
    members = []
    for trial in picked:
        epochs = None
        if fit_on == "train+val":
            epochs = best_epoch_count(trial.user_attrs.get("history", {}), config.objective)
            if epochs == 0:
                raise StudyError(f"{folder}: trial #{trial.number} recorded no validation history, so the epoch "
                                 "count for --fit-on train+val is unknown; use --fit-on train")
        value = quality(trial)
        members.append(Member(trial.number, math.nan if value is None else value, dict(space.resolve(trial.params)),
                              epochs))
    return members


def retrain_study(folder: Path, *, fit_on: str = "train", seeds: int = 1, ensemble: int = 1, tta: str = "none",
                  hooks: list[EpochHook] | None = None, weights: str | None = None,
                  pick: str = "best", members: Sequence[Member] | None = None) -> dict[str, Any]:
    """``tuning retrain``: the finished study's best trial (or the one ``pick`` names, see ``pick_trial``)
    retrained and tested again, from its folder alone.

    With ``ensemble`` > 1 or ``tta="flip"`` the members of ``retrain_members`` go to ``retrain_ensemble``
    instead, and its metrics come back. ``members``: what ``retrain_members`` already answered for these
    options (the CLI shows them first), so the storage is not read and the weights not checked twice.
    """
    from tuning import runtime

    folder = Path(folder)
    if members is None:
        members = retrain_members(folder, ensemble=ensemble, tta=tta, seeds=seeds, fit_on=fit_on, weights=weights,
                                  pick=pick)
    config = read_config(folder)
    space = SearchSpace.from_dict(config.space, source=str(study_paths(folder)["config"]))
    if weights is not None:
        space = space.with_weights(weights)
    data = TrialData.for_space(Path(config.dataset), space, seed=config.seed)
    with runtime.applied(config.runtime):  # the caller's dtype policy is back afterwards
        if ensemble > 1 or tta != "none":
            return retrain_ensemble(config, space, data, members, folder, fit_on=fit_on, tta=tta, hooks=hooks)
        return retrain_and_test(config, space, data, members[0].params, folder, fit_on=fit_on,
                                seeds=seeds, epochs=members[0].epochs, hooks=hooks,
                                extra={"trial": members[0].trial, "pick": pick})


def _predictions_csv(ids: np.ndarray, y: np.ndarray, pred: np.ndarray, probs: np.ndarray,
                     classes: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "true", "predicted", *(f"p_{c}" for c in classes)])
    for file, t, p, row in zip(ids, y, pred, probs):
        writer.writerow([file, classes[t], classes[p], *(f"{v:.6f}" for v in row)])
    return buf.getvalue()


def read_predictions(folder: Path, *, model: str = "single") -> list[dict[str, str]]:
    """``final/predictions.csv`` of a study (``model="ensemble"``: ``final/ensemble/predictions.csv``) as rows
    (file, true, predicted, p_<class>...)."""
    path = study_paths(folder)["final"] / ("" if model == "single" else ENSEMBLE) / "predictions.csv"
    if not path.exists():
        raise StudyError(f"{folder}: no final/predictions.csv; run 'tuning search' or 'tuning retrain' first")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
