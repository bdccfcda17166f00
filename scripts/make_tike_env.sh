#!/usr/bin/env bash
# Create .venv-tike: a separate environment for the Tike engine (GPU only).
#
# Tike 0.26 needs CuPy and pins numpy<2, which conflicts with the main stack (numpy 2, pandas 3), so it
# runs out of process: ptycho_exp hands it an NPZ and starts ptycho_exp/iterative/worker.py with
# .venv-tike/bin/python. The worker imports only numpy + tike there (no TensorFlow, pandas or ptycho_exp),
# so the environment holds tike, cupy, numpy<2 and scipy and nothing else.
#
# Usage: scripts/make_tike_env.sh [VENV_DIR]        (default: .venv-tike in the repository root)
#        make tike-env
# Env:   PYTHON=python3.11   interpreter used to create the venv (default: python3; tike needs >= 3.9)
#        CUPY_PKG=cupy-cuda12x   CuPy wheel matching your CUDA driver (cupy-cuda11x for CUDA 11)
#        TIKE_SPEC=tike          pip requirement for tike (e.g. "tike==0.26.0")
#        PIP_ARGS="..."          extra pip arguments (e.g. --index-url / --find-links for an offline mirror)
#        SKIP_SELFTEST=1         skip the final worker self-test on the GPU
# After it succeeds, jobs find the environment by itself (model.iterative.python defaults to
# $PTYCHO_EXP_TIKE_PYTHON or .venv-tike/bin/python):  python -m ptycho_exp model=tike ...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-tike}"
PYTHON="${PYTHON:-python3}"
CUPY_PKG="${CUPY_PKG:-cupy-cuda12x}"
TIKE_SPEC="${TIKE_SPEC:-tike}"
PIP_ARGS="${PIP_ARGS:-}"

fail() { echo "make_tike_env: ERROR: $*" >&2; exit 1; }
say() { echo "make_tike_env: $*"; }

command -v "$PYTHON" >/dev/null 2>&1 || fail "interpreter '$PYTHON' not found (set PYTHON=python3.X)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
  || fail "$PYTHON is $("$PYTHON" -V 2>&1); tike needs Python >= 3.9 (set PYTHON=python3.X)"

GPU_OK=1
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  GPU_OK=0
  echo "make_tike_env: WARNING: no NVIDIA GPU/driver visible (nvidia-smi failed)." >&2
  echo "make_tike_env: Tike runs only on CUDA GPUs; the environment can be built here but not used." >&2
else
  say "GPU: $(nvidia-smi -L | head -n 1)"
  CUDA_MAJOR="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -n 1)"
  if [ -n "$CUDA_MAJOR" ] && [ "$CUDA_MAJOR" -lt 12 ] && [ "$CUPY_PKG" = "cupy-cuda12x" ]; then
    echo "make_tike_env: WARNING: the driver supports CUDA $CUDA_MAJOR; cupy-cuda12x needs CUDA 12." >&2
    echo "make_tike_env: rerun with CUPY_PKG=cupy-cuda11x if the check below fails." >&2
  fi
fi

if [ -e "$VENV" ] && [ ! -x "$VENV/bin/python" ]; then
  fail "$VENV exists but has no bin/python: remove it (rm -rf '$VENV') and rerun"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON ($("$PYTHON" -V 2>&1))"
  "$PYTHON" -m venv "$VENV" \
    || fail "'$PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi

# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install $PIP_ARGS --upgrade pip >/dev/null \
  || fail "cannot upgrade pip in $VENV (no network? set PIP_ARGS for a mirror)"
say "installing $TIKE_SPEC $CUPY_PKG 'numpy<2' scipy"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install $PIP_ARGS "$TIKE_SPEC" "$CUPY_PKG" "numpy<2" scipy \
  || fail "pip install failed (no network? wrong CuPy wheel for your CUDA? try CUPY_PKG=cupy-cuda11x)"

say "checking the import and the GPU"
set +e
"$VENV/bin/python" - <<'EOF'
import sys
try:
    import numpy, scipy, cupy, tike, tike.ptycho
except Exception as e:  # noqa: BLE001
    print(f"import failed: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(3)
if int(numpy.__version__.split(".")[0]) >= 2:
    print(f"numpy {numpy.__version__} installed, but tike needs numpy<2", file=sys.stderr)
    sys.exit(3)
print(f"tike {getattr(tike, '__version__', '?')}, cupy {cupy.__version__}, numpy {numpy.__version__}, "
      f"python {sys.version.split()[0]}")
try:
    n = cupy.cuda.runtime.getDeviceCount()
    cupy.arange(4).sum().item()  # a kernel actually runs
except Exception as e:  # noqa: BLE001
    print(f"CUDA unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(4)
if n < 1:
    print("no CUDA GPU visible", file=sys.stderr)
    sys.exit(4)
print(f"{n} GPU(s) usable")
EOF
rc=$?
set -e
if [ "$rc" -eq 4 ]; then
  if [ "$GPU_OK" -eq 0 ]; then
    say "installed in $VENV, but there is no usable GPU here: model=tike will refuse to run on this machine"
    exit 0
  fi
  fail "installed, but CuPy cannot use the GPU (driver/CUDA mismatch? try CUPY_PKG=cupy-cuda11x)"
elif [ "$rc" -ne 0 ]; then
  fail "installed, but the import check failed (see the message above)"
fi

if [ "${SKIP_SELFTEST:-0}" != "1" ]; then
  say "self-test: the engine worker reconstructs a tiny simulated scan with Tike (rPIE, 20 iterations)"
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  set +e
  PYTHONPATH="$ROOT/ptycho_exp/iterative" "$VENV/bin/python" - "$TMP" <<'EOF'
import sys
import numpy as np
from protocol import write_engine_input  # the worker's own sibling module (numpy only)
n, tmp = 32, sys.argv[1]
rng = np.random.default_rng(0)
obj = np.exp(1j * 0.3 * rng.standard_normal((96, 96))).astype(np.complex64)
yy, xx = np.mgrid[:n, :n] - n / 2
probe = (np.hypot(yy, xx) < n / 4).astype(np.complex64)
c = np.arange(24.0, 73.0, 6.0)
pos = np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
amp = [np.sqrt(np.fft.fftshift(np.abs(np.fft.fft2(probe * obj[int(y) - n // 2:int(y) + n // 2,
                                                           int(x) - n // 2:int(x) + n // 2])) ** 2) / n**2)
       for y, x in pos]
write_engine_input(f"{tmp}/in.npz", np.asarray(amp, np.float32), pos, probe,
                   {"engine": "tike", "iterations": 20, "batch_size": 2})
EOF
  "$VENV/bin/python" "$ROOT/ptycho_exp/iterative/worker.py" "$TMP/in.npz" "$TMP/out.npz"
  rc=$?
  set -e
  [ "$rc" -eq 0 ] && [ -f "$TMP/out.npz" ] \
    || fail "the worker self-test failed (see the message above; PTYCHO_EXP_WORKER_TRACEBACK=1 for details)"
  "$VENV/bin/python" -c "
import numpy as np, json
z = np.load('$TMP/out.npz', allow_pickle=False)
err = z['data_error']; meta = json.loads(str(z['metadata_json']))
print('make_tike_env: self-test ok: tike %s, %d iterations in %.2f s, data error %.3g -> %.3g'
      % (meta['version'], meta['iterations'], meta['seconds'], err[0], err[-1]))
assert np.isfinite(err).all() and err[-1] < err[0], 'the data error did not decrease'
" || fail "the worker self-test produced a bad result"
fi
say "OK -> jobs use $VENV/bin/python (model=tike; or set PTYCHO_EXP_TIKE_PYTHON / model.iterative.python)"
