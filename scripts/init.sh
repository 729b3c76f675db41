#!/usr/bin/env bash
# Set up the environment (virtualenv with the pinned requirements). Nothing needs compiling any more.
set -euo pipefail
cd "$(dirname "$0")/.."
make venv minilm
