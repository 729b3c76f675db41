#!/usr/bin/env bash
# Distributed training over several machines; run once per machine:
#   ./scripts/dist_run_multi.sh <num_nodes> <node_rank> <master_addr> <gpus_per_node> <task>/train_end2end.py <cfg> <out> [KEY VALUE ...]
set -euo pipefail
if [ $# -lt 7 ]; then
    echo "usage: $0 <num_nodes> <node_rank> <master_addr> <gpus_per_node> <script> <cfg> <out_dir> [KEY VALUE ...]" >&2
    exit 2
fi
source "$(dirname "$0")/_env.sh"
NNODES=$1; NODE_RANK=$2; MASTER_ADDR=$3; NPROC=$4; SCRIPT=$5; CFG=$6; OUT=$7; shift 7
exec "${TORCHRUN[@]}" --nnodes "${NNODES}" --node_rank "${NODE_RANK}" --master_addr "${MASTER_ADDR}" \
    --master_port "${MASTER_PORT:-29500}" --nproc_per_node "${NPROC}" \
    "${SCRIPT}" --cfg "${CFG}" --model-dir "${OUT}" --dist "$@"
