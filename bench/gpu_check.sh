#!/usr/bin/env bash
# The one GPU check (issue 16), about 8 minutes at most on one GPU:
#   1. pytest -m gpu: every engine on CUDA against the CPU reference, forward and backward, f64 and f32
#   2. bench/gpu_check.py: the same checks per engine, the SHD-like training step time and peak
#      memory, written to the measurement file that engine "auto" reads; Triton tile autotune
#   3. P1: triton-scan vs triton-sequential at batch 128, 512 hidden, SHD-like input (bench/engines.py)
#   4. the SHD-like training step against SpikingJelly and snnTorch, when installed (bench/peers.py)
# JSON lines go to $OUT when set, else bench/results/. Every stage has its own time limit; the
# exit status is 1 when any stage failed, and the other stages still run.
#   bash bench/gpu_check.sh            # on a GPU machine
#   bash bench/gpu_check.sh --tiny     # or GPU_CHECK_TINY=1: tiny sizes on the CPU, TRITON_INTERPRET=1 (CI)
set -u
cd "$(dirname "$0")/.."
TINY="${GPU_CHECK_TINY:-0}"
[ "${1:-}" = "--tiny" ] && TINY=1
DIR="${OUT:-bench/results}"
mkdir -p "$DIR"
PY="${PYTHON:-python}"
rc=0
stage() {  # stage NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)" >&2
  timeout "$limit" "$@" || { echo "== $name failed (status $?)" >&2; rc=1; }
}
if [ "$TINY" = 1 ]; then
  export TRITON_INTERPRET=1
  export SPIKESCAN_CACHE="${SPIKESCAN_CACHE:-$(mktemp -d)}"  # the tiny measurement never reaches a real cache
  stage measure 240 "$PY" bench/gpu_check.py --device cpu --tiny --out "$DIR/gpu_check-tiny.jsonl"
  stage p1 60 "$PY" bench/engines.py --quick --device cpu --batch 1 --hidden 4 --duration 5 --chunks 8 \
    --engines triton-scan,triton-sequential --repeats 1 --out "$DIR/gpu_check-p1-tiny.jsonl"
  echo "== peers: skipped in --tiny (the peers run at dt = 1 ms on the real workload only)" >&2
else
  stage pytest-gpu 200 "$PY" -m pytest -q -m gpu tests/backends/test_triton_gpu.py tests/backends/test_gpu_engines.py
  stage measure 200 "$PY" bench/gpu_check.py --device cuda --budget-s 170 --out "$DIR/gpu_check.jsonl"
  stage p1 90 "$PY" bench/engines.py --device cuda --batch 128 --hidden 512 --chunks 128 --repeats 3 \
    --max-seconds 20 --engines triton-scan,triton-sequential --out "$DIR/gpu_check-p1.jsonl"
  stage peers 90 "$PY" bench/peers.py --device cuda --peers snntorch,spikingjelly --repeats 3 \
    --spikescan-engines triton-scan,torch --spikescan-dtypes f32,f64 --out "$DIR/gpu_check-peers.jsonl"
fi
exit $rc
