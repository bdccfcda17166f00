"""Shared fixtures: run the real entry points in subprocesses, in tmp folders."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tiny job settings (N=32, seconds per job) shared by end-to-end tests.
TINY = ["data.N=32", "data.object_size=128", "data.n_train=64", "data.test_stride=8", "train.epochs=2",
        "train.tensorboard=false", "eval.upsample_factor=10"]


def pytest_configure(config):
    """Tests that import TensorFlow in this process get a job's TensorFlow settings (oneDNN on, quiet)."""
    from ptycho_exp.isolation import use_tensorflow_env

    use_tensorflow_env()


# Tests that need an outside service. Locally they skip with the reason when it is missing; under CI=true a
# skip is a failure, so a CI stage cannot pass by running nothing.
SERVICE_MARKERS = ("slurm", "browser")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and os.environ.get("CI", "").lower() == "true"
            and any(item.get_closest_marker(m) for m in SERVICE_MARKERS)):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a CI stage must run its tests): {reason}"


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


@pytest.fixture
def cli(tmp_path):
    def _run(args, **kw):
        return run_cli(args, tmp_path, **kw)
    return _run
