"""Peak memory of ``tuning predict`` on 10 against 400 large photos: streaming keeps it flat in the file count.

Makes an exported-style model (the dataset's resize in front of a small untrained network: memory does not
depend on the weights), ``--distinct`` different smooth photos of ``--width`` x ``--height`` pixels (default
2304 x 1536, 3.5 MP) copied round-robin to 10 and to 400 files, then runs ``tuning predict MODEL FOLDER --csv``
in a fresh process for each folder and reads that process's peak RSS from ``wait4``. ``--code DIR`` runs the
``tuning`` package found in DIR instead (another checkout, e.g. the code before streaming) for a before/after.

Run: ``.venv/bin/python benchmarks/predict_memory.py [--counts 10,400] [--format jpeg|png]`` (about 1-2 minutes
on 2 cores; the files take about 0.2 GB in a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CLASSES = ["a", "b", "c"]


def make_model(folder: Path, size: int) -> Path:
    """``export``'s serving model around a small network, with a card naming its classes."""
    import keras

    from tuning.evaluate import save_model
    from tuning.export import serving_model

    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Rescaling(1 / 255),
                                keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                                keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(len(CLASSES),
                                                                                         activation="softmax")])
    path = folder / "model.keras"
    save_model(serving_model(network, size), path)
    (folder / "model_card.json").write_text(json.dumps({"classes": CLASSES, "input": {"resized_to": [size, size]}}))
    return path


def make_photos(folder: Path, count: int, distinct: list[Path]) -> Path:
    folder.mkdir()
    for i in range(count):
        source = distinct[i % len(distinct)]
        shutil.copyfile(source, folder / f"photo{i:04d}{source.suffix}")
    return folder


def distinct_photos(folder: Path, n: int, width: int, height: int, fmt: str) -> list[Path]:
    """Smooth colour fields with fine noise on top: photo-like file sizes, nothing a codec can skip."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((width, height),
                                                                                         Image.Resampling.BICUBIC)
        pixels = np.asarray(base, dtype=np.int16) + rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        path = folder / f"distinct{i}.{'jpg' if fmt == 'jpeg' else 'png'}"
        image.save(path, quality=90) if fmt == "jpeg" else image.save(path)
        out.append(path)
    return out


def peak_rss(model: Path, folder: Path, out: Path, code: Path) -> tuple[float, float, str]:
    """Peak RSS (MB) and wall seconds of one ``tuning predict`` process, and its output."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tuning", "predict", str(model), str(folder), "--csv", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=code)
    assert proc.stdout is not None
    text = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}): {text[-2000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start, text.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,400", help="File counts to compare (first is the reference).")
    parser.add_argument("--width", type=int, default=2304)
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--distinct", type=int, default=10, help="Different photos among the copies.")
    parser.add_argument("--format", choices=["jpeg", "png"], default="jpeg")
    parser.add_argument("--size", type=int, default=96, help="The model's input side.")
    parser.add_argument("--code", type=Path, default=ROOT, help="Folder holding the tuning package to measure.")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="predict-memory-") as tmp:
        work = Path(tmp)
        model = make_model(work, args.size)
        distinct = distinct_photos(work / "distinct", args.distinct, args.width, args.height, args.format)
        mp = args.width * args.height / 1e6
        print(f"{args.format} photos {args.width}x{args.height} ({mp:.1f} MP, {distinct[0].stat().st_size / 1e6:.2f} "
              f"MB each), model input {args.size} px, code {args.code}")
        results = {}
        for n in counts:
            folder = make_photos(work / f"n{n}", n, distinct)
            rss, seconds, summary = peak_rss(model, folder, work / f"n{n}.csv", args.code.resolve())
            results[n] = rss
            print(f"{n:>5} files: peak RSS {rss:7.0f} MB, {seconds:5.1f} s  ({summary})")
            shutil.rmtree(folder)
        first, last = counts[0], counts[-1]
        print(f"peak RSS ratio {last} / {first} files: {results[last] / results[first]:.3f}")


if __name__ == "__main__":
    main()
