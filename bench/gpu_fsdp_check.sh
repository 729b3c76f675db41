#!/usr/bin/env bash
# The one short check of TRAIN.DATA_PARALLEL ddp / zero1 / fsdp and DCP checkpoints on this machine's accelerators
# (bench/gpu_fsdp_check.py says what it checks). Without a GPU it runs its CPU variant (2 gloo processes).
# Usage: ./bench/gpu_fsdp_check.sh            (about 3-5 minutes; prints PASS/FAIL lines, exit status 1 on a FAIL)
set -euo pipefail
source "$(dirname "$0")/../scripts/_env.sh"
cd "${ROOT}"
nvidia-smi -L 2>/dev/null || echo "no GPU: CPU variant"
exec "${PYTHON}" bench/gpu_fsdp_check.py "$@"
