#!/usr/bin/env bash
# Create .venv-tike: a separate environment for the Tike engine (GPU only).
#
# Tike 0.26 needs CuPy and pins numpy<2, which conflicts with the main stack (numpy 2, pandas 3), so it
# runs out of process: ptycho_exp hands it an NPZ and starts ptycho_exp/iterative/worker.py with
# .venv-tike/bin/python (the worker imports only numpy + tike there).
#
# Usage: scripts/make_tike_env.sh [VENV_DIR]        (default: .venv-tike in the repository root)
# Env:   PYTHON=python3.11   interpreter used to create the venv (default: python3)
#        CUPY_PKG=cupy-cuda12x   CuPy wheel matching your CUDA driver (cupy-cuda11x for CUDA 11)
#        TIKE_SPEC=tike          pip requirement for tike (e.g. "tike==0.26.0")
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-tike}"
PYTHON="${PYTHON:-python3}"
CUPY_PKG="${CUPY_PKG:-cupy-cuda12x}"
TIKE_SPEC="${TIKE_SPEC:-tike}"

fail() { echo "make_tike_env: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || fail "interpreter '$PYTHON' not found (set PYTHON=...)"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "make_tike_env: WARNING: no NVIDIA GPU/driver visible (nvidia-smi failed)." >&2
  echo "make_tike_env: Tike runs only on CUDA GPUs; the environment can be built but not used here." >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "make_tike_env: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV" || fail "python -m venv failed (install the venv module for $PYTHON)"
fi

"$VENV/bin/python" -m pip install --upgrade pip >/dev/null || fail "cannot upgrade pip in $VENV"
echo "make_tike_env: installing $TIKE_SPEC $CUPY_PKG numpy<2"
"$VENV/bin/python" -m pip install "$TIKE_SPEC" "$CUPY_PKG" "numpy<2" \
  || fail "pip install failed (no network? wrong CuPy wheel for your CUDA? try CUPY_PKG=cupy-cuda11x)"

echo "make_tike_env: checking the import and the GPU"
set +e
"$VENV/bin/python" - <<'EOF'
import sys
try:
    import numpy, cupy, tike, tike.ptycho
except Exception as e:  # noqa: BLE001
    print(f"import failed: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(3)
try:
    n = cupy.cuda.runtime.getDeviceCount()
except Exception as e:  # noqa: BLE001
    print(f"CUDA unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(4)
if n < 1:
    print("no CUDA GPU visible", file=sys.stderr)
    sys.exit(4)
print(f"tike {getattr(tike, '__version__', '?')}, cupy {cupy.__version__}, numpy {numpy.__version__}, {n} GPU(s)")
EOF
rc=$?
set -e
if [ "$rc" -eq 4 ]; then
  fail "installed, but CuPy sees no usable CUDA GPU/driver: Tike cannot run on this machine"
elif [ "$rc" -ne 0 ]; then
  fail "installed, but 'import tike, cupy' failed (see the message above)"
fi
echo "make_tike_env: OK -> use python=$VENV/bin/python with settings engine=tike"
