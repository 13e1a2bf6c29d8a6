#!/usr/bin/env bash
# GPU check: the toolkit's own search on a GPU under the jax and torch Keras backends, in under 8 minutes.
#
#   1. images/s of vgg16 and alexnet (full width, 96 px) at batch 32 and 256, float32 and mixed_bfloat16, per
#      backend (benchmarks/throughput.py: numpy input, one process per setting);
#   2. `tuning search --budget full` on the demo data for both models under each backend (a few trials of a few
#      epochs: the full budget's model and images, not its 30 x 30), with the whole study's wall time and the
#      trial overhead (a trial's wall time in the storage minus the training seconds it recorded);
#   3. GPU utilisation: nvidia-smi sampled every 0.5 s in the background, its mean and peak per part.
# Every part runs under `timeout` with what is left of a 450 s deadline, so the script ends before 8 minutes
# whatever hangs; a part that fails or runs out of time prints one line saying so and the rest go on.
#
# Wheels. The GPU machine has PyTorch and JAX (Python 3.12) but no keras, optuna, keras-tuner or imagehash, and
# reaches no package index. On a machine with the index, from the repository root, `make gpu-wheels` runs
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d benchmarks/wheels keras==3.15.1 namex optree optuna==5.0.0 alembic mako sqlalchemy greenlet colorlog \
#       keras-tuner==1.4.8 kt-legacy imagehash pywavelets cmaes tomli-w
# (about 15 MB; --no-deps: everything else they need is already there). benchmarks/wheels/ is git-ignored, so
# the device run names it in `carry`:
#   run(command="bash benchmarks/gpu_check.sh", carry=["benchmarks/wheels"], timeout_s=540)
# The script installs them with `pip install --no-index --no-deps --target` into a temporary folder on
# PYTHONPATH, only when keras or optuna is missing.
#
# Backends: GPU_CHECK_BACKENDS (default "jax torch"); models: GPU_CHECK_MODELS (default "vgg16 alexnet"). Each search passes `--backend B` when the CLI has that
# option, and KERAS_BACKEND=B always (the CLI honours it too).
# CPU smoke run (tiny models and data, the same parts end to end):
#   GPU_CHECK_TINY=1 GPU_CHECK_BACKENDS=tensorflow bash benchmarks/gpu_check.sh
# Results: one JSON line per measurement in $OUT/gpu_check.jsonl ($OUT unset: a temporary folder).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-benchmarks/wheels}
BACKENDS=${GPU_CHECK_BACKENDS:-jax torch}
START=$(date +%s)
TINY=${GPU_CHECK_TINY:+1}   # a shared 2-core CPU is slower than the GPU machine: more time, the same parts
DEADLINE=${GPU_CHECK_DEADLINE:-$([[ -n "$TINY" ]] && echo 600 || echo 450)}
THROUGHPUT_UNTIL=${GPU_CHECK_THROUGHPUT_UNTIL:-$([[ -n "$TINY" ]] && echo 330 || echo 250)}  # the searches get the rest
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-XXXXXX")
RESULTS=${OUT:-$WORK}/gpu_check.jsonl
: > "$RESULTS"
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # jax takes GPU memory as it needs it: the parts share the card
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

left() { echo $((DEADLINE - ($(date +%s) - START))); }
# limited SECONDS NAME CMD...: run CMD under timeout with at most what is left; log the part's window for nvidia-smi
limited() {
    local want=$1 name=$2; shift 2
    local budget; budget=$(left)
    (( budget < want )) && want=$budget
    if (( want < 5 )); then echo "SKIPPED $name: out of time (deadline ${DEADLINE}s)"; return 124; fi
    local t0; t0=$(date +%s.%N)
    timeout --kill-after=5 "$want" "$@"
    local rc=$?
    echo "$name $t0 $(date +%s.%N)" >> "$WORK/parts.log"
    (( rc == 124 || rc == 137 )) && echo "TIMEOUT $name after ${want}s"
    return $rc
}

if ! "$PY" -c "import keras, optuna" 2>/dev/null; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "== installing the carried wheels from $WHEELS (no index)"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl \
            || { echo "pip could not install $WHEELS/*.whl" >&2; exit 1; }
        export PYTHONPATH="$PYTHONPATH:$WORK/site"
    else
        echo "keras/optuna are not installed and $WHEELS/ holds no wheels; see the header of $0 (make gpu-wheels)" >&2
        exit 1
    fi
fi

SMI=""
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv,noheader || true
    ( while :; do
        echo "$(date +%s.%N) $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
            | head -1 | tr -d ' ')"
        sleep 0.5
      done > "$WORK/smi.log" 2>/dev/null ) &
    SMI=$!
fi
trap '[[ -n "$SMI" ]] && kill "$SMI" 2>/dev/null; rm -rf "$WORK/site"' EXIT

echo "== versions"
for backend in $BACKENDS; do
    KERAS_BACKEND=$backend limited 60 "versions-$backend" "$PY" - <<'EOF' || echo "FAILED: Keras on $backend"
import sys, keras
b = keras.backend.backend()
if b == "jax":
    import jax; dev = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices()); v = jax.__version__
elif b == "torch":
    import torch; v = torch.__version__
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
else:
    import tensorflow as tf; v = tf.__version__; dev = ", ".join(d.device_type for d in tf.config.list_physical_devices())
print(f"python {sys.version.split()[0]}, keras {keras.__version__} on {b} {v}: {dev}")
EOF
done

if [[ -n "$TINY" ]]; then   # proves the script runs end to end on a CPU; measures nothing
    WIDTH=0.125; SIZE=32; STEPS=2; WARMUP=1; DENSE=32; PER_CLASS=12; IMAGE=40; MODELS="alexnet"
    BUDGET=quick; TRIALS=1; EPOCHS=1; PER_PROCESS=0; STEP_LIMIT=120; SEARCH_LIMIT=240
else
    WIDTH=1.0; SIZE=96; STEPS=${STEPS:-20}; WARMUP=3; DENSE=512; PER_CLASS=300; IMAGE=128; MODELS="vgg16 alexnet"
    BUDGET=full; TRIALS=${TRIALS:-3}; EPOCHS=${EPOCHS:-3}; PER_PROCESS=20; STEP_LIMIT=25; SEARCH_LIMIT=70
fi
MODELS=${GPU_CHECK_MODELS:-$MODELS}
# The last line that reads as an error, not one of TensorFlow's or absl's start-up notices.
why() { grep -v -E '^([IWE][0-9]{4} |WARNING: All log messages)' "$1" | tail -1 | tr -d '"\\' | cut -c1-150; }

echo "== demo data ($PER_CLASS per class)"
limited 60 demo "$PY" -m tuning data demo --out "$WORK/demo" --per-class "$PER_CLASS" --size "$IMAGE" >/dev/null \
    || { echo "FAILED: tuning data demo"; exit 1; }

echo "== throughput: width $WIDTH, $SIZE px, $STEPS timed steps after $WARMUP warm-up steps"
for backend in $BACKENDS; do
    for model in $MODELS; do
        for batch in 32 256; do
            for precision in float32 mixed_bfloat16; do
                name="throughput-$backend-$model-$batch-$precision"
                if (( $(date +%s) - START > THROUGHPUT_UNTIL )); then  # the searches keep their share
                    echo "{\"part\": \"throughput\", \"backend\": \"$backend\", \"model\": \"$model\", \"batch\": $batch, \"precision\": \"$precision\", \"error\": \"skipped: the throughput part's ${THROUGHPUT_UNTIL}s are used up\"}" >> "$RESULTS"
                    continue
                fi
                line=$(KERAS_BACKEND=$backend limited "$STEP_LIMIT" "$name" "$PY" benchmarks/throughput.py \
                    --model "$model" --width "$WIDTH" --size "$SIZE" --batch "$batch" --steps "$STEPS" \
                    --warmup "$WARMUP" --dense-units "$DENSE" --precision "$precision" --jit on \
                    2>"$WORK/err.txt" | grep '^RESULT ')
                if [[ -z "$line" ]]; then
                    reason=$(why "$WORK/err.txt")
                    echo "{\"part\": \"throughput\", \"backend\": \"$backend\", \"model\": \"$model\", \"batch\": $batch, \"precision\": \"$precision\", \"error\": \"${reason:-timed out or no result}\"}" >> "$RESULTS"
                else
                    echo "${line#RESULT }" | "$PY" -c "import json,sys; r=json.load(sys.stdin); r['part']='throughput'; print(json.dumps(r))" >> "$RESULTS"
                fi
            done
        done
    done
done

echo "== tuning search --budget $BUDGET: $TRIALS trials x $EPOCHS epochs per study"
HAS_BACKEND_FLAG=$("$PY" -m tuning search --help 2>/dev/null | grep -c -- '--backend' || true)
for backend in $BACKENDS; do
    for model in $MODELS; do
        study="$WORK/runs/$model-$backend"
        flag=(); (( HAS_BACKEND_FLAG > 0 )) && flag=(--backend "$backend")
        t0=$(date +%s.%N)
        KERAS_BACKEND=$backend limited "$SEARCH_LIMIT" "search-$backend-$model" "$PY" -m tuning search --model "$model" \
            --data "$WORK/demo" --budget "$BUDGET" --trials "$TRIALS" --epochs "$EPOCHS" --pruner none \
            --precision float32 --seed 0 --trials-per-process "$PER_PROCESS" --study "$study" "${flag[@]}" \
            > "$WORK/search.txt" 2>&1
        rc=$?
        wall=$("$PY" -c "import time; print(round(time.time() - $t0, 1))")
        grep -v -E '^([IWE][0-9]{4} |WARNING: All log messages)' "$WORK/search.txt" | tail -3
        KERAS_BACKEND=$backend "$PY" - "$study" "$backend" "$model" "$rc" "$wall" "$(why "$WORK/search.txt")" >> "$RESULTS" <<'EOF'
import json, sys
from pathlib import Path
folder, backend, model, rc, wall, last = sys.argv[1:]
row = {"part": "search", "backend": backend, "model": model, "exit": int(rc), "study_wall_s": float(wall)}
try:
    from tuning.engines.optuna_engine import load_study
    from tuning.study import read_config
    trials = [t for t in load_study(read_config(Path(folder))).trials if t.state.name == "COMPLETE"]
    spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    train = [float(t.user_attrs.get("seconds", 0.0)) for t in trials]
    row |= {"trials": len(trials), "trial_wall_s": round(sum(spans) / len(spans), 2),
            "trial_train_s": round(sum(train) / len(train), 2),
            "trial_overhead_s": round((sum(spans) - sum(train)) / len(spans), 2)}
except Exception as exc:  # no study or no finished trial: the exit code and last line say why
    row["error"] = last or f"{type(exc).__name__}: {exc}"
print(json.dumps(row))
EOF
    done
done

[[ -n "$SMI" ]] && kill "$SMI" 2>/dev/null
"$PY" - "$RESULTS" "$WORK/parts.log" "$WORK/smi.log" <<'EOF'
import json, os, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
parts = [line.split() for line in open(sys.argv[2])] if os.path.exists(sys.argv[2]) else []
smi = []
if os.path.exists(sys.argv[3]):
    for line in open(sys.argv[3]):
        try:
            t, vals = line.split()
            util, mem = vals.split(",")[:2]
            smi.append((float(t), float(util), float(mem)))
        except ValueError:
            pass

def gpu(name):
    window = next(((float(a), float(b)) for n, a, b in parts if n == name), None)
    got = [(u, m) for t, u, m in smi if window and window[0] <= t <= window[1]]
    if not got:
        return "-"
    return f"{sum(u for u, _ in got) / len(got):.0f}% mean, {max(u for u, _ in got):.0f}% peak, {max(m for _, m in got):.0f} MiB"

print("| backend | model | batch | precision | device | images/s | ms/step | warm-up s | GPU (util, memory) |")
print("| --- | --- | ---: | --- | --- | ---: | ---: | ---: | --- |")
for r in (r for r in rows if r["part"] == "throughput"):
    name = f"throughput-{r['backend']}-{r['model']}-{r['batch']}-{r['precision']}"
    if "error" in r:
        print(f"| {r['backend']} | {r['model']} | {r['batch']} | {r['precision']} | - | failed: {r['error']} | | | |")
    else:
        print(f"| {r['backend']} | {r['model']} | {r['batch']} | {r['precision']} | {r['device']} | "
              f"{r['images_per_s']:.1f} | {r['step_ms']:.1f} | {r['warmup_s']:.1f} | {gpu(name)} |")
print()
print("| backend | model | exit | trials | study wall s | trial wall s | trial train s | trial overhead s | GPU (util, memory) |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for r in (r for r in rows if r["part"] == "search"):
    cells = [str(r.get(k, "-")) for k in ("trials", "study_wall_s", "trial_wall_s", "trial_train_s", "trial_overhead_s")]
    note = f" ({r['error']})" if "error" in r else ""
    print(f"| {r['backend']} | {r['model']} | {r['exit']}{note} | " + " | ".join(cells)
          + f" | {gpu('search-' + r['backend'] + '-' + r['model'])} |")
EOF
echo "== done in $(( $(date +%s) - START ))s; results: $RESULTS"
