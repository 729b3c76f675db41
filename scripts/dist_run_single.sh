#!/usr/bin/env bash
# Distributed training on one machine: ./scripts/dist_run_single.sh <num_gpus> <task>/train_end2end.py <cfg> <out> [KEY VALUE ...]
# Without GPUs it starts <num_gpus> CPU processes (gloo), so any command can be tried on a laptop.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 <num_gpus> <task>/train_end2end.py <cfg> <out_dir> [KEY VALUE ...]" >&2
    exit 2
fi
source "$(dirname "$0")/_env.sh"
NUM_GPUS=$1; SCRIPT=$2; CFG=$3; OUT=$4; shift 4
exec "${TORCHRUN[@]}" --standalone --nproc_per_node "${NUM_GPUS}" "${SCRIPT}" --cfg "${CFG}" --model-dir "${OUT}" --dist "$@"
