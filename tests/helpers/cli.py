"""Running the real entry points in subprocesses, in tmp folders, with tiny job settings."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Tiny job settings (N=32, seconds per job) shared by end-to-end tests.
TINY = ["data.N=32", "data.object_size=128", "data.n_train=64", "data.test_stride=8", "train.epochs=2",
        "train.tensorboard=false", "eval.upsample_factor=10"]


def onednn_expected() -> bool:
    """Whether a job started from this environment should run on TensorFlow's oneDNN CPU kernels."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() in ("1", "true")


def run_cli(args: list[str], tmp_path: Path, timeout: float = 600, env: dict | None = None,
            module: str = "ptycho_exp") -> subprocess.CompletedProcess:
    """``python -m <module> args`` with the dataset cache inside tmp_path."""
    full_env = {**os.environ, "PTYCHO_EXP_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "",
                "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)

# The shared real sweep (conftest's ``quick_sweep``): study=quick, 2 models x 2 seeds, seconds per job, in one
# process. Tests that only read a finished sweep's outputs use it instead of running their own.
QUICK_SWEEP = ["-m", "study=quick", "data.n_train=32", "train.epochs=1", "data.object_size=64", "data.test_stride=8",
               "train.tensorboard=false", "eval.upsample_factor=10", "hardware.isolate=false"]
