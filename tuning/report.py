"""The study report: ``runs/<study>/report/index.html`` (self-contained) with the figures as PNG files.

It is built from the study's folder and its Optuna storage alone, so it can be regenerated at any time.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from tuning import _io
from tuning.errors import StudyError
from tuning.study import read_config, study_paths


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


def plot_history(values: list[tuple[int, float]], path: Path) -> Path:
    """Objective per finished trial and the best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    numbers = [n for n, _ in values]
    objective = [v for _, v in values]
    best = [max(objective[: i + 1]) for i in range(len(objective))]
    ax.plot(numbers, objective, "o", label="trial")
    ax.step(numbers, best, where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
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


def build_report(folder: Path) -> Path:
    """Write ``report/index.html`` and its figures; sections that cannot be computed say why."""
    from tuning.engines.optuna_engine import load_study

    folder = Path(folder)
    config = read_config(folder)
    paths = study_paths(folder)
    out = paths["report"]
    metrics_path = paths["final"] / "metrics.json"
    if not metrics_path.exists():
        raise StudyError(f"{folder}: no final/metrics.json yet; the search must finish before its report")
    metrics = _io.read_json(metrics_path)
    study = load_study(config)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    figures: list[str] = []
    sections: list[str] = []

    best = max(complete, key=lambda t: t.value) if complete else None
    if best is not None and best.user_attrs.get("history"):
        figures.append(_img(plot_curves(best.user_attrs["history"], f"Best trial #{best.number}",
                                        out / "best_trial_curves.png"), f"Best trial #{best.number}: curves"))
    figures.append(_img(plot_curves(metrics["history"], "Final model (retrained)", out / "final_curves.png"),
                        "Final model: training curves"))
    figures.append(_img(plot_confusion(metrics["confusion_matrix"], metrics["classes"], out / "confusion.png"),
                        "Confusion matrix on the test split"))
    if (paths["final"] / "architecture.json").exists():
        layers = _io.read_json(paths["final"] / "architecture.json")
        appendix = _img(plot_architecture(layers, f"{config.model} (final model)", out / "architecture.png"),
                        "Appendix: structure of the final model")
    else:
        appendix = '<p class="note">The final model\'s structure was not recorded (final/architecture.json).</p>'
    if len(complete) >= 2:
        figures.append(_img(plot_history([(t.number, t.value) for t in complete], out / "history.png"),
                            "Optimisation history"))
    else:
        sections.append('<p class="note">Optimisation history needs at least two complete trials.</p>')

    low, high = metrics["accuracy_ci95"]
    names = sorted({k for t in trials for k in t.params})
    trial_rows = sorted(trials, key=lambda t: -(t.value if t.value is not None and not math.isnan(t.value) else -1))
    rows = [[t.number, t.state.name.lower(), t.value if t.value is not None else math.nan,
             t.user_attrs.get("epochs", ""), *(t.params.get(n, "") for n in names),
             t.user_attrs.get("fail_reason", "")] for t in trial_rows]
    body = [
        f"<h1>Study {html.escape(config.name)}: {html.escape(config.model)}</h1>",
        f"<p>Test accuracy <b>{metrics['accuracy']:.3f}</b> (95% Wilson CI {low:.3f}-{high:.3f}, "
        f"n={metrics['n']}), balanced accuracy {metrics['balanced_accuracy']:.3f}.</p>",
        "<h2>Dataset</h2>",
        _table(["dataset", "classes", "train", "val", "test", "image size"],
               [[config.dataset, ", ".join(metrics["classes"]), metrics["split_sizes"]["train"],
                 metrics["split_sizes"]["val"], metrics["split_sizes"]["test"],
                 f"{metrics['params']['image_size']} px"]]),
        f'<p class="note">Split {html.escape(str(metrics["params"]["split"]))}; the test share is held at the '
        "largest any searched split uses, so no trial ever trained or validated on a test image.</p>",
        "<h2>Search</h2>",
        _table(["engine", "sampler", "pruner", "budget", "epochs/trial", "trials"],
               [[config.engine, config.sampler, config.pruner, config.budget, config.epochs,
                 ", ".join(f"{n} {s}" for s, n in sorted(states.items()))]]),
        "<h3>Best parameters (retrained for the test)</h3>",
        _table(["parameter", "value"], [[k, v] for k, v in metrics["params"].items()]),
        "<h3>Trials, best first</h3>",
        _table(["trial", "state", "val accuracy", "epochs", *names, "reason"], rows),
        "<h2>Test results</h2>",
        _table(["class", "precision", "recall", "F1", "support"],
               [[c, v["precision"], v["recall"], v["f1"], v["support"]] for c, v in metrics["per_class"].items()]),
        "<h2>Figures</h2>", *figures, *sections,
        "<h2>Appendix: final model structure</h2>", appendix,
    ]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Study {html.escape(config.name)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    _io.write_text(out / "index.html", page)
    return out / "index.html"
