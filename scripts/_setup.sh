# Shared set-up for scripts/demo and scripts/test (sourced, not run).
# Creates .venv when absent and installs reidd with its pinned dependencies (idempotent, offline-safe
# once the packages are cached). PyTorch comes from PyPI's normal build (CUDA-enabled; runs on CPU too).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[reidd] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
STAMP=.venv/.reidd-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "[reidd] installing reidd and its dependencies into .venv (first run downloads PyTorch: several minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  touch "$STAMP"
fi
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR="$ROOT/.yolo"
export PATH="$ROOT/.venv/bin:$PATH"
