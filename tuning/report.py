"""The study report: ``runs/<study>/report/index.html`` (self-contained) with the figures as PNG files.

It is built from the study's folder and its Optuna storage alone, so it can be regenerated at any time.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tuning import _io
from tuning import trials as trials_rule
from tuning.errors import StudyError
from tuning.study import StudyConfig, read_config, study_paths


def _pyplot() -> Any:
    """pyplot on the file-only Agg backend: reports are made on servers without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with _io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_curves(history: dict[str, list[float]], title: str, path: Path) -> Path:
    """Training vs validation loss and accuracy per epoch, side by side (the study's figure style)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        epochs = range(1, len(history.get(metric, [])) + 1)
        ax.plot(epochs, history.get(metric, []), marker="o", label=f"train {metric}")
        ax.plot(epochs, history.get(f"val_{metric}", []), marker="o", label=f"validation {metric}")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(cm: list[list[int]], classes: list[str], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(classes) + 2, 1.1 * len(classes) + 1.6))
    ax.imshow(cm, cmap="Blues")
    top = max(max(row) for row in cm) or 1
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (test split)")
    return _save(fig, path)


def plot_history(values: list[tuple[int, float]], path: Path, *, objective_name: str = "val_accuracy") -> Path:
    """Objective per finished trial and the best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    numbers = [n for n, _ in values]
    objective = [v for _, v in values]
    pick = min if trials_rule.direction(objective_name) == "minimize" else max
    best = [pick(objective[: i + 1]) for i in range(len(objective))]
    ax.plot(numbers, objective, "o", label="trial")
    ax.step(numbers, best, where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective_name.replace("val_", "validation "))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Optimisation history")
    return _save(fig, path)


_LAYER_COLOURS = {"Conv2D": "#8ecae6", "MaxPooling2D": "#ffb703", "Dense": "#90be6d", "Dropout": "#dddddd",
                  "Flatten": "#f4a261", "InputLayer": "#ffffff"}


def plot_architecture(layers: list[dict[str, Any]], title: str, path: Path) -> Path:
    """The final model's structure as a column of boxes (the study's appendix figure)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.36 * len(layers) + 0.8))
    for i, layer in enumerate(layers):
        y = len(layers) - 1 - i
        colour = _LAYER_COLOURS.get(layer["kind"], "#e9c46a" if layer["kind"].startswith("Random") else "#cdb4db")
        ax.add_patch(plt.Rectangle((0, y + 0.08), 1, 0.84, facecolor=colour, edgecolor="#555555"))
        shape = "x".join(str(d) for d in layer["shape"])
        ax.text(0.02, y + 0.5, f"{layer['name']}  ({layer['kind']})", va="center", fontsize=8)
        ax.text(0.98, y + 0.5, f"{shape}   {layer['params']:,} params", va="center", ha="right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, len(layers))
    ax.axis("off")
    ax.set_title(f"{title}: {sum(layer['params'] for layer in layers):,} parameters")
    return _save(fig, path)


# ----- figures made from the trials -------------------------------------------------------------------------
def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _label(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def axis_groups(trials: list[Any], axis: str, *, staged: bool) -> list[tuple[str, list[Any]]]:
    """Trials with curves grouped by their value of ``axis``; empty when the axis did not vary.

    For the staged engine only the trials of that stage count (plus the earlier trial they departed from),
    because later stages changed other parameters as well and would mix two effects in one panel.
    """
    pool = [t for t in trials if t.user_attrs.get("history") and axis in t.params]
    if staged:
        stage = [t for t in pool if t.user_attrs.get("stage") == axis]
        if stage:
            rest = {k: v for k, v in stage[0].params.items() if k != axis}
            before = [t for t in pool if t.number < stage[0].number
                      and {k: v for k, v in t.params.items() if k != axis} == rest]
            pool = before[-1:] + stage
    values = sorted({t.params[axis] for t in pool}, key=_sort_key)
    if len(values) < 2:
        return []
    if len(values) <= 6:
        return [(_label(v), [t for t in pool if t.params[axis] == v]) for v in values]
    if all(_sort_key(v)[0] == 0 for v in values):  # many numeric values: four bins of similar size
        ordered = sorted(pool, key=lambda t: float(t.params[axis]))
        bins = [list(b) for b in np.array_split(np.array(ordered, dtype=object), 4) if len(b)]
        return [(f"{_label(b[0].params[axis])} to {_label(b[-1].params[axis])}", b) for b in bins]
    return [(_label(v), [t for t in pool if t.params[axis] == v]) for v in values[:6]]


def plot_axis_curves(axis: str, groups: list[tuple[str, list[Any]]], path: Path) -> Path:
    """Train (solid) vs validation (dashed) loss and accuracy per value of one parameter, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(groups), figsize=(3.2 * len(groups) + 0.6, 5.6), sharey="row", squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, (label, members) in enumerate(groups):
        for row, metric in enumerate(("loss", "accuracy")):
            ax = axes[row][col]
            for i, t in enumerate(members):
                history = t.user_attrs["history"]
                colour = colours[i % len(colours)]
                epochs = range(1, len(history.get(metric, [])) + 1)
                ax.plot(epochs, history.get(metric, []), "-", color=colour, label=f"#{t.number} train")
                ax.plot(range(1, len(history.get(f"val_{metric}", [])) + 1), history.get(f"val_{metric}", []), "--",
                        color=colour, label=f"#{t.number} val")
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            if col == 0:
                ax.set_ylabel(metric)
            if row == 0:
                ax.set_title(f"{axis} = {label}", fontsize=9)
                ax.legend(fontsize=6)
    fig.suptitle(f"Training (solid) vs validation (dashed) per {axis}")
    return _save(fig, path)


def plot_importances(importances: dict[str, float], path: Path) -> Path:
    plt = _pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names], color="#8ecae6")
    ax.set_xlabel("importance (share of objective variance)")
    ax.set_title("Parameter importances")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plot_parallel(trials: list[Any], names: list[str], objective_name: str, path: Path) -> Path:
    """Parallel coordinates in matplotlib: one line per complete trial, coloured by its objective."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * (len(names) + 1) + 1.5, 4))
    columns: list[np.ndarray] = []
    ticks: list[tuple[list[float], list[str]]] = []
    for name in names:
        values = [t.params.get(name) for t in trials]
        distribution = next((t.distributions[name] for t in trials if name in t.distributions), None)
        numeric = all(_sort_key(v)[0] == 0 for v in values if v is not None)
        if numeric and distribution is not None and hasattr(distribution, "low"):
            log = bool(getattr(distribution, "log", False))
            low, high = float(distribution.low), float(distribution.high)
            scale = (lambda v: math.log10(v)) if log else (lambda v: v)
            span = (scale(high) - scale(low)) or 1.0
            col = np.array([(scale(float(v)) - scale(low)) / span if v is not None else np.nan for v in values])
            ticks.append(([0.0, 1.0], [_label(low), _label(high)]))
        else:
            levels = sorted({v for v in values if v is not None}, key=_sort_key)
            step = 1 / max(1, len(levels) - 1)
            col = np.array([levels.index(v) * step if v is not None else np.nan for v in values])
            ticks.append(([i * step for i in range(len(levels))], [_label(v) for v in levels]))
        columns.append(col)
    objective = np.array([_nan(trials_rule.quality(t)) for t in trials], dtype=np.float64)
    lo, hi = float(np.nanmin(objective)), float(np.nanmax(objective))
    columns.append((objective - lo) / ((hi - lo) or 1.0))
    ticks.append(([0.0, 1.0], [f"{lo:.3g}", f"{hi:.3g}"]))
    data = np.stack(columns, axis=1)
    cmap = plt.get_cmap("viridis" if objective_name != "val_loss" else "viridis_r")
    for row, value in zip(data, objective):
        ax.plot(range(len(columns)), row, "-o", color=cmap((value - lo) / ((hi - lo) or 1.0)), alpha=0.8, ms=3)
    for x, (positions, labels) in enumerate(ticks):
        ax.axvline(x, color="#999999", lw=0.8)
        for y, text in zip(positions, labels):
            ax.text(x + 0.03, y, text, fontsize=7, va="center")
    ax.set_xticks(range(len(columns)), [*names, objective_name], rotation=20)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_title("Parallel coordinates (colour: objective)")
    return _save(fig, path)


def plot_pareto(trials: list[Any], front: list[Any], objectives: list[str], path: Path) -> Path:
    """Quality against each cost objective, one panel per cost: every complete trial, the front highlighted
    and labelled with its trial numbers (with several costs a front trial may look dominated in one panel:
    it is not, in all objectives together)."""
    plt = _pyplot()
    quality, costs = objectives[0], objectives[1:]
    fig, axes = plt.subplots(1, len(costs), figsize=(5 * len(costs), 3.8), squeeze=False)
    on_front = {t.number for t in front}
    for ax, cost in zip(axes[0], costs):
        def xy(group: list[Any], name: str = cost) -> tuple[list[float], list[float]]:
            values = [trials_rule.objective_values(t, objectives) for t in group]
            return [v[name] for v in values], [v[quality] for v in values]

        others = [t for t in trials if t.number not in on_front]
        ax.plot(*xy(others), "o", color="#bbbbbb", label="dominated")
        ordered = sorted(front, key=lambda t: trials_rule.objective_values(t, objectives)[cost])
        x, y = xy(ordered)
        ax.plot(x, y, "o-", color="#c0392b", label="Pareto front")
        for t, xi, yi in zip(ordered, x, y):
            ax.annotate(f"#{t.number}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(f"{cost} (lower is better)")
        lower = " (lower is better)" if trials_rule.direction(quality) == "minimize" else ""
        ax.set_ylabel(quality.replace("val_", "validation ") + lower)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Pareto front: quality vs cost")
    return _save(fig, path)


def plot_test_images(items: list[tuple[Path, str, str]], path: Path, *, size: int = 96) -> Path:
    """A grid of test images titled with true and predicted labels; wrong predictions in red."""
    from tuning.data.images import load_rgb

    plt = _pyplot()
    cols = min(8, len(items))
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.75 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (file, true, predicted) in zip(axes.flat, items):
        try:
            ax.imshow(load_rgb(file, size))
        except Exception:  # noqa: BLE001 - a moved or unreadable file leaves its cell blank, titled as such
            ax.text(0.5, 0.5, "image\nmissing", ha="center", va="center", fontsize=7)
        ax.set_title(f"true {true}\npred {predicted}", fontsize=7, color="#1b7f3b" if true == predicted else "#c0392b")
    fig.suptitle("Test images: right (green) and wrong (red)")
    return _save(fig, path)


# ----- the page --------------------------------------------------------------------------------------------
@dataclass
class Block:
    """One piece of a section, rendered both to HTML and to Markdown."""

    kind: str  # "p", "note", "table", "figure"
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    path: Path | None = None


def _figure(make: Callable[[], Path], caption: str, what: str) -> Block:
    """A figure, or a note saying why it could not be drawn: a report never fails over one figure."""
    try:
        return Block("figure", caption, path=make())
    except Exception as exc:  # noqa: BLE001 - the reason goes into the report instead
        return Block("note", f"{what} could not be drawn: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")


def dataset_blocks(dataset: Path, metrics: dict[str, Any]) -> list[Block]:
    """Class counts through dedup and review (manifest statuses), skipped files and why, the split sizes."""
    from tuning.data.manifest import status_kind

    blocks: list[Block] = []
    manifest = Path(dataset) / "manifest.csv"
    if manifest.exists():
        with open(manifest, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        classes = sorted({r.get("label", "") for r in rows})
        columns = ("duplicate", "rejected", "unreadable", "undescribed", "ok")  # "undescribed" is shown as other
        table = []
        for c in classes:
            mine: list[str] = [status_kind(r.get("status", "")) for r in rows if r.get("label") == c]
            table.append([c, len(mine), *(mine.count(k) for k in columns)])
        kept = _kept_counts(Path(dataset), int(metrics["params"]["image_size"]))
        for row in table:
            row.append(kept.get(str(row[0]), "-"))
        blocks.append(Block("table", header=["class", "raw files", "duplicates", "rejected (review)", "unreadable",
                                             "other", "usable", "kept (balanced)"], rows=table))
        reasons: dict[str, list[str]] = {}
        for r in rows:
            status = r.get("status", "")
            kind = status_kind(status)
            if kind != "ok":
                reason = "duplicate" if kind == "duplicate" else status
                reasons.setdefault(reason, []).append(r.get("path", ""))
        if reasons:
            blocks.append(Block("table", header=["skipped because", "images", "examples"],
                                rows=[[k, len(v), ", ".join(v[:3])] for k, v in sorted(reasons.items())]))
        else:
            blocks.append(Block("p", "No image was skipped: every raw file is readable, unique and not rejected."))
    else:
        blocks.append(Block("note", f"{manifest} is missing, so counts before dedup and review are unknown."))
    sizes = metrics.get("split_sizes", {})
    blocks.append(Block("table", header=["classes", "train", "val", "test", "image size", "fitted on"],
                        rows=[[", ".join(metrics["classes"]), sizes.get("train", "-"), sizes.get("val", "-"),
                               sizes.get("test", "-"), f"{metrics['params']['image_size']} px",
                               metrics.get("fit_on", "train")]]))
    blocks.append(Block("note", f"Split {metrics['params']['split']}; the test share is held at the largest any "
                                "searched split uses, so no trial ever trained or validated on a test image."))
    return blocks


def _kept_counts(dataset: Path, size: int) -> dict[str, int]:
    path = dataset / "cache" / f"{size}px.npz"
    if not path.exists():
        return {}
    with np.load(path) as npz:
        classes = npz["classes"].tolist()
        y = npz["y"]
        return {c: int((y == i).sum()) for i, c in enumerate(classes)}


def _importances(study: Any) -> tuple[dict[str, float], str]:
    """Optuna's importances and the evaluator that computed them; for the quality objective in a
    multi-objective study (Optuna asks which objective there, and PED-ANOVA takes a target as minimised)."""
    import optuna

    sign = 1.0 if study.directions[0].name == "MINIMIZE" else -1.0

    def quality(trial: Any) -> float:
        return sign * _nan(trials_rule.quality(trial))

    target = quality if len(study.directions) > 1 else None
    with warnings.catch_warnings():  # PED-ANOVA warns that a target is minimised: ours is, by the sign above
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes the importances")
        try:
            return dict(optuna.importance.get_param_importances(study, target=target)), "fANOVA"
        except ImportError:  # an evaluator that needs scikit-learn; PED-ANOVA does not
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            return (dict(optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)),
                    "PED-ANOVA")


def _wall_seconds(trials: list[Any]) -> float:
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else math.nan


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@dataclass(frozen=True)
class ReportContext:
    """Everything a section reads, loaded once: the study folder, its config, final metrics and trials.

    ``trials`` leaves out the surplus trials of a worker race (they trained nothing); ``complete`` and ``best``
    come from ``tuning.trials``, the rule the search summary and ``tuning retrain`` use as well.
    """

    folder: Path
    out: Path
    config: StudyConfig
    metrics: dict[str, Any]
    study: Any
    trials: list[Any]
    surplus: int

    @property
    def complete(self) -> list[Any]:
        return trials_rule.completed(self.trials)

    @property
    def best(self) -> Any | None:
        return trials_rule.best_trial(self.trials, self.config.objective)

    @property
    def names(self) -> list[str]:
        """Every parameter some trial set."""
        return sorted({k for t in self.trials for k in t.params})

    @property
    def varied(self) -> list[str]:
        """The parameters that took more than one value across the trials."""
        return [n for n in self.names if len({repr(t.params.get(n)) for t in self.trials if n in t.params}) > 1]


def load_context(folder: Path) -> ReportContext:
    """The study as the report sees it; an error when the search has not finished (no final metrics)."""
    from tuning.engines.optuna_engine import load_study

    folder = Path(folder)
    config = read_config(folder)
    paths = study_paths(folder)
    metrics_path = paths["final"] / "metrics.json"
    if not metrics_path.exists():
        raise StudyError(f"{folder}: no final/metrics.json yet; the search must finish before its report")
    metrics = _io.read_json(metrics_path)
    study = load_study(config)
    every = study.get_trials(deepcopy=False)
    real = trials_rule.real_trials(every)
    return ReportContext(folder=folder, out=paths["report"], config=config, metrics=metrics, study=study,
                         trials=real, surplus=len(every) - len(real))


#: A section's piece: what it reads from the study, the blocks it shows.
Part = Callable[[ReportContext], list[Block]]


def headline_blocks(ctx: ReportContext) -> list[Block]:
    """The test result in one sentence, with its confidence interval."""
    m = ctx.metrics
    low, high = m["accuracy_ci95"]
    summary = (f"Test accuracy {m['accuracy']:.3f} (95% Wilson CI {low:.3f}-{high:.3f}, n={m['n']}), "
               f"balanced accuracy {m['balanced_accuracy']:.3f}")
    if m.get("roc_auc_macro") is not None:
        summary += f", macro one-vs-rest ROC-AUC {_fmt(float(m['roc_auc_macro']))}"
    return [Block("p", summary + ".")]


def headline_notes_blocks(ctx: ReportContext) -> list[Block]:
    """Next to the headline: whether the test split is group-disjoint, and the trivial baseline held against it."""
    from tuning.metrics import headline_notes

    return [Block("note" if line.startswith("Warning") else "p", line) for line in headline_notes(ctx.metrics)]


def seed_blocks(ctx: ReportContext) -> list[Block]:
    """How much the test accuracy owes to the seed, or a note that one seed cannot say."""
    seeds = ctx.metrics.get("seeds") or {}
    if seeds.get("k", 1) < 2:
        return [Block("note", "Retrained with one seed, so the spread across seeds is unknown "
                              "('tuning retrain --seeds K' measures it).")]
    lo, hi = seeds["ci95"]
    return [Block("table", header=["seeds", "mean accuracy", "std", "95% t-interval", "per seed"],
                  rows=[[seeds["k"], seeds["mean"], seeds["std"], f"{lo:.3f}-{hi:.3f}",
                         ", ".join(f"{a:.3f}" for a in seeds["accuracies"])]])]


def dataset_section(ctx: ReportContext) -> list[Block]:
    return dataset_blocks(Path(ctx.config.dataset), ctx.metrics)


def search_settings_blocks(ctx: ReportContext) -> list[Block]:
    """How the search ran: engine, budget, trials per state, time spent."""
    config = ctx.config
    compute = sum(float(t.user_attrs.get("seconds", 0.0)) for t in ctx.trials)
    blocks = [Block("table", header=["engine", "sampler", "pruner", "budget", "objective", "epochs/trial", "trials",
                                     "wall time", "training time"],
                    rows=[[config.engine, config.sampler, config.pruner, config.budget, config.objective,
                           config.epochs, trials_rule.describe_counts(trials_rule.state_counts(ctx.trials)),
                           _duration(_wall_seconds(ctx.trials)), _duration(compute)]])]
    if ctx.surplus:
        blocks.append(Block("note", f"{ctx.surplus} surplus trial(s) left out: started by a worker after the study "
                                    "already had its trials, they trained nothing."))
    return blocks


def best_trial_blocks(ctx: ReportContext) -> list[Block]:
    """The best trial by the study's objective and the parameters retrained for the test."""
    best = ctx.best
    retrained = ctx.metrics.get("trial")
    pick = ctx.metrics.get("pick") or "best"
    other = ""
    if best and retrained is not None and retrained != best.number:
        other = (f" The final model is trial #{retrained} instead (tuning retrain --pick {pick})." if pick != "best"
                 else f" The final model is trial #{retrained}, the best when it was retrained: 'tuning retrain' "
                      f"would test #{best.number} now.")
    return [
        Block("p", f"Best trial #{best.number}: {ctx.config.objective} {_nan(trials_rule.quality(best)):.4g}.{other}"
              if best else
              "No trial completed."),
        Block("table", header=["parameter", "value (retrained for the test)"],
              rows=[[k, _label(v)] for k, v in ctx.metrics["params"].items()]),
    ]


def trials_table_blocks(ctx: ReportContext) -> list[Block]:
    """Every trial, best first by the objective, then those without a value."""
    objective, names = ctx.config.objective, ctx.names
    costs = ctx.config.objectives[1:]
    rows = [[t.number, trials_rule.state_name(t), _nan(trials_rule.quality(t)),
             *(trials_rule.objective_values(t, ctx.config.objectives)[c] for c in costs),
             t.user_attrs.get("stage", ""), t.user_attrs.get("epochs", ""), _duration(t.user_attrs.get("seconds", 0)),
             *(_label(t.params[n]) if n in t.params else "" for n in names), t.user_attrs.get("fail_reason", "")]
            for t in trials_rule.best_first(ctx.trials, objective)]
    return [Block("p", f"Trials, best first ({objective}):"),
            Block("table", header=["trial", "state", objective, *costs, "stage", "epochs", "time", *names, "reason"],
                  rows=rows)]


def axis_blocks(ctx: ReportContext) -> list[Block]:
    """Training vs validation curves per value of each parameter that varied."""
    varied = ctx.varied
    if not varied:
        return [Block("note", "No parameter varied across trials, so there are no per-parameter curves.")]
    figures = []
    for axis in varied:
        groups = axis_groups(ctx.trials, axis, staged=ctx.config.engine == "staged")
        if groups:
            figures.append(_figure(partial(plot_axis_curves, axis, groups, ctx.out / f"curves_{axis}.png"),
                                   f"Training vs validation curves per {axis}", f"The curves per {axis}"))
    return figures


def best_curves_blocks(ctx: ReportContext) -> list[Block]:
    best = ctx.best
    if best is None or not best.user_attrs.get("history"):
        return []
    return [_figure(partial(plot_curves, best.user_attrs["history"], f"Best trial #{best.number}",
                            ctx.out / "best_trial_curves.png"),
                    f"Best trial #{best.number}: curves", "The best trial's curves")]


def final_curves_blocks(ctx: ReportContext) -> list[Block]:
    fit_on = ctx.metrics.get("fit_on", "train")
    return [_figure(partial(plot_curves, ctx.metrics["history"], f"Final model (fitted on {fit_on})",
                            ctx.out / "final_curves.png"),
                    "Final model: training curves", "The final model's curves")]


def history_blocks(ctx: ReportContext) -> list[Block]:
    complete = ctx.complete
    if len(complete) < 2:
        return [Block("note", f"Optimisation history needs at least two complete trials; this study has "
                              f"{len(complete)}.")]
    return [_figure(partial(plot_history, [(t.number, _nan(trials_rule.quality(t))) for t in complete],
                            ctx.out / "history.png",
                            objective_name=ctx.config.objective),
                    "Optimisation history", "The optimisation history")]


def importance_blocks(ctx: ReportContext) -> list[Block]:
    complete = ctx.complete
    if len(complete) < 3 or not ctx.varied:
        return [Block("note", f"Parameter importances need at least 3 complete trials over a varied "
                              f"parameter; this study has {len(complete)} complete trial(s), too few to say "
                              "which parameter mattered.")]
    try:
        importances, method = _importances(ctx.study)
    except Exception as exc:  # noqa: BLE001 - optuna.importance raises many kinds; the report notes the failure and goes on
        return [Block("note", f"Parameter importances could not be computed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160]}")]
    return [_figure(partial(plot_importances, importances, ctx.out / "importances.png"),
                    f"Parameter importances ({method}, optuna.importance; {len(complete)} trials: "
                    "indicative only with few trials)", "The parameter importances")]


def parallel_blocks(ctx: ReportContext) -> list[Block]:
    complete, varied = ctx.complete, ctx.varied
    if len(complete) < 2 or not varied:
        return [Block("note", "Parallel coordinates need at least two complete trials over a varied parameter.")]
    return [_figure(partial(plot_parallel, complete, varied, ctx.config.objective, ctx.out / "parallel.png"),
                    "Parallel coordinates of the complete trials", "The parallel-coordinates plot")]


def pareto_blocks(ctx: ReportContext) -> list[Block]:
    """A multi-objective study's front: the figure, its trials with every objective, and which was retrained;
    nothing for a study of one objective."""
    objectives = ctx.config.objectives
    if not objectives:
        return []
    front = trials_rule.pareto_front(ctx.trials, objectives)
    shown = ", ".join(f"{o} ({'min' if trials_rule.direction(o) == 'minimize' else 'max'}imised)" for o in objectives)
    blocks = [Block("p", f"Pareto front: {len(front)} of {len(ctx.complete)} complete trials, each one not "
                         f"dominated by another (no other is as good in every objective and better in one) in "
                         f"{shown}. Pruning is off: Optuna does not prune multi-objective studies."),
              Block("note", "Costs are measured once per complete trial on its network as shipped (float32, "
                            "no augmentation): size_mb = parameters x 4 bytes; latency_ms = median time of one "
                            "image through its TFLite conversion (ONNX under PyTorch) on the search machine's CPU, "
                            "one thread.")]
    if not front:
        return blocks
    blocks.append(_figure(partial(plot_pareto, ctx.complete, front, objectives, ctx.out / "pareto.png"),
                          "Pareto front (red) among the complete trials (grey)", "The Pareto front"))
    retrained = ctx.metrics.get("trial")
    names = ctx.varied
    rows = [[t.number, *trials_rule.objective_values(t, objectives).values(),
             *(_label(t.params[n]) if n in t.params else "" for n in names),
             "yes" if t.number == retrained else ""] for t in front]
    blocks.append(Block("table", header=["trial", *objectives, *names, "retrained"], rows=rows))
    pick = ctx.metrics.get("pick", "best")
    blocks.append(Block("p", f"Retrained: trial #{retrained} (--pick {pick}). Another trade-off: 'tuning retrain "
                             "--pick trial:N', '--pick best:" + objectives[1] + "', or '--pick smallest-within:0.01' "
                             "(the cheapest model within 0.01 of the best quality)." if retrained is not None else
                        "Which trial was retrained is not recorded (final/metrics.json has no 'trial')."))
    return blocks


def test_blocks(ctx: ReportContext) -> list[Block]:
    """Per-class metrics, the confusion matrix and a grid of right and wrong test images."""
    m = ctx.metrics
    return [
        Block("table", header=["class", "precision", "recall", "F1", "ROC-AUC (one-vs-rest)", "support"],
              rows=[[c, v["precision"], v["recall"], v["f1"], _nan((m.get("roc_auc_per_class") or {}).get(c)),
                     v["support"]] for c, v in m["per_class"].items()]),
        _figure(partial(plot_confusion, m["confusion_matrix"], m["classes"], ctx.out / "confusion.png"),
                "Confusion matrix on the test split", "The confusion matrix"),
        _test_grid(ctx.folder, Path(ctx.config.dataset), ctx.out),
    ]


def architecture_blocks(ctx: ReportContext) -> list[Block]:
    path = study_paths(ctx.folder)["final"] / "architecture.json"
    if not path.exists():
        return [Block("note", "The final model's structure was not recorded (final/architecture.json).")]
    layers = _io.read_json(path)
    return [_figure(partial(plot_architecture, layers, f"{ctx.config.model} (final model)",
                            ctx.out / "architecture.png"),
                    "Structure of the final model", "The model structure")]


def _ensemble(ctx: ReportContext) -> dict[str, Any] | None:
    """``final/ensemble/metrics.json`` (``tuning retrain --ensemble/--tta``), or None when there is none."""
    from tuning.evaluate import ENSEMBLE

    path = study_paths(ctx.folder)["final"] / ENSEMBLE / "metrics.json"
    return _io.read_json(path) if path.exists() else None


def shipped_blocks(ctx: ReportContext) -> list[Block]:
    """Under the headline: which model ships, when an ensemble (or TTA) run made one."""
    from tuning.evaluate import shipped_model

    ensemble = _ensemble(ctx)
    if ensemble is None:
        return []
    if shipped_model(ctx.folder) == "single":
        return [Block("p", "Shipped model: the single model above (a plain retrain came after the ensemble run, "
                           "whose results the Ensemble section keeps).")]
    low, high = ensemble["accuracy_ci95"]
    return [Block("p", f"Shipped model: {_ensemble_name(ensemble)}, test accuracy {ensemble['accuracy']:.3f} "
                       f"(95% Wilson CI {low:.3f}-{high:.3f}); see the Ensemble section. The figures above and in "
                       "Test results are the single best model's, kept in final/.")]


def _ensemble_name(m: dict[str, Any]) -> str:
    flip = " with flip test-time augmentation" if m["tta"] == "flip" else ""
    return (f"the ensemble of {len(m['members'])} models{flip}" if m["kind"] == "ensemble"
            else f"the best trial's model{flip}")


def ensemble_blocks(ctx: ReportContext) -> list[Block]:
    """Each member (trial, what sets it apart, test accuracy and balanced accuracy with intervals), the
    ensemble itself, and McNemar's test of the best single model against it on the same test images."""
    m = _ensemble(ctx)
    if m is None:
        return []

    def ci(pair: list[float]) -> str:
        return f"{pair[0]:.3f}-{pair[1]:.3f}"

    flip = m["tta"] == "flip"
    rows = [[f"trial #{r['trial']}" + (" (best)" if i == 0 else ""), r["value"],
             ", ".join(f"{k}={_label(v)}" for k, v in r["differs"].items()) or "-", r["accuracy"],
             ci(r["accuracy_ci95"]), r["balanced_accuracy"], ci(r["balanced_accuracy_ci95"]),
             *([r["accuracy_tta"]] if flip else [])] for i, r in enumerate(m["members"])]
    rows.append([_ensemble_name(m), "-", "-", m["accuracy"], ci(m["accuracy_ci95"]), m["balanced_accuracy"],
                 ci(m["balanced_accuracy_ci95"]), *([m["accuracy"]] if flip else [])])
    t = m["mcnemar"]
    return [
        Block("p", f"{_ensemble_name(m)[0].upper()}{_ensemble_name(m)[1:]}: the mean of the members' probabilities"
                   + (", each image's averaged with its mirror's" if flip else "")
                   + f", tested once on the test split (members retrained on {m['fit_on']}, seed {m['seed']})."),
        Block("table", header=["model", ctx.config.objective, "differs in", "test accuracy", "95% Wilson CI",
                               "balanced accuracy", "95% posterior interval", *(["with flip"] if flip else [])],
              rows=rows),
        Block("p", f"McNemar, best single model (trial #{t['single_trial']}, accuracy {t['single_accuracy']:.3f}) "
                   f"vs {_ensemble_name(m)} ({m['accuracy']:.3f}) on {t['n']} test images: both right "
                   f"{t['both_right']}, only the single model right {t['only_single']}, only the ensemble right "
                   f"{t['only_ensemble']}, both wrong {t['both_wrong']}; exact two-sided p = {t['p_exact']:.4g} "
                   f"(mid-p {t['p_mid']:.4g})."),
    ]


#: The report's sections in page order: a heading and the parts whose blocks it shows. A new piece of the
#: report is one function ``(ReportContext) -> list[Block]`` added here; a section with no blocks is left out.
SECTIONS: tuple[tuple[str, tuple[Part, ...]], ...] = (
    ("Result", (headline_blocks, headline_notes_blocks, seed_blocks, shipped_blocks)),
    ("Ensemble", (ensemble_blocks,)),
    ("Dataset", (dataset_section,)),
    ("Search", (search_settings_blocks, best_trial_blocks, trials_table_blocks)),
    ("Pareto front", (pareto_blocks,)),
    ("Search figures", (axis_blocks, best_curves_blocks, final_curves_blocks, history_blocks, importance_blocks,
                        parallel_blocks)),
    ("Test results", (test_blocks,)),
    ("Appendix: final model structure", (architecture_blocks,)),
)


def build_report(folder: Path) -> Path:
    """Write ``report/index.html`` (self-contained), ``report/report.md`` and the figures as PNG files.

    Built from the study folder and its storage alone, so it can be rebuilt at any time; every figure that
    cannot be drawn is replaced by a sentence saying why.
    """
    ctx = load_context(folder)
    sections = [(heading, [block for part in parts for block in part(ctx)]) for heading, parts in SECTIONS]
    sections = [(heading, blocks) for heading, blocks in sections if blocks]  # e.g. no ensemble, one objective
    title = f"Study {ctx.config.name}: {ctx.config.model}"
    _io.write_text(ctx.out / "report.md", _markdown(title, sections, ctx.out))
    _io.write_text(ctx.out / "index.html", _html(title, sections))
    return ctx.out / "index.html"


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _test_grid(folder: Path, dataset: Path, out: Path, *, per_kind: int = 8) -> Block:
    """Up to ``per_kind`` wrong and right test predictions, from the raw files in predictions.csv."""
    from tuning.evaluate import read_predictions

    try:
        rows = read_predictions(folder)
    except StudyError as exc:
        return Block("note", str(exc))
    wrong = [r for r in rows if r["true"] != r["predicted"]][:per_kind]
    right = [r for r in rows if r["true"] == r["predicted"]][: 2 * per_kind - len(wrong)]
    items = [(dataset / r["file"], r["true"], r["predicted"]) for r in wrong + right]
    if not items:
        return Block("note", "The test split is empty, so there are no test images to show.")
    return _figure(lambda: plot_test_images(items, out / "test_images.png"),
                   f"Test images: {len(wrong)} wrong, {len(right)} right", "The test image grid")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(alt)
    image = f'<img alt="{caption}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}figure{display:inline-block;margin:0.5em}img{max-width:100%}.note{color:#666}"""


def _html(title: str, sections: list[tuple[str, list[Block]]]) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for name, blocks in sections:
        parts.append(f"<h2>{html.escape(name)}</h2>")
        for b in blocks:
            if b.kind == "table":
                parts.append(_table(b.header, b.rows))
            elif b.kind == "figure" and b.path is not None:
                parts.append(_img(b.path, b.text))
            else:
                cls = ' class="note"' if b.kind == "note" else ""
                parts.append(f"<p{cls}>{html.escape(b.text)}</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def _markdown(title: str, sections: list[tuple[str, list[Block]]], out: Path) -> str:
    def cell(value: Any) -> str:
        return _fmt(value).replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", ""]
    for name, blocks in sections:
        lines += [f"## {name}", ""]
        for b in blocks:
            if b.kind == "table":
                lines += ["| " + " | ".join(cell(h) for h in b.header) + " |",
                          "| " + " | ".join("---" for _ in b.header) + " |",
                          *("| " + " | ".join(cell(c) for c in row) + " |" for row in b.rows), ""]
            elif b.kind == "figure" and b.path is not None:
                lines += [f"![{b.text}]({b.path.relative_to(out).as_posix()})", ""]
            else:
                lines += [f"_{b.text}_" if b.kind == "note" else b.text, ""]
    return "\n".join(lines)
