#!/usr/bin/env bash
# GPU check for a machine with PyTorch and JAX but no TensorFlow (and no internet): Keras on the JAX backend.
#
#   1. prints images/s for vgg16 and alexnet at full width, 96 px, batch 32 and 256, float32 and mixed_bfloat16
#      (benchmarks/throughput.py: numpy input, no TensorFlow needed);
#   2. runs one short `tuning search` only if `import tensorflow` works there (tuning/train.py feeds fit through
#      tf.data, so the toolkit itself cannot train without TensorFlow today); otherwise says so and skips it.
#
# Wheels (the device machine reaches no package index). On a machine with the index, before the run:
#   PYVER=3.11 benchmarks/gpu_check.sh --download-wheels     # PYVER = the GPU machine's python version
# fills benchmarks/wheels/ (about 30 MB: keras 3.15.1 and its deps incl. numpy, manylinux x86_64; WHEELS=DIR
# puts them elsewhere); the script then installs from it
# with `pip install --no-index --find-links benchmarks/wheels keras` when keras is missing. benchmarks/wheels/ is
# an untracked folder, so it travels with the working tree; if it is git-ignored, name it in `carry`.
#
# Usage on the GPU machine:   bash benchmarks/gpu_check.sh            (writes $OUT/gpu_check.jsonl when OUT is set)
# CPU smoke test (tiny):      GPU_CHECK_TINY=1 PYTHON=.venv-backends/bin/python bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-benchmarks/wheels}

if [[ "${1:-}" == "--download-wheels" ]]; then
    PYVER=${PYVER:-3.11}
    "$PY" -m pip download -d "$WHEELS" --only-binary=:all: --python-version "$PYVER" \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 keras==3.15.1
    ls -la "$WHEELS"; exit 0
fi

export KERAS_BACKEND=jax
export TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # leave GPU memory to whoever shares the machine

if ! "$PY" -c "import keras" 2>/dev/null; then
    if [[ -d "$WHEELS" ]]; then
        echo "== keras missing: installing from $WHEELS (no index)"
        "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" keras
    else
        echo "keras is not installed and $WHEELS/ is missing; see the header of $0 (--download-wheels)" >&2
        exit 1
    fi
fi

echo "== versions"
"$PY" - <<'EOF'
import sys, jax, keras
print(f"python {sys.version.split()[0]}, keras {keras.__version__} ({keras.backend.backend()}), jax {jax.__version__}")
print("devices:", ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices()))
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true

if [[ -n "${GPU_CHECK_TINY:-}" ]]; then
    WIDTH=0.125; SIZE=32; STEPS=3; WARMUP=1; DENSE=64        # proves the script runs, measures nothing
else
    WIDTH=1.0; SIZE=96; STEPS=${STEPS:-30}; WARMUP=3; DENSE=512
fi
RESULTS=${OUT:-/tmp}/gpu_check.jsonl
: > "$RESULTS"

echo "== throughput: width $WIDTH, $SIZE px, $STEPS timed steps after $WARMUP warm-up steps"
for model in vgg16 alexnet; do
    for batch in 32 256; do
        for precision in float32 mixed_bfloat16; do
            line=$("$PY" benchmarks/throughput.py --model "$model" --width "$WIDTH" --size "$SIZE" \
                --batch "$batch" --steps "$STEPS" --warmup "$WARMUP" --dense-units "$DENSE" \
                --precision "$precision" --jit on 2>/tmp/gpu_check.err | grep '^RESULT ' || true)
            if [[ -z "$line" ]]; then
                echo "{\"model\": \"$model\", \"batch\": $batch, \"precision\": \"$precision\", \"error\": \"$(tail -1 /tmp/gpu_check.err | tr -d '"\\' | cut -c1-150)\"}" >> "$RESULTS"
            else
                echo "${line#RESULT }" >> "$RESULTS"
            fi
        done
    done
done
"$PY" - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| model | batch | precision | device | images/s | ms/step | warm-up s | loss |")
print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |")
for r in rows:
    if "error" in r:
        print(f"| {r['model']} | {r['batch']} | {r['precision']} | - | failed: {r['error']} | | | |")
    else:
        print(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['device']} | {r['images_per_s']:.1f} | "
              f"{r['step_ms']:.1f} | {r['warmup_s']:.1f} | {r['final_loss']:.4f} |")
EOF

echo "== tuning search"
if "$PY" -c "import tensorflow" 2>/dev/null; then
    "$PY" -m tuning data demo --out "${OUT:-/tmp}/demo"
    "$PY" -m tuning search --model vgg16 --data "${OUT:-/tmp}/demo" --budget quick --trials 2 --epochs 1 \
        --study "${OUT:-/tmp}/gpu-check-study" --seed 0
else
    echo "SKIPPED: TensorFlow is not installed here, and the toolkit cannot train without it today" \
         "(tuning/train.py feeds model.fit through tf.data, and runtime.py/evaluate.py import tensorflow)."
fi
