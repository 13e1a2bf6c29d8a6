"""Peak memory of a whole ``tuning search`` process tree against a plain single-process Optuna + Keras script.

Both run the same search in one invocation, one after the other (2 cores: side by side they would slow each
other, not change their memory): ``tuning search`` through the CLI (its default ``--trials-per-process 20``, so
the trials train in a worker process, then retraining, report and export), and a hand-written script that
draws the same number of Optuna trials and ``model.fit``s the same model on the same prepared arrays in one
process, then retrains the best once. Every 0.5 s the sampler reads ``/proc`` for the root process and all its
descendants and sums their VmRSS; it prints each run's peak tree RSS, the peak RSS of the root process alone,
and the wall time. ``--code DIR`` runs the ``tuning`` package found in DIR for the CLI run (another checkout,
e.g. the code before the coordinator stopped loading TensorFlow) for a before/after.

Run: ``.venv/bin/python benchmarks/process_memory.py`` (defaults: alexnet, the demo data at 64 px (quick
budget), 3 trials x 2 epochs; about 3-4 minutes on 2 cores; the demo data is made in a temporary folder when
``--data`` is not given). Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLAIN = '''
"""The hand-written baseline: one process, Optuna in memory, Keras fit on numpy arrays."""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, optuna, keras

from tuning.data.prepare import load_prepared
from tuning.models import build_model
from tuning.space import load_space

data, model_name, trials, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
space, _ = load_space(model_name).with_budget("quick")  # the same net the search trains: its base values
base = space.resolve({})
size = int(base["image_size"])
prepared = load_prepared(data, size)
rng = np.random.default_rng(0)
order = rng.permutation(len(prepared.y))
cut = int(0.7 * len(order))
train, val = order[:cut], order[cut:]
n_classes = len(prepared.classes)


def fit(lr, dropout):
    keras.backend.clear_session()
    params = {**base, "dropout": dropout, "augmentation": space.augmentation(str(base["augmentation"]))}
    model = build_model(model_name, params, (size, size, 3), n_classes)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(prepared.x[train], prepared.y[train], validation_data=(prepared.x[val], prepared.y[val]),
                        batch_size=int(base["batch_size"]), epochs=epochs, verbose=0)
    return max(history.history["val_accuracy"])


optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
study.optimize(lambda t: fit(t.suggest_float("lr", 1e-4, 1e-2, log=True), t.suggest_float("dropout", 0.0, 0.5)),
               n_trials=trials)
fit(study.best_params["lr"], study.best_params["dropout"])  # the retrain a search ends with
'''


def tree_rss_mb(root: int) -> tuple[float, float, float]:
    """(summed VmRSS of ``root`` and all its descendants, VmRSS of ``root``, the largest one's) in MB, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue  # gone meanwhile
        pid = int(entry)
        parents[pid] = int(fields.get("PPid", "0").strip() or 0)
        rss[pid] = int(fields["VmRSS"].split()[0]) / 1024 if "VmRSS" in fields else 0.0
    members, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in members]
        members.update(children)
        frontier.extend(children)
    return sum(rss.get(p, 0.0) for p in members), rss.get(root, 0.0), max(rss.get(p, 0.0) for p in members)


def measure(label: str, command: list[str], *, env: dict[str, str], cwd: Path, interval: float) -> dict[str, object]:
    """Run ``command``, sampling its process tree every ``interval`` seconds until it exits."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"tree": 0.0, "root": 0.0, "largest": 0.0, "samples": 0}
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    reader.start()
    while process.poll() is None:
        tree, root, largest = tree_rss_mb(process.pid)
        peaks["tree"], peaks["root"] = max(peaks["tree"], tree), max(peaks["root"], root)
        peaks["largest"] = max(peaks["largest"], largest)
        peaks["samples"] += 1
        time.sleep(interval)
    reader.join()
    if process.returncode != 0:
        sys.stderr.write("".join(output[-40:]))
        raise SystemExit(f"{label} failed with exit code {process.returncode}")
    return {"run": label, "peak_tree_mb": round(float(peaks["tree"])), "peak_root_mb": round(float(peaks["root"])),
            "peak_largest_mb": round(float(peaks["largest"])),
            "seconds": round(time.perf_counter() - start, 1), "samples": peaks["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet", choices=["alexnet", "vgg16"])
    parser.add_argument("--data", type=Path, default=None, help="Dataset folder [the demo data, made in a temp dir].")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.5, help="Seconds between samples.")
    parser.add_argument("--code", type=Path, default=ROOT, help="Checkout whose tuning package the CLI run uses.")
    parser.add_argument("--skip-plain", action="store_true", help="Only the CLI run (e.g. a second --code).")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tuning.space import load_space

    size = int(load_space(args.model).with_budget("quick")[0].base["image_size"])
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="process-memory-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(args.code.resolve()))
        data = args.data
        if data is None:
            data = work / "demo"
            subprocess.run([python, "-m", "tuning", "data", "demo", "--out", str(data)], env=env, cwd=args.code,
                           check=True, stdout=subprocess.DEVNULL)
        data = data.resolve()
        # Prepared once, outside both measurements: both then read the same cache.
        subprocess.run([python, "-m", "tuning", "data", "prepare", str(data), "--size", str(size)], env=env,
                       cwd=args.code, check=True, stdout=subprocess.DEVNULL)
        rows = [measure("tuning search (CLI)", [
            python, "-m", "tuning", "search", "--model", args.model, "--data", str(data), "--budget", "quick",
            "--trials", str(args.trials), "--epochs", str(args.epochs), "--pruner", "none", "--precision", "float32",
            "--study", str(work / "runs" / "cli"), "--seed", "0"], env=env, cwd=args.code, interval=args.interval)]
        if not args.skip_plain:
            script = work / "plain.py"
            script.write_text(PLAIN, encoding="utf-8")
            plain_env = dict(env, PYTHONPATH=str(ROOT))
            command = [python, str(script), str(data), args.model, str(args.trials), str(args.epochs)]
            rows.append(measure("plain Optuna + Keras script", command, env=plain_env, cwd=ROOT,
                                interval=args.interval))
    print(f"{args.model}, {args.trials} trials x {args.epochs} epochs at {size} px, code {args.code}")
    print("| run | peak tree RSS | peak root-process RSS | peak of the largest process | wall time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['run']} | {row['peak_tree_mb']} MB | {row['peak_root_mb']} MB | {row['peak_largest_mb']} MB | "
              f"{row['seconds']} s |")
    print("RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
