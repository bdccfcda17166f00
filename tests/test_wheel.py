"""The package as users get it: a built wheel, installed into a fresh venv, works from any folder.

Dependencies are reused from the running environment (a ``.pth`` line in the new venv), so nothing is
downloaded; ptycho_exp itself comes only from the wheel (its configs included).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e
TINY = ["data.N=32", "data.object_size=128", "data.n_train=32", "data.test_stride=8", "train.epochs=1",
        "train.tensorboard=false", "eval.upsample_factor=10"]


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} -> {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # build from a copy, so the checkout gets no build/ or egg-info
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "multirun", "outputs", ".cache", "build", "*.egg-info", "__pycache__", "bench"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PTYCHO_EXP_CACHE=str(tmp / "cache"), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
          str(src)], tmp, env)
    wheels = list((tmp / "dist").glob("ptycho_exp-*.whl"))
    assert len(wheels) == 1
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c", purelib], text=True).strip())
    (site / "_ptycho_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
         tmp, env)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, env


def test_wheel_runs_from_any_folder(wheel_venv, tmp_path):
    venv, env = wheel_venv
    py = str(venv / "bin" / "python")
    where = _run([py, "-c", "import ptycho_exp; print(ptycho_exp.__file__)"], tmp_path, env).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout

    cfg = _run([py, "-m", "ptycho_exp", "data.N=32", "--cfg", "job"], tmp_path, env).stdout
    assert "'N': 32" in cfg and "name: pinn" in cfg

    job = tmp_path / "job"
    _run([py, "-m", "ptycho_exp", *TINY, f"hydra.run.dir={job}"], tmp_path, env)
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "ok", result.get("error")
    assert result["metrics"]["amp_ssim"] == result["metrics"]["amp_ssim"]  # a number, not NaN

    plan = _run([str(venv / "bin" / "ptycho-exp"), "plan", "study=quick", f"hydra.sweep.dir={tmp_path / 'sw'}"],
                tmp_path, env).stdout
    assert "pending" in plan
    _run([str(venv / "bin" / "ptycho-exp"), "aggregate", str(job), "--out", str(tmp_path / "agg")], tmp_path, env)
    assert (tmp_path / "agg" / "results.csv").is_file() and (tmp_path / "agg" / "report.html").is_file()
    _run([str(venv / "bin" / "ptycho-exp"), "data", "simulate", "--which", "test", "--out", str(tmp_path / "t.npz"),
          "data.N=32", "data.object_size=128"], tmp_path, env)
    assert "patterns" in _run([str(venv / "bin" / "ptycho-exp"), "data", "inspect", str(tmp_path / "t.npz")],
                              tmp_path, env).stdout.lower()
