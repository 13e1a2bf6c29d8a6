"""Training throughput of both models under the TensorFlow, JAX and PyTorch Keras backends, XLA on and off,
plus the input-pipeline ratio (the toolkit's batches against tensors already in memory).

One subprocess per (backend, model, width, jit) runs ``benchmarks/throughput.py`` and prints a JSON line; this
script collects them, in one run, so the ratios are measured side by side on the same (shared) machine.
Writes a markdown table to stdout and to ``benchmarks/backends.md``.

    .venv/bin/python benchmarks/backends.py --tf-python .venv/bin/python --other-python .venv-backends/bin/python

``--other-python`` is an interpreter with keras, jax and torch (TensorFlow not needed), e.g. made with
``python3 -m venv .venv-backends && .venv-backends/bin/pip install keras 'jax[cpu]' torch numpy``; the
TensorFlow rows and the pipeline ratio use ``--tf-python``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (backend, jit): jit "on" = XLA for TensorFlow, jax.jit for JAX (its normal mode), torch.compile for PyTorch.
SETTINGS = (("tensorflow", "off"), ("tensorflow", "on"), ("jax", "on"), ("jax", "off"), ("torch", "off"),
            ("torch", "on"))


def run_one(python: str, backend: str, extra: list[str], *, timeout: int) -> dict[str, Any]:
    cmd = [python, str(HERE / "throughput.py"), *extra]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:160]}"}
    row = json.loads(lines[-1][len("RESULT "):])
    row["process_s"] = time.perf_counter() - t0
    return row


def fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tf-python", default=str(ROOT / ".venv/bin/python"))
    p.add_argument("--other-python", default=".venv-backends/bin/python")
    p.add_argument("--models", default="vgg16,alexnet")
    p.add_argument("--widths", default="0.25,0.5")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--pipeline-steps", type=int, default=20, help="batches per epoch for the pipeline ratio")
    p.add_argument("--pipeline-epochs", type=int, default=3)
    p.add_argument("--settings", default=",".join(f"{b}:{j}" for b, j in SETTINGS))
    p.add_argument("--timeout", type=int, default=300, help="seconds per subprocess")
    p.add_argument("--out", default=str(HERE / "backends.md"))
    args = p.parse_args()

    settings = [tuple(s.split(":")) for s in args.settings.split(",") if s]
    rows: list[dict[str, Any]] = []
    for model in args.models.split(","):
        for width in args.widths.split(","):
            common = ["--model", model, "--width", width, "--size", str(args.size), "--batch", str(args.batch)]
            for backend, jit in settings:
                python = args.tf_python if backend == "tensorflow" else args.other_python
                extra = [*common, "--steps", str(args.steps), "--warmup", str(args.warmup), "--jit", jit]
                if backend == "tensorflow":
                    extra += ["--threads", "1"]  # as the toolkit runs on CPU (tuning/runtime.py)
                row = {"backend": backend, "model": model, "width": float(width), "jit": jit,
                       **run_one(python, backend, extra, timeout=args.timeout)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    pipe: list[dict[str, Any]] = []
    for model in args.models.split(","):
        width = args.widths.split(",")[0]
        extra = ["--model", model, "--width", width, "--size", str(args.size), "--batch", str(args.batch),
                 "--steps", str(args.pipeline_steps), "--pipeline", "--epochs", str(args.pipeline_epochs),
                 "--threads", "1"]
        row = {"model": model, "width": float(width), **run_one(args.tf_python, "tensorflow", extra,
                                                                 timeout=args.timeout)}
        pipe.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    text = render(rows, pipe, args)
    print(text)
    Path(args.out).write_text(text)


def render(rows: list[dict[str, Any]], pipe: list[dict[str, Any]], args: argparse.Namespace) -> str:
    cmd = "python benchmarks/backends.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out = [
        "# Keras backends, XLA and the input pipeline (CPU)",
        "",
        f"Command: `{cmd.strip()}` (run {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPU cores, shared "
        "with other work: compare rows of this one run, not absolute numbers across runs).",
        "",
        f"Training throughput, {args.size} px, batch {args.batch}, synthetic uint8 images fed as numpy; "
        f"{args.warmup} warm-up batches, then {args.steps} timed batches in one `fit`. Weights come from one numpy "
        "generator and dropout/augmentation are off, so `loss` after the timed steps should agree across "
        "backends to float round-off if they compute the same thing. `jit`: XLA (`jit_compile=True`) on "
        "TensorFlow, `jax.jit` on JAX (off = op-by-op), `torch.compile` on PyTorch. `ratio` is images/s over "
        "the TensorFlow default (jit off: what `auto` resolves to for these models, i.e. what the toolkit runs) "
        "for the same model and width.",
        "",
        "| model | width | backend | jit | images/s | ms/step | ratio | warm-up s | loss | note |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ref = next((q for q in rows if q["model"] == r["model"] and q["width"] == r["width"]
                    and q["backend"] == "tensorflow" and q["jit"] == "off" and "images_per_s" in q), None)
        ratio = r["images_per_s"] / ref["images_per_s"] if ref and "images_per_s" in r else None
        out.append(f"| {r['model']} | {r['width']} | {r['backend']} | {r['jit']} | {fmt(r.get('images_per_s'), '.1f')} "
                   f"| {fmt(r.get('step_ms'), '.0f')} | {fmt(ratio, '.2f')} | {fmt(r.get('warmup_s'), '.1f')} "
                   f"| {fmt(r.get('final_loss'), '.5f')} | {r.get('error', '')} |")
    out += [
        "",
        f"Input pipeline: median epoch seconds over {args.pipeline_epochs} epochs of {args.pipeline_steps} batches "
        "(TensorFlow, inter-op threads 1 as the toolkit runs, the two inputs alternating on one compiled model): "
        "`tuning.train.tf_data_batches` (what TensorFlow trials use) and `neutral_batches` (the PyDataset of "
        "JAX and PyTorch trials) from uint8 arrays against "
        "`from_tensor_slices(float32 images, one-hot labels).batch().cache()` materialised before timing. "
        "Goal: ratio (tf.data over in-memory) <= 1.05.",
        "",
        "| model | width | tf.data s/epoch | PyDataset s/epoch | in-memory s/epoch | ratio | goal met |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in pipe:
        ratio = r.get("pipeline_ratio")
        met = "-" if ratio is None else ("yes" if ratio <= 1.05 else "no")
        out.append(f"| {r['model']} | {r['width']} | {fmt(r.get('epoch_s_tf_data'), '.2f')} | "
                   f"{fmt(r.get('epoch_s_pydataset'), '.2f')} | {fmt(r.get('epoch_s_memory'), '.2f')} | "
                   f"{fmt(ratio, '.3f')} | {met} {r.get('error', '')} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
