"""Engine overheads, measured side by side in one run (the machine is shared and noisy, so ratios, not times).

1. Per-trial overhead: a toolkit trial (Optuna engine, journal storage, history files, cleared session)
   against a plain ``model.fit`` of the same model, data pipeline and epochs; alternated, median ratio.
2. Memory: resident set size after 1 and after 20 tiny trials in one process.
3. Storage overhead per trial with an objective that returns at once: journal file, SQLite, PostgreSQL
   (with ``--postgres URL``, e.g. the server ``.ci/postgres.sh`` starts).

Run: ``.venv/bin/python benchmarks/engine_bench.py [--postgres URL]`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuning import runtime  # noqa: E402
from tuning.engines import run_engine  # noqa: E402
from tuning.engines._storage import open_storage  # noqa: E402
from tuning.engines.processes import run_workers  # noqa: E402
from tuning.models import build_model  # noqa: E402
from tuning.space import load_space  # noqa: E402
from tuning.study import StudyConfig, default_storage, write_config  # noqa: E402
from tuning.train import TrialData, compile_model, make_batches  # noqa: E402


def config_for(folder: Path, space, trials: int, epochs: int) -> StudyConfig:  # noqa: ANN001
    return StudyConfig(name=folder.name, model="alexnet", dataset="demo", engine="optuna", sampler="random",
                       pruner="none", budget="quick", trials=trials, epochs=epochs, seed=0,
                       storage=default_storage(folder), space=space.to_dict())


def overhead(data_dir: Path, work: Path, rounds: int, epochs: int) -> list[float]:
    """Wall time of one toolkit trial / one plain fit, per round."""
    space, _ = load_space("alexnet").with_budget("quick")
    space = space.with_search([])  # the same configuration every trial: base values
    data = TrialData.for_space(data_dir, space, seed=0)
    params = space.resolve({})
    views = data.split(int(params["image_size"]), str(params["split"]))
    n = len(data.classes)
    ratios = []
    for r in range(rounds):
        folder = work / f"overhead{r}"
        start = time.perf_counter()
        run_engine(config_for(folder, space, 1, epochs), space, data, folder, on_event=lambda e: None)
        toolkit = time.perf_counter() - start

        import keras

        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        model = build_model("alexnet", {**params, "augmentation": space.augmentation("none")},
                            (int(params["image_size"]),) * 2 + (3,), n)
        compile_model(model, params)
        batch = int(params["batch_size"])
        model.fit(make_batches(*views["train"][:2], n, batch, shuffle_seed=0),
                  validation_data=make_batches(*views["val"][:2], n, batch, shuffle_seed=None),
                  epochs=epochs, verbose=0, shuffle=False)
        plain = time.perf_counter() - start
        ratios.append(toolkit / plain)
        print(f"  round {r}: toolkit {toolkit:.2f}s, plain fit {plain:.2f}s, ratio {toolkit / plain:.3f}", flush=True)
    return ratios


def memory(data_dir: Path, work: Path, trials: int, per_process: int) -> dict[str, list[float]]:
    """RSS of the training process after each of ``trials`` one-epoch trials: in this process, and in child
    processes replaced every ``per_process`` trials (the CLI's default mode)."""
    space, _ = load_space("alexnet").with_budget("quick")
    data = TrialData.for_space(data_dir, space, seed=0)
    out: dict[str, list[float]] = {}
    for mode in ("in-process", "recycled"):
        folder = work / f"memory-{mode}"
        config = config_for(folder, space, trials, 1)
        events: list[dict] = []
        if mode == "in-process":
            run_engine(config, space, data, folder, on_event=events.append)
        else:
            write_config(folder, config)
            run_workers(folder, data_dir=data_dir, workers=1, per_process=per_process, on_event=events.append)
        out[mode] = [e["rss_mb"] for e in events if e["event"] == "trial_end"]
    return out


def storage_cost(url: str, trials: int) -> float:
    """Milliseconds per trial of ask + suggest + tell with an objective that returns at once."""
    import optuna

    study = optuna.create_study(study_name=f"bench-{time.time_ns()}", storage=open_storage(url))
    start = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("y", 0, 9), n_trials=trials)
    return (time.perf_counter() - start) / trials * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("datasets/demo"))
    parser.add_argument("--postgres", default=os.environ.get("TUNING_TEST_POSTGRES"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of each overhead trial.")
    parser.add_argument("--parts", default="overhead,memory,storage", help="Comma-separated parts to run.")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    runtime.apply(runtime.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = args.parts.split(",")
        if "overhead" in parts:
            print(f"Per-trial overhead (alexnet quick, demo data, {args.epochs} epochs):", flush=True)
            ratios = overhead(args.data, work, args.rounds, args.epochs)
            print(f"  median ratio toolkit/plain: {statistics.median(ratios):.3f} over {len(ratios)} rounds")
        if "memory" in parts:
            print("RSS of the training process (alexnet quick, 1 epoch per trial):", flush=True)
            for mode, rss in memory(args.data, work, 20, 5).items():
                print(f"  {mode:<11} after trial 1: {rss[0]:.0f} MB, after trial 20: {rss[-1]:.0f} MB, "
                      f"max {max(rss):.0f} MB ({(rss[-1] - rss[0]) / (len(rss) - 1):+.1f} MB per trial)")
        if "storage" in parts:
            print("Storage overhead per trial (objective returns at once, 200 trials):")
            urls = {"journal": f"journal:{work / 'bench.journal'}", "sqlite": f"sqlite:///{work / 'bench.db'}"}
            if args.postgres:
                urls["postgresql"] = args.postgres
            for name, url in urls.items():
                print(f"  {name:<11} {storage_cost(url, 200):6.1f} ms/trial", flush=True)

if __name__ == "__main__":
    main()
