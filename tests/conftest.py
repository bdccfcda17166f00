"""Fixtures and hooks only; shared helpers live in ``tests/helpers`` (import them from there)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.cli import QUICK_SWEEP, run_cli


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


@pytest.fixture
def cli(tmp_path):
    def _run(args, **kw):
        return run_cli(args, tmp_path, **kw)
    return _run


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory) -> Path:
    """A finished real ``study=quick`` sweep folder (4 jobs through the entry point), built once per test run.

    Read it, never write into it: tests that need a sweep of their own (resume, failures, launchers) run one.
    """
    tmp = tmp_path_factory.mktemp("quick")
    sweep = tmp / "sweep"
    proc = run_cli([*QUICK_SWEEP, f"hydra.sweep.dir={sweep}"], tmp, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sweep
