#!/usr/bin/env bash
# The GPU path at the configs' batch sizes (bench/gpu_step.py): VQA base at 64 per GPU and the end-to-end step at
# VCR's image batch, bf16 and fp16, eager and compiled, ours and the peer; the table goes into bench/RESULTS.md.
#   bench/gpu_check.sh                      # on a GPU machine, a few minutes
#   bench/gpu_check.sh --cpu-smoke          # tiny shapes on CPU, bf16, eager (the fast test suite runs this)
# Extra arguments go to bench/gpu_step.py (e.g. --results FILE, --steps N, --dtypes bf16).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "${1:-}" = "--cpu-smoke" ]; then
  shift
  exec "$PY" bench/gpu_step.py --cpu-smoke --steps 1 --warmup 1 --compile no --dtypes bf16 "$@"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
exec "$PY" bench/gpu_step.py "$@"
