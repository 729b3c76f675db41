# Shared by the launch scripts: repository root on PYTHONPATH, and the project's virtualenv when it exists.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
if [ -x "${ROOT}/.venv/bin/python" ]; then
    PYTHON="${ROOT}/.venv/bin/python"
else
    PYTHON="$(command -v python3)"
fi
TORCHRUN=("${PYTHON}" -m torch.distributed.run)
