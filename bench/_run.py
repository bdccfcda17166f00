"""Small helpers shared by the framework benchmarks: run the real CLIs, time them, read job results."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Tiny jobs (seconds each) used where the framework, not the science, is measured.
TINY = ["data.N=32", "data.object_size=96", "data.n_train=64", "data.n_test=64", "data.test_stride=8",
        "train.epochs=1", "train.tensorboard=false", "train.save_model=false", "eval.figures=false",
        "eval.upsample_factor=10"]


def bench_env(cache_dir: Path | str, **extra: str) -> dict:
    """Environment of a benchmark subprocess: CPU only, a job's TensorFlow settings (quiet, oneDNN on),
    dataset cache in ``cache_dir``; so a plain loop and a job compare on equal terms."""
    from ptycho_exp.isolation import tensorflow_env

    return {**os.environ, **tensorflow_env(), "PTYCHO_EXP_CACHE": str(cache_dir),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""), **extra}


def run(cmd: list[str], env: dict | None = None, check: bool = True, timeout: float = 3600) -> tuple[float, str]:
    """Run ``cmd`` from the repo root; return (wall seconds, combined output)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return dt, proc.stdout + proc.stderr


def timed(cmd: list[str], repeat: int, env: dict | None = None) -> dict:
    """Median / min / max wall time of ``repeat`` runs of ``cmd``."""
    times = [run(cmd, env)[0] for _ in range(repeat)]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def python() -> str:
    return sys.executable


def job_results(sweep_dir: Path | str) -> list[dict]:
    """Every ``result.json`` under a sweep folder (one per job)."""
    return [json.loads(p.read_text()) for p in sorted(Path(sweep_dir).rglob("result.json"))]
