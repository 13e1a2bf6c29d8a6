"""Recipes on the posters: the study's recipe against the modern one, class weights against undersampling,
and the best single model against a top-3 ensemble (with and without flip test-time augmentation).

For each model (alexnet, vgg16), the toolkit's default quick search (``tuning search --budget quick``, its default
engine, ``--seed``) on ../shared/datasets/posters at 64 px:
  * ``study``: all 2,777 posters prepared with ``--balance weights`` (the objective is then balanced accuracy);
  * ``modern``: the same data and search with ``--preset modern``;
  * ``undersample``: the study recipe on the posters left after setting the ``study`` run's test images aside,
    prepared with ``--balance undersample`` (about 732 images: the smallest class's size per class);
  * ``ensemble-3`` / ``ensemble-3+tta``: the top three trials of whichever of study/modern scored higher on
    validation (never on test), retrained and averaged (``tuning retrain --ensemble 3 [--tta flip]``).
Every row is tested on the same images: the ``study`` run's test split (natural class shares), the undersampled
model through its exported ``.keras`` file. Test accuracy with its Wilson interval, balanced accuracy with a
its posterior interval, McNemar (exact) against the study recipe on the same images.
Writes ``docs/recipes.md`` (and ``docs/recipes/table.json``):

    .venv/bin/python benchmarks/recipes.py                  # the CPU run (alexnet and vgg16)
    .venv/bin/python benchmarks/recipes.py --models alexnet # one architecture
    .venv/bin/python benchmarks/recipes.py --tiny           # smoke run on generated images, says so in the doc

A rerun reuses every study that already has ``final/metrics.json``. The posters are copied to ``--work``
(outside the repository, never into it).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from poster_study import balanced, link_dataset, tuning  # noqa: E402

SIZE = 64
SEARCHES = {"study": [], "modern": ["--preset", "modern"]}  # label -> extra search options on the weights data
ENSEMBLES = {"ensemble-3": ["--ensemble", "3"], "ensemble-3+tta": ["--ensemble", "3", "--tta", "flip"]}


def prepared(data: Path, *, balance: str, seed: int) -> Path:
    from tuning.data.prepare import prepare

    if not (data / "cache" / f"{SIZE}px.npz").exists():
        prepare(data, size=SIZE, seed=seed, balance=balance)
    return data


def source_folder(a: argparse.Namespace, work: Path) -> Path:
    """The posters, or generated unequal classes for the smoke run."""
    if not a.tiny:
        return a.posters
    from tuning.data.demo import make_demo

    src = work / "demo-src"
    if not src.exists():
        make_demo(src, per_class=60, size=48, seed=0)
        small = sorted((src / sorted(p.name for p in src.iterdir())[-1]).iterdir())
        for extra in small[20:]:  # one class a third of the others, as Animation is among the posters
            extra.unlink()
    return src


def search(label: str, model: str, data: Path, extra: list[str], a: argparse.Namespace, work: Path) -> Path:
    folder = work / "studies" / f"{model}-{label}"
    if (folder / "final" / "metrics.json").exists():
        print(f"   {folder.name}: finished earlier; reusing it", flush=True)
        return folder
    args = ["search", "--model", model, "--data", str(data), "--budget", "quick", "--seed", str(a.seed),
            "--study", str(folder), *extra]
    if a.tiny:
        args += ["--trials", "3", "--epochs", "2"]
    tuning(args, work / "logs" / f"{folder.name}.log")
    return folder


def predictions(path: Path) -> dict[str, tuple[str, str]]:
    """file -> (true, predicted) from a retrain's predictions.csv."""
    with open(path, newline="") as fh:
        return {r["file"]: (r["true"], r["predicted"]) for r in csv.DictReader(fh)}


def undersampled_data(source: Path, held_out: set[str], work: Path, seed: int) -> Path:
    """The source images minus the held-out test images, imported and undersampled."""
    from tuning.data.importer import import_folder

    data = work / "data-undersample"
    if not (data / "manifest.csv").exists():
        src = work / "undersample-src"
        for cls_dir in sorted(p for p in source.iterdir() if p.is_dir()):
            for f in sorted(cls_dir.rglob("*")):
                rel = f.relative_to(source).as_posix()
                if f.is_file() and f"raw/{rel}" not in held_out:
                    (src / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, src / rel)
        import_folder(src, data)
    return prepared(data, balance="undersample", seed=seed)


def predict_on(folder: Path, files: list[str], dataset: Path, work: Path) -> dict[str, str]:
    """The study's exported model (``tuning search`` writes export/model.keras) on other images: file -> class."""
    from tuning.inference import predict

    if not (folder / "export" / "model.keras").exists():
        tuning(["export", "--study", str(folder), "--format", "keras"], work / "logs" / f"{folder.name}.log")
    result = predict(folder / "export" / "model.keras", [dataset / f for f in files])
    return {f: r["top"][0]["class"] for f, r in zip(files, result.rows, strict=True)}


def ensemble(source: Path, label: str, extra: list[str], work: Path) -> dict[str, tuple[str, str]]:
    """``tuning retrain --ensemble`` on a copy of the study (each row keeps its own final/ensemble/)."""
    folder = work / "studies" / f"{source.name}-{label}"
    out = folder / "final" / "ensemble" / "predictions.csv"
    if not out.exists():
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(source, folder)
        tuning(["retrain", "--study", str(folder), *extra], work / "logs" / f"{folder.name}.log")
    return predictions(out)


def row(label: str, truth: dict[str, str], pred: dict[str, str], reference: dict[str, str] | None,
        *, images: int, seed: int) -> dict[str, Any]:
    from tuning.metrics import balanced_accuracy_interval, mcnemar, wilson_interval

    files = sorted(truth)
    y = np.array([truth[f] for f in files])
    p = np.array([pred[f] for f in files])
    right = p == y
    out: dict[str, Any] = {"label": label, "images": images, "n": len(files), "accuracy": float(right.mean()),
                           "accuracy_ci95": list(wilson_interval(int(right.sum()), len(files))),
                           "balanced_accuracy": balanced(y, p),
                           "balanced_ci95": balanced_accuracy_interval(y, p, seed=seed),
                           "recall": {c: float(np.mean(p[y == c] == c)) for c in sorted(set(y))}}
    if reference is not None:
        ref = np.array([reference[f] for f in files]) == y
        out["mcnemar_p"] = mcnemar(int(np.sum(ref & ~right)), int(np.sum(right & ~ref)))
    return out


def best_val(folder: Path) -> float:
    from tuning.engines.optuna_engine import load_study
    from tuning.study import read_config
    from tuning.trials import best_trial

    config = read_config(folder)
    best = best_trial(load_study(config), config.objective)
    return float(best.value) if best is not None else float("-inf")


def run_model(model: str, a: argparse.Namespace, work: Path, source: Path, weights: Path) -> list[dict[str, Any]]:
    folders = {label: search(label, model, weights, extra, a, work) for label, extra in SEARCHES.items()}
    test = predictions(folders["study"] / "final" / "predictions.csv")
    truth = {f: t for f, (t, _) in test.items()}
    preds = {label: {f: p for f, (_, p) in predictions(folder / "final" / "predictions.csv").items()}
             for label, folder in folders.items()}
    from tuning.data.prepare import load_prepared

    n_all = len(load_prepared(weights, SIZE).ids)
    under = undersampled_data(source, set(truth), work, a.seed)
    under_folder = search("undersample", model, under, [], a, work)
    preds["undersample"] = predict_on(under_folder, sorted(truth), weights, work)
    n_under = len(load_prepared(under, SIZE).ids)
    chosen = max(SEARCHES, key=lambda label: best_val(folders[label]))
    rows = [row(label, truth, preds[label], None if label == "study" else preds["study"],
                images=n_under if label == "undersample" else n_all, seed=a.seed)
            for label in [*SEARCHES, "undersample"]]
    for label, extra in (ENSEMBLES if a.ensembles and model in a.ensemble_models else {}).items():
        got = ensemble(folders[chosen], label, extra, work)
        rows.append(row(f"{chosen} {label}", truth, {f: p for f, (_, p) in got.items()}, preds["study"],
                        images=n_all, seed=a.seed))
    for r in rows:
        r["model"] = model
        print(f"   {model} {r['label']}: accuracy {r['accuracy']:.3f} balanced {r['balanced_accuracy']:.3f}",
              flush=True)
    return rows


def write_doc(rows: list[dict[str, Any]], a: argparse.Namespace, seconds: float, doc: Path) -> None:
    def ci(v: float, lo_hi: list[float]) -> str:
        return f"{v:.3f} [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"

    lines = [
        "# Recipes on the posters: study vs modern, class weights vs undersampling, ensembles",
        "",
        ("**Smoke run on generated images (`--tiny`): these figures say nothing about the posters.**\n"
         if a.tiny else ""),
        f"Written by `.venv/bin/python benchmarks/recipes.py{' --tiny' if a.tiny else ''} --models "
        f"{','.join(a.models)}"
        + (f" --ensemble-models {','.join(a.ensemble_models)}" if a.ensemble_models != a.models else "")
        + f" --seed {a.seed}` on this 2-core CPU (its last run took {seconds / 60:.0f} min; a rerun reuses every "
        "finished study, so the searches may come from earlier runs of the same command). Every search is the "
        f"toolkit's default quick search (`tuning search --model M --budget quick --seed {a.seed}`, {SIZE} px), "
        "every row tested once on the same images: the `study` run's test split of all images (natural class "
        "shares). Intervals: Wilson for accuracy, the posterior of balanced accuracy (uniform prior per class, as "
        "in the report); McNemar (exact, two-sided) against the study recipe on the same images.",
        "",
        "| model | recipe | images in its dataset | test accuracy [95%] | balanced accuracy [95%] | per-class recall "
        "| McNemar p vs study |",
        "| --- | --- | ---: | --- | --- | --- | ---: |",
    ]
    for r in rows:
        recall = ", ".join(f"{c} {v:.2f}" for c, v in r["recall"].items())
        p = f"{r['mcnemar_p']:.3f}" if "mcnemar_p" in r else "-"
        lines.append(f"| {r['model']} | {r['label']} | {r['images']} | {ci(r['accuracy'], r['accuracy_ci95'])} | "
                     f"{ci(r['balanced_accuracy'], r['balanced_ci95'])} | {recall} | {p} |")
    lines += ["", f"n = {rows[0]['n']} test images per row." if rows else ""]
    skipped = [m for m in a.models if m not in a.ensemble_models]
    if skipped:
        lines += ["", f"No ensemble rows for {', '.join(skipped)}: this run trained ensembles for "
                      f"{', '.join(a.ensemble_models) or 'no model'} only (`--ensemble-models`)."]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
    table = doc.parent / doc.stem / "table.json"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posters", type=Path, default=ROOT.parent / "shared" / "datasets" / "posters")
    p.add_argument("--work", type=Path, default=None, help="[runs/recipes, or runs/recipes-tiny]")
    p.add_argument("--models", default="alexnet,vgg16")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--doc", type=Path, default=None, help="[docs/recipes.md; the tiny run writes into --work]")
    p.add_argument("--tiny", action="store_true", help="smoke run: generated images, 3 trials of 2 epochs")
    p.add_argument("--no-ensembles", dest="ensembles", action="store_false",
                   help="run the searches only (no doc): a later run adds the ensembles")
    p.add_argument("--ensemble-models", default=None, help="models whose ensembles are trained [--models]")
    a = p.parse_args()
    a.models = [m for m in a.models.split(",") if m]
    a.ensemble_models = a.models if a.ensemble_models is None else [m for m in a.ensemble_models.split(",") if m]
    work = a.work or ROOT / "runs" / ("recipes-tiny" if a.tiny else "recipes")
    doc = a.doc or (work / "recipes.md" if a.tiny else ROOT / "docs" / "recipes.md")
    start = time.perf_counter()
    source = source_folder(a, work)
    weights = work / "data-weights"
    link_dataset(source, weights)
    prepared(weights, balance="weights", seed=a.seed)
    rows = [r for model in a.models for r in run_model(model, a, work, source, weights)]
    if not a.ensembles:
        return
    write_doc(rows, a, time.perf_counter() - start, doc)
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
