#!/usr/bin/env bash
# One process, no launcher: ./scripts/nondist_run.sh <task>/train_end2end.py <cfg> <out> [KEY VALUE ...]
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 <task>/train_end2end.py <cfg> <out_dir> [KEY VALUE ...]" >&2
    exit 2
fi
source "$(dirname "$0")/_env.sh"
SCRIPT=$1; CFG=$2; OUT=$3; shift 3
exec "${PYTHON}" "${SCRIPT}" --cfg "${CFG}" --model-dir "${OUT}" "$@"
