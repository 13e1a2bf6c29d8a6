"""A fair, repeated engine benchmark: every engine replayed many times on one table of real training curves.

1. Table: every configuration of the AlexNet-style quick budget's discrete grid (learning rate x augmentation x
   dropout, the staged procedure's axes; the split fixed at 70/15/15, it is the protocol) is trained once for
   the full epoch budget on all posters (class weights), recording the per-epoch curves and the test accuracy
   of its best epoch (what retraining that configuration would ship). The method of tabular benchmarks such as
   HPOBench and LCBench: the expensive part runs once, and is resumable (``--work``/table.jsonl).
2. Replay: each engine (staged; Optuna random, TPE + median pruning, TPE + Hyperband, CMA-ES, GP when torch is
   installed; Keras Tuner Bayesian and Hyperband) runs through the toolkit's own engine code with ``train_trial``
   answered from the table (a trial of e epochs gets the first e epochs of the curve, exactly what training
   from the same seed for e epochs gives under a constant learning rate), with ``--seeds`` seeds each.
3. Result: best-so-far validation accuracy (complete trials, as retraining picks) and the incumbent's test
   accuracy against cumulative training epochs (pruned trials count the epochs they ran), median and IQR over
   seeds; the epochs each engine needs to reach the staged procedure's final quality, as a ratio; and the
   pruning calibration: how early a curve ranks configurations as their final value does (Spearman).

    .venv/bin/python benchmarks/engines_study.py                  # table (resumable) + replay + docs/engines-study.md
    .venv/bin/python benchmarks/engines_study.py --tiny           # smoke run on generated images: minutes
    .venv/bin/python benchmarks/engines_study.py --replay-only    # from docs/engines-study/table.json

The posters are copied once under ``--work`` (outside the repository); the stored table holds accuracies only.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

AXES = ("learning_rate", "augmentation", "dropout")
GOAL = 1 / 3
#: label -> (engine, sampler, pruner, trials as a multiple of the staged plan's size)
ENGINES: dict[str, tuple[str, str, str, float]] = {
    "staged": ("staged", "one-factor-at-a-time", "none", 1.0),
    "random": ("optuna", "random", "none", 2.0),
    "tpe-median": ("optuna", "tpe", "median", 2.0),
    "tpe-median-early": ("optuna", "tpe", "median", 2.0),
    "tpe-hyperband": ("optuna", "tpe", "hyperband", 4.0),
    "cmaes": ("optuna", "cmaes", "none", 2.0),
    "gp": ("optuna", "gp", "none", 2.0),
    "kt-bayesian": ("kerastuner", "bayesian", "none", 2.0),
    "kt-hyperband": ("kerastuner", "hyperband", "none", 4.0),
}


#: Engines replayed with another pruner than the toolkit's default for their --pruner: the median pruner as it
#: was before its calibration (prunes from the 3rd trial on, after epoch 1), to measure what the change buys.
PRUNERS: dict[str, Callable[[int], Any]] = {
    "tpe-median-early": lambda epochs: _median(2, 1),
}


def _median(startup: int, warmup: int) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)


# ---------------------------------------------------------------------------------------------- the table
#: The smoke run's smaller grid (the real run trains the declared grids).
TINY_GRID: dict[str, tuple[Any, ...]] = {"learning_rate": (1e-2, 1e-3, 1e-4), "augmentation": ("none", "small"),
                                         "dropout": (0.3,)}


def grid_space(space: Any, *, tiny: bool) -> Any:
    """The quick budget's space searching the staged axes only (with --tiny, on a smaller grid)."""
    space = space.with_search(list(AXES))
    if not tiny:
        return space
    params = dict(space.params)
    for name, values in TINY_GRID.items():
        field = "values" if hasattr(params[name], "values") else "grid"
        params[name] = replace(params[name], **{field: values})
    return replace(space, params=params)


def grid_points(space: Any) -> list[dict[str, Any]]:
    values = {}
    for name in AXES:
        vals = list(space.params[name].grid_values())
        if space.base[name] not in vals:
            vals.insert(0, space.base[name])  # the study's starting point is a configuration too
        values[name] = vals
    return [dict(zip(AXES, combo)) for combo in itertools.product(*(values[a] for a in AXES))]


def key_of(point: Mapping[str, Any]) -> str:
    return json.dumps({a: point[a] for a in AXES}, sort_keys=True)


def build_table(data: Any, space: Any, *, epochs: int, path: Path, limit: int | None) -> dict[str, dict[str, Any]]:
    """Train every grid point once (seed 0), appending one JSON line per point; finished points are kept."""
    from tuning.train import train_trial

    table: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            table[row["key"]] = row
    points = [p for p in grid_points(space) if key_of(p) not in table][: limit if limit is not None else None]
    classes = None
    for point in points:
        params = space.resolve(point)
        start = time.perf_counter()
        result = train_trial("alexnet", params, data, space, epochs=epochs, seed=0, keep_model=True)
        test = {"accuracy": math.nan, "balanced_accuracy": math.nan}
        if result.model is not None:
            x, y, _ = data.split(int(params["image_size"]), str(params["split"]))["test"]
            pred = np.argmax(result.model.predict(x, verbose=0, batch_size=256), axis=1)
            classes = classes or len(data.classes)
            recalls = [float(np.mean(pred[y == c] == c)) for c in range(classes) if np.any(y == c)]
            test = {"accuracy": float(np.mean(pred == y)), "balanced_accuracy": float(np.mean(recalls))}
        row = {"key": key_of(point), "params": {a: point[a] for a in AXES}, "status": result.status,
               "history": result.history, "seconds": time.perf_counter() - start, "test": test}
        table[row["key"]] = row
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        best = max(result.history.get("val_accuracy", [math.nan]))
        print(f"  table {len(table):>3}/{len(grid_points(space))} {row['key']} val {best:.3f} "
              f"test {test['accuracy']:.3f} ({row['seconds']:.0f}s)", flush=True)
        del result
    return table


# ---------------------------------------------------------------------------------------------- replay
class TableTrain:
    """``train_trial`` answered from the table: the first ``epochs`` epochs of the point's recorded curve.

    Continuous suggestions (TPE, CMA-ES, GP draw learning rates and dropouts between grid values) are snapped
    to the nearest grid value (log scale for the learning rate), so every engine searches the same landscape.
    """

    def __init__(self, table: Mapping[str, dict[str, Any]], space: Any) -> None:
        self.table = table
        self.grid = {a: sorted({p[a] for p in grid_points(space)}, key=str) for a in AXES}
        self.calls: list[tuple[str, int, str]] = []  # (key, epochs run, status) in call order

    def snap(self, params: Mapping[str, Any]) -> str:
        point = {}
        for axis in AXES:
            value = params[axis]
            if isinstance(value, str):
                point[axis] = value
                continue
            if axis == "learning_rate":
                point[axis] = min(self.grid[axis], key=lambda g: abs(math.log10(g) - math.log10(float(value))))
            else:
                point[axis] = min(self.grid[axis], key=lambda g: abs(float(g) - float(value)))
        return key_of(point)

    def __call__(self, model_name: str, params: Mapping[str, Any], data: Any, space: Any, *, epochs: int,
                 seed: int, hooks: Sequence[Callable[[int, Mapping[str, float]], bool]] = (),
                 keep_model: bool = False, objective: str = "val_accuracy") -> Any:
        from tuning.train import TrialResult

        key = self.snap(params)
        row = self.table[key]
        full = row["history"]
        per_epoch = row["seconds"] / max(1, len(full.get("loss", [])))
        history: dict[str, list[float]] = {k: [] for k in full}
        for epoch in range(min(epochs, len(full.get("loss", [])))):
            logs = {k: v[epoch] for k, v in full.items()}
            for k, v in logs.items():
                history[k].append(v)
            if any(hook(epoch, logs) for hook in hooks):
                self.calls.append((key, epoch + 1, "pruned"))
                return TrialResult(dict(params), "pruned", history, per_epoch * (epoch + 1))
        self.calls.append((key, len(history.get("loss", [])), "complete"))
        return TrialResult(dict(params), "complete", history, per_epoch * len(history.get("loss", [])),
                           objective_name=objective)


@contextlib.contextmanager
def patched(fake: TableTrain, pruner: Callable[[int], Any] | None) -> Iterator[None]:
    import tuning.engines._common as common
    import tuning.engines.optuna_engine as optuna_engine
    import tuning.train as train

    saved = common.train_trial, train.check_trainable, optuna_engine.make_pruner
    common.train_trial, train.check_trainable = fake, lambda *a, **k: None
    if pruner is not None:
        optuna_engine.make_pruner = lambda name, epochs: pruner(epochs)
    try:
        yield
    finally:
        common.train_trial, train.check_trainable, optuna_engine.make_pruner = saved


def replay(label: str, table: Mapping[str, dict[str, Any]], space: Any, data: Any, *, epochs: int, seed: int,
           plan: int, work: Path) -> tuple[list[tuple[int, float, float]], str]:
    """One engine run on the table: (cumulative epochs, best val so far, incumbent's test) after each trial,
    and the final incumbent's table key."""
    from tuning.engines import run_engine
    from tuning.study import StudyConfig, default_storage

    engine, sampler, pruner, factor = ENGINES[label]
    folder = work / f"{label}-{seed}"
    config = StudyConfig(name=folder.name, model="alexnet", dataset=str(data.dataset), engine=engine,
                         sampler=sampler, pruner=pruner, budget="quick", trials=max(1, round(plan * factor)),
                         epochs=epochs, seed=seed, storage=default_storage(folder), space=space.to_dict())
    folder.mkdir(parents=True, exist_ok=True)
    fake = TableTrain(table, space)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # CMA-ES warns on every categorical draw
    with patched(fake, PRUNERS.get(label)), open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        run_engine(config, space, data, folder, on_event=lambda e: None)
    trace, spent, best, test, incumbent = [], 0, -math.inf, math.nan, ""
    for key, ran, status in fake.calls:
        spent += ran
        value = max(table[key]["history"]["val_accuracy"][:ran])
        if status == "complete" and value > best:
            best, test, incumbent = value, table[key]["test"]["accuracy"], key
        trace.append((spent, best, test))
    return trace, incumbent


def confirm(keys: Sequence[str], table: Mapping[str, dict[str, Any]], space: Any, data: Any, *, epochs: int,
            seed: int) -> list[dict[str, Any]]:
    """The engines' final incumbents trained again for real with another seed: does the table's ranking hold?"""
    import json as _json

    from tuning.train import train_trial

    out = []
    for key in keys:
        params = space.resolve(_json.loads(key))
        result = train_trial("alexnet", params, data, space, epochs=epochs, seed=seed, keep_model=True)
        x, y, _ = data.split(int(params["image_size"]), str(params["split"]))["test"]
        pred = np.argmax(result.model.predict(x, verbose=0, batch_size=256), axis=1) if result.model else None
        out.append({"key": key, "table_val": max(table[key]["history"]["val_accuracy"]),
                    "table_test": table[key]["test"]["accuracy"],
                    "val": max(result.history.get("val_accuracy", [math.nan])),
                    "test": float(np.mean(pred == y)) if pred is not None else math.nan})
        print(f"  confirmed {key}: val {out[-1]['val']:.3f} test {out[-1]['test']:.3f}", flush=True)
    return out


def reach(trace: list[tuple[int, float, float]], target: float) -> int | None:
    """Cumulative epochs at which the best-so-far first reaches ``target`` (None: never)."""
    return next((spent for spent, best, _ in trace if best >= target - 1e-12), None)


# ---------------------------------------------------------------------------------------------- analysis
def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_agreement(table: Mapping[str, dict[str, Any]], epochs: int, *, best_so_far: bool = False) -> list[float]:
    """Spearman between each epoch's validation accuracy (or the best so far, what the pruner sees) and the
    configuration's final (best-epoch) one."""
    rows = [r for r in table.values() if len(r["history"].get("val_accuracy", [])) == epochs]
    final = [max(r["history"]["val_accuracy"]) for r in rows]

    def at(r: dict[str, Any], e: int) -> float:
        curve = r["history"]["val_accuracy"]
        return max(curve[: e + 1]) if best_so_far else curve[e]

    return [spearman([at(r, e) for r in rows], final) for e in range(epochs)]


def curve_on_grid(trace: list[tuple[int, float, float]], grid: np.ndarray, index: int) -> np.ndarray:
    out = np.full(len(grid), np.nan)
    for spent, *values in trace:
        out[grid >= spent] = values[index - 1]
    return out


def figure(results: dict[str, list[list[tuple[int, float, float]]]], staged_best: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = max(t[-1][0] for runs in results.values() for t in runs if t)
    grid = np.arange(1, top + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, runs in results.items():
        for ax, index in zip(axes, (1, 2)):
            curves = np.array([curve_on_grid(t, grid, index) for t in runs])
            with warnings.catch_warnings():  # before a run's first complete trial its curve is NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(curves, axis=0)
                lo, hi = np.nanpercentile(curves, 25, axis=0), np.nanpercentile(curves, 75, axis=0)
            (line,) = ax.plot(grid, med, label=label, lw=1.5)
            if len(runs) > 1:
                ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.15)
    axes[0].axhline(staged_best, ls="--", color="k", lw=1, label="staged final")
    axes[0].set(xlabel="cumulative training epochs", ylabel="best validation accuracy so far",
                title="Search progress (median, IQR over seeds)")
    axes[1].set(xlabel="cumulative training epochs", ylabel="test accuracy of the incumbent",
                title="What retraining the incumbent would ship")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def prepare_data(a: argparse.Namespace, work: Path) -> Path:
    from tuning.data.prepare import prepare

    data = work / "data"
    if a.tiny:
        from tuning.data.demo import make_demo

        if not (data / "raw").exists():
            make_demo(data / "raw", per_class=40, size=48, seed=0)
    else:
        from poster_study import link_dataset

        link_dataset(a.posters, data)
    if not (data / "cache" / f"{a.size}px.npz").exists():
        prepare(data, size=a.size, seed=0, balance="weights")
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posters", type=Path, default=ROOT.parent / "shared" / "datasets" / "posters")
    p.add_argument("--work", type=Path, default=None, help="[runs/engines-study, or runs/engines-study-tiny]")
    p.add_argument("--seeds", type=int, default=7)
    p.add_argument("--epochs", type=int, default=None, help="epochs per configuration [the quick budget's; 2 tiny]")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="train at most this many new table rows, then stop")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "engines-study.md")
    p.add_argument("--tiny", action="store_true", help="smoke run: generated images, 2 epochs, 2 seeds")
    p.add_argument("--replay-only", action="store_true", help="use the table stored beside the doc")
    p.add_argument("--no-confirm", dest="confirm", action="store_false",
                   help="skip training the engines' winners again with another seed")
    a = p.parse_args()
    if a.tiny:
        a.seeds = min(a.seeds, 2)
        a.doc = Path(tempfile.mkdtemp()) / "engines-study.md"
    work = a.work or ROOT / "runs" / ("engines-study-tiny" if a.tiny else "engines-study")
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    from tuning import runtime
    from tuning.space import load_space
    from tuning.train import TrialData

    space = load_space("alexnet").with_budget("quick")[0]
    epochs = a.epochs or (2 if a.tiny else int(space.base["epochs"]))
    space = grid_space(space.with_base({"epochs": epochs, "image_size": a.size}), tiny=a.tiny)
    stored = a.doc.parent / "engines-study" / "table.json"
    settings = runtime.resolve(precision="auto")
    data = TrialData.for_space(prepare_data(a, work) if not a.replay_only else work / "data", space, seed=0)
    if a.replay_only:
        table = {r["key"]: r for r in json.loads(stored.read_text())}
    else:
        with runtime.applied(settings):
            table = build_table(data, space, epochs=epochs, path=work / "table.jsonl", limit=a.limit)
        if len(table) < len(grid_points(space)):
            print(f"table holds {len(table)} of {len(grid_points(space))} configurations; rerun to continue")
            return
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps([table[k] for k in sorted(table)], indent=None))
    table_seconds = sum(r["seconds"] for r in table.values())

    from tuning.engines.staged import plan_size

    plan = plan_size(space)
    labels = [label for label in a.engines.split(",") if label]
    if "gp" in labels:
        try:
            import torch  # noqa: F401  (Optuna's GPSampler needs it)
        except ImportError:
            labels.remove("gp")
            print("gp: skipped, Optuna's GPSampler needs torch (not installed here)")
    results: dict[str, list[list[tuple[int, float, float]]]] = {}
    incumbents: dict[str, list[str]] = {}
    replay_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for label in labels:
            seeds = [0] if label == "staged" else list(range(a.seeds))
            runs = [replay(label, table, space, data, epochs=epochs, seed=s, plan=plan, work=Path(tmp))
                    for s in seeds]
            results[label], incumbents[label] = [t for t, _ in runs], [k for _, k in runs]
            print(f"  replayed {label} x {len(seeds)}", flush=True)
    replay_seconds = time.perf_counter() - replay_start
    # the most frequent final incumbent of each engine, trained again for real with seed 1
    winners = sorted({max(set(keys), key=keys.count) for keys in incumbents.values() if any(keys)})
    with runtime.applied(settings):
        confirmed = confirm(winners, table, space, data, epochs=epochs, seed=1) if a.confirm else []
    write_doc(a, table, results, epochs=epochs, plan=plan, table_seconds=table_seconds,
              replay_seconds=replay_seconds, wall=time.perf_counter() - start, settings=settings,
              confirmed=confirmed)
    print(f"wrote {a.doc}")


def write_doc(a: argparse.Namespace, table: Mapping[str, dict[str, Any]],
              results: dict[str, list[list[tuple[int, float, float]]]], *, epochs: int, plan: int,
              table_seconds: float, replay_seconds: float, wall: float, settings: Mapping[str, Any],
              confirmed: Sequence[Mapping[str, Any]] = ()) -> None:
    staged = results["staged"][0]
    staged_best = staged[-1][1]
    staged_epochs = reach(staged, staged_best) or staged[-1][0]
    best_row = max(table.values(), key=lambda r: max(r["history"]["val_accuracy"]))
    fig = a.doc.parent / "engines-study" / "anytime.png"
    figure(results, staged_best, fig)
    lines = [
        "# Engines study: which search strategy to pick for which budget",
        "",
        f"Made by `benchmarks/engines_study.py{' --tiny' if a.tiny else ''}` (`make engines-study`): "
        f"{len(table)} configurations of the AlexNet-style quick budget ({a.size} px, width 0.25, {epochs} epochs; "
        f"learning rate x augmentation x dropout, split 70/15/15 fixed) trained once each on "
        f"{'generated demo images' if a.tiny else 'all 2,777 posters with class weights'} "
        f"({table_seconds / 60:.0f} min of training, {settings['precision']}, 2-core CPU), then every engine replayed "
        f"on that table through the toolkit's own engine code ({replay_seconds / 60:.1f} min"
        + ("; this file was rewritten from the stored table with `--replay-only`)." if a.replay_only else
           f"; whole run {wall / 60:.0f} min).") + " Objective: validation accuracy (the table predates the "
        "class-balanced metrics); the test column is the incumbent configuration's best-epoch model on the test split.",
        "",
        f"The staged procedure (the study's one-factor-at-a-time plan, {plan} trials) reaches its final validation "
        f"accuracy {staged_best:.3f} after {staged_epochs} epochs; the best configuration in the whole grid reaches "
        f"{max(best_row['history']['val_accuracy']):.3f} ({best_row['key']}).",
        "",
        "## Epochs to reach the staged procedure's final quality",
        "",
        f"Two ratios, median [IQR] over seeds (a seed that never reaches it within its budget counts as infinite): "
        f"against the epochs the staged procedure needed to first reach that quality ({staged_epochs}), and against "
        f"its whole plan ({staged[-1][0]} epochs: it cannot know it is done before it has walked every axis). "
        f"Goal: <= {GOAL:.2f}.",
        "",
        "| engine | trials | seeds | reached | epochs median [IQR] | ratio to staged's first reach | "
        "ratio to staged's plan | final best val (median) | incumbent test (median) |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | ---: | ---: |",
    ]
    plan_epochs = staged[-1][0]
    rows: dict[str, tuple[float, float, float]] = {}
    for label, runs in results.items():
        hits = [reach(t, staged_best) for t in runs]
        spent = [h if h is not None else math.inf for h in hits]
        lo, med, hi = quartiles(spent)
        rows[label] = (lo / staged_epochs, med / staged_epochs, hi / staged_epochs)
        lines.append(
            f"| {label} | {len(runs[0])} | {len(runs)} | {sum(h is not None for h in hits)}/{len(runs)} | "
            f"{_fmt(med)} [{_fmt(lo)}, {_fmt(hi)}] | {_fmt(rows[label][1], 2)} [{_fmt(rows[label][0], 2)}, "
            f"{_fmt(rows[label][2], 2)}] | {_fmt(med / plan_epochs, 2)} [{_fmt(lo / plan_epochs, 2)}, "
            f"{_fmt(hi / plan_epochs, 2)}] | {statistics.median(t[-1][1] for t in runs):.3f} | "
            f"{statistics.median(t[-1][2] for t in runs):.3f} |")
    agreement = rank_agreement(table, epochs)
    so_far = rank_agreement(table, epochs, best_so_far=True)
    enough = next((e + 1 for e, r in enumerate(so_far) if r >= 0.8), None)
    lines += [
        "",
        f"![best-so-far validation accuracy and incumbent test accuracy]({fig.relative_to(a.doc.parent).as_posix()})",
        "",
        "## Pruning: when does a curve rank configurations?",
        "",
        "Spearman correlation, over every configuration of the table, between its validation accuracy at epoch e "
        "(and the best so far up to e, which is what the toolkit's pruners now see) and its final (best-epoch) "
        "validation accuracy:",
        "",
        "| epoch | " + " | ".join(str(e + 1) for e in range(len(agreement))) + " |",
        "| --- | " + " | ".join("---:" for _ in agreement) + " |",
        "| that epoch | " + " | ".join(f"{r:.2f}" for r in agreement) + " |",
        "| best so far | " + " | ".join(f"{r:.2f}" for r in so_far) + " |",
        "",
        (f"The best so far ranks configurations as their final value does (>= 0.8) from epoch {enough} of {epochs} on; "
         "a single epoch's value never reliably does. Hence the median pruner's default: no trial judged before "
         "five have finished, nor before half its epochs, on the best value so far." if enough else
         "Rankings never agree at >= 0.8 within the budget."),
        "",
    ]
    if "tpe-median" in rows and "tpe-median-early" in rows:
        new, old = results["tpe-median"], results["tpe-median-early"]
        lines += [
            f"Replayed side by side: TPE with the calibrated median pruner reached the staged quality in "
            f"{sum(reach(t, staged_best) is not None for t in new)} of {len(new)} seeds (median ratio "
            f"{_fmt(rows['tpe-median'][1], 2)}, incumbent test {statistics.median(t[-1][2] for t in new):.3f}); with "
            f"the old one (from the 3rd trial, after epoch 1) in {sum(reach(t, staged_best) is not None for t in old)} "
            f"of {len(old)} (median ratio {_fmt(rows['tpe-median-early'][1], 2)}, incumbent test "
            f"{statistics.median(t[-1][2] for t in old):.3f}). Early pruning saves epochs when it guesses right and "
            "loses the good configuration for good when it does not.",
            "",
        ]
    lines += [
    ]
    if confirmed:
        lines += [
            "## The winners, trained again for real",
            "",
            "Each engine's most frequent final incumbent, trained again with seed 1 (the table is seed 0): "
            "validation and test accuracy of the best epoch. The ranking the engines searched is one training's; "
            "these rows show how much of it a second training keeps.",
            "",
            "| configuration | table val | seed-1 val | table test | seed-1 test |",
            "| --- | ---: | ---: | ---: | ---: |",
            *(f"| {c['key']} | {c['table_val']:.3f} | {c['val']:.3f} | {c['table_test']:.3f} | {c['test']:.3f} |"
              for c in confirmed),
            "",
        ]
    lines += [
        "## What to pick",
        "",
    ]
    lines += advice(rows, results, staged_best)
    a.doc.parent.mkdir(parents=True, exist_ok=True)
    a.doc.write_text("\n".join(lines) + "\n", encoding="utf-8")


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """25th, 50th and 75th percentiles (linear interpolation, as numpy's default); a quantile that touches a
    run that never reached the target (inf) is inf."""
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        pos = q * (n - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        if math.isinf(ordered[lo]) or math.isinf(ordered[hi]):
            return math.inf
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return at(0.25), at(0.5), at(0.75)


def _fmt(value: float, digits: int = 0) -> str:
    return "never" if math.isinf(value) else f"{value:.{digits}f}"


def advice(rows: Mapping[str, tuple[float, float, float]], results: Mapping[str, Any], staged_best: float) -> list[str]:
    """Plain sentences from the measured ratios (nothing here is written by hand)."""
    ranked = sorted((r[1], label) for label, r in rows.items() if label != "staged")
    out = []
    winners = [label for ratio, label in ranked if ratio <= GOAL]
    if winners:
        out.append(f"- Meets the 1/3 goal (median): {', '.join(winners)}.")
    else:
        best_ratio, best_label = ranked[0] if ranked else (math.inf, "-")
        out.append(f"- No engine meets the 1/3 goal here; the fastest to the staged quality is {best_label} "
                   f"(median ratio {_fmt(best_ratio, 2)}).")
    beat = [label for label, runs in results.items()
            if label != "staged" and statistics.median(t[-1][1] for t in runs) > staged_best + 1e-12]
    if beat:
        out.append(f"- Ends above the staged procedure's quality (median over seeds): {', '.join(beat)}.")
    out.append("- Small budgets (about the staged plan's epochs): take the engine with the lowest ratio above; "
               "larger budgets: the one with the highest final median. The ratios are from one dataset and one "
               "model; they are evidence for this kind of problem, not a law.")
    return out


if __name__ == "__main__":
    main()
