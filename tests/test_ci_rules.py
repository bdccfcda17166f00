"""Rules CI depends on: a test that needs SLURM or a browser fails instead of skipping under CI=true."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NEEDS_SERVICE = '''
import pytest

@pytest.mark.slurm
def test_needs_slurm():
    pytest.skip("no SLURM here")

def test_plain():
    pytest.skip("an ordinary skip")
'''


def _pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci, rc, says", [(None, 0, "2 skipped"), ("true", 1, "1 failed, 1 skipped")])
def test_service_skip_fails_only_under_ci(tmp_path, ci, rc, says):
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_service.py").write_text(NEEDS_SERVICE)
    out = _pytest(tmp_path, ci)
    assert out.returncode == rc, out.stdout + out.stderr
    assert says in out.stdout
    if ci:
        assert "skipped under CI=true" in out.stdout and "no SLURM here" in out.stdout
