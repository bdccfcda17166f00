"""The job record ``result.json``: schema, atomic writes, hashing and provenance.

Schema (every job writes exactly one, atomically)::

    {"schema": 1, "status": "ok" | "failed" | "skipped" | "running",
     "error": str | null, "error_type": str | null,
     "config_hash": str,            # sha256 of the job config that changes results
     "model": "pinn", "seed": 1, "tag": "",
     "metrics": {"amp_ssim": ..., "phase_ssim": ..., "reg_dy": ..., ...},   # flat, floats
     "timings": {"total_s", "data_s", "train_s", "inference_s", "eval_s"},
     "throughput": {"train_patterns_per_s", "inference_patterns_per_s"},
     "resources": {"peak_rss_mb", "n_params"},
     "final_losses": {...}, "data": {...cache hit/miss, counts...},
     "dtype_policy": "float32", "device": "CPU" | GPU name,   # networks: how and where they trained
     "onednn": true | false | null,  # networks: TensorFlow's CPU kernels were oneDNN's (TF_ENABLE_ONEDNN_OPTS)
     "provenance": {"git_sha", "host", "python", "versions", "started_at", "finished_at", "argv"},
     "config": {...resolved job config...}, "attempts": int}
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import socket
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ptycho_exp.files import RESULT_FILE, atomic_write_text

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Keys that never change a job's outcome: excluded from the config hash.
_HASH_EXCLUDE = ("paths", "hardware", "tag", "study_name")
_HASH_EXCLUDE_TRAIN = ("verbose", "tensorboard")


@contextmanager
def folder_lock(folder: Path | str):
    """Exclusive ``flock`` on a folder itself, held for the ``with`` block.

    Writers that share a folder (aggregations of one output folder, live-report refreshes of one
    sweep) take turns; the kernel drops the lock when its holder dies, so a killed writer never
    blocks the next. Without ``fcntl`` (Windows) or where the file system refuses locks, it does not lock.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # a file system without locks (some NFS set-ups): go on unlocked
            log.debug("no lock on %s (%s); writing without it", folder, exc)
        yield
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean_nan(obj: Any) -> Any:
    """Replace NaN/Inf by None so the file is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nan(v) for v in obj]
    return obj


def write_json(path: Path | str, payload: dict) -> None:
    text = json.dumps(_clean_nan(json.loads(json.dumps(payload, default=_json_default))),
                      indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text + "\n")


def read_result(job_dir: Path | str) -> dict | None:
    """The job's result record, or None when absent or unreadable (a torn write never exists)."""
    path = Path(job_dir) / RESULT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None


def config_hash(job_config: dict) -> str:
    """sha256 of the parts of the job config that change its result."""
    cfg = {k: v for k, v in job_config.items() if k not in _HASH_EXCLUDE}
    if isinstance(cfg.get("train"), dict):
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in _HASH_EXCLUDE_TRAIN}
    if isinstance(cfg.get("model"), dict) and isinstance(cfg["model"].get("iterative"), dict):
        cfg["model"] = dict(cfg["model"])
        cfg["model"]["iterative"] = {k: v for k, v in cfg["model"]["iterative"].items() if k != "python"}
    text = json.dumps(cfg, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_sha(cwd: Path | str | None = None) -> str | None:
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    sha = out.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return sha + ("-dirty" if dirty else "")


def package_versions(names: tuple[str, ...] = ("ptycho_exp", "numpy", "scipy", "scikit-image",
                                                "tensorflow", "keras", "hydra-core", "omegaconf",
                                                "optuna", "pandas", "ptylab")) -> dict:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def redact_secrets(text: str) -> str:
    """``text`` with the password of any ``scheme://user:password@`` URL replaced by ``***``."""
    import re

    return re.sub(r"(://[^:/@\s]+:)[^@\s]*@", r"\1***@", str(text))


def provenance() -> dict:
    return {"git_sha": git_sha(), "host": socket.gethostname(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": package_versions(),
            "argv": [redact_secrets(a) for a in sys.argv],
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "pid": os.getpid()}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
