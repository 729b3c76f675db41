#!/usr/bin/env bash
# Slurm: ./scripts/dist_run_slurm.sh <partition> <job_name> <task>/train_end2end.py <cfg> <out> [gpus=8]
# One task per GPU; rank and world size come from SLURM variables (--slurm).
set -euo pipefail
if [ $# -lt 5 ]; then
    echo "usage: $0 <partition> <job_name> <script> <cfg> <out_dir> [num_gpus=8]" >&2
    exit 2
fi
source "$(dirname "$0")/_env.sh"
PARTITION=$1; JOB=$2; SCRIPT=$3; CFG=$4; OUT=$5; GPUS=${6:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
exec srun -p "${PARTITION}" --job-name="${JOB}" --gres=gpu:"${GPUS_PER_NODE}" --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" --cpus-per-task="${CPUS_PER_TASK}" --kill-on-bad-exit=1 \
    "${PYTHON}" -u "${SCRIPT}" --cfg "${CFG}" --model-dir "${OUT}" --slurm --dist
