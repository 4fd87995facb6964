#!/usr/bin/env bash
# The GPU path on a real GPU, in one short run (under 8 minutes):
#   - CUDA detector in fp16 with frames batched across cameras, CUDA embedder, FAISS on the GPU when
#     faiss has GPU support, and the streams benchmark: how many 1080p cameras at 10 frames/s one GPU
#     sustains end to end, with per-stage figures (scripts/bench_streams.py).
# Packages: the project's .venv when there is one; else the machine's python3 plus, on a machine without
# internet, wheels carried in .whl/ (installed into /tmp/reidd-site); else `pip install -e .` from PyPI.
# Output: the console and $OUT/gpu_check.log (OUT defaults to .state/gpu_check); the last line is JSON.
#   scripts/gpu_check.sh                 # on a GPU machine
#   REIDD_GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh   # the same steps on the CPU (checks the script itself)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/.state/gpu_check}"
mkdir -p "$OUT"
DEVICE="${REIDD_GPU_CHECK_DEVICE:-cuda}"
CAMERAS="${REIDD_GPU_CHECK_CAMERAS:-1,4,8,16,32}"
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR="$ROOT/.yolo" PYTHONUNBUFFERED=1
exec > >(tee "$OUT/gpu_check.log") 2>&1

if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    echo "[gpu_check] installing the carried wheels (.whl/) into /tmp/reidd-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/reidd-site .whl/*.whl
    export PYTHONPATH="/tmp/reidd-site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if ! "$PY" -c "import torch, ultralytics, faiss, redis, pydantic, lap, cv2" 2>/dev/null; then
    echo "[gpu_check] installing reidd and its dependencies from PyPI"
    "$PY" -m pip install -q -e . || { echo "gpu_check: packages missing and PyPI unreachable: carry wheels in .whl/ (see the script's header)"; exit 2; }
  fi
fi

echo "[gpu_check] $(date -u +%FT%TZ) on $(hostname); device $DEVICE"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi -L || { echo "gpu_check: nvidia-smi found no GPU"; exit 2; }
fi
"$PY" - "$DEVICE" <<'PY'
import sys
import torch
dev = sys.argv[1]
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
if dev.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device")
try:
    import faiss
    print(f"faiss {faiss.__version__}, GPUs visible to faiss: {faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0}")
except ImportError as exc:
    print(f"faiss: {exc}")
PY

HALF=()
[ "$DEVICE" != cpu ] && HALF=(--half)
timeout 420 "$PY" scripts/bench_streams.py --device "$DEVICE" "${HALF[@]}" --cameras "$CAMERAS" \
  --seconds "${REIDD_GPU_CHECK_SECONDS:-10}" --timeout 100
