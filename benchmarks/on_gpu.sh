#!/usr/bin/env bash
# The README's GPU figures as one job: training throughput per model and batch (both feeds,
# float32 and bfloat16, several steps per call, the mlp's pipeline without a prefetch thread),
# jaxgan against the PyTorch and plain JAX peers on the GPU, generation throughput, and a
# profile of the dcgan step at batch 256. For a machine
# with a GPU whose Python has jax (CUDA), flax, optax, orbax-checkpoint, ml_collections and
# torch but possibly no TensorFlow: the datasets come from arrays exported where tfds works
# (benchmarks/without_tensorflow/sitecustomize.py).
#
#   bash benchmarks/on_gpu.sh ARRAYS_DIR PEERS_DIR RESULTS_DIR
#
# Writes RESULTS_DIR/results.jsonl (every benchmark's JSON lines), RESULTS_DIR/machine.txt and
# RESULTS_DIR/errors.txt; stops after the first stage if jaxgan's step does not run at all.
set -uo pipefail
cd "$(dirname "$0")/.."
arrays=$(realpath "$1"); peers=$(realpath "$2"); out=$3
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nproc
  python3 -m pip list 2>/dev/null \
    | grep -Ei '^(jax|jaxlib|jax-cuda[0-9]*-(plugin|pjrt)|flax|optax|orbax-checkpoint|ml.collections|torch|numpy) '
} | tee "$out/machine.txt"
export JAXGAN_ARRAYS_DIR=$arrays PYTHONPATH=$PWD/benchmarks/without_tensorflow:$PWD:${PYTHONPATH:-}

stage() {  # stage NAME SECONDS COMMAND...: JSON lines to results.jsonl, stderr to errors.txt
  local name=$1 seconds=$2; shift 2
  echo "== $name" | tee -a "$out/errors.txt"
  timeout "$seconds" "$@" 2>>"$out/errors.txt" | grep --line-buffered '^{' \
    | python3 -c "import json, sys
for line in sys.stdin:
  record = json.loads(line); record['stage'] = '$name'; print(json.dumps(record), flush=True)" \
    | tee -a "$out/results.jsonl"
}
train=(python3 benchmarks/train_throughput.py --max-wait=0 --repeats=3 --steps=300 --warmup=10)

stage smoke 90 "${train[@]}" --models=dcgan --batches=64 --feeds=device --repeats=1 --steps=20
grep -q 'images_per_s.*"stage": "smoke"' "$out/results.jsonl" || { tail -40 "$out/errors.txt"; exit 1; }
stage train_float32 240 "${train[@]}" --models=mlp,dcgan,kannada --batches=64,256,1024
stage peers 180 python3 benchmarks/compare_peers.py --peers-python="$(command -v python3)" --peers-dir="$peers" \
  --impls=jaxgan,jax_flax_jit,torch_eager --batches=64,256 --rounds=2 --steps=300 --warmup=20 \
  --threads=0 --attempts=1 --max-wait=0 --torch-device=cuda
stage generation 60 python3 benchmarks/generation_throughput.py --models=mlp,dcgan,kannada \
  --num=60000 --max-wait=0
stage train_bfloat16 100 "${train[@]}" --models=dcgan,kannada --batches=256,1024 \
  --compute-dtype=bfloat16
stage train_steps_per_call 60 "${train[@]}" --models=dcgan --batches=64,256 --steps-per-call=10
# The CPU's feed on the GPU (no thread; the step's jit copies host arrays), against the
# accelerators' default of a prefetch thread in train_float32.
stage train_prefetch0 60 "${train[@]}" --models=mlp --batches=64,256,1024 --feeds=pipeline \
  --prefetch=0
stage profile 90 python3 benchmarks/profile_step.py --model=dcgan --batch=256 --steps=20 --top=25
