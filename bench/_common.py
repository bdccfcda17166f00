"""Shared helpers for the bench scripts: machine description and atomic JSON results.

Every bench script writes ``bench/results/<name>.json`` through :func:`write_result`, so each file carries
the machine it was measured on and when. Nothing here imports TensorFlow at module import time.
"""
from __future__ import annotations

import os
import platform
import socket
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Let ``python bench/<script>.py`` import the package from a source checkout without installing it.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _total_memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 2)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpus(with_tf: bool) -> list[str]:
    """GPU names as TensorFlow sees them; before TF is loaded (importing it is slow, and a script's jobs run
    in child processes), the GPUs ``nvidia-smi`` lists, unless ``CUDA_VISIBLE_DEVICES`` hides them all."""
    if not with_tf or "tensorflow" not in sys.modules:
        return _nvidia_smi_gpus()
    try:
        from ptycho_exp.models.fit import gpu_names

        return gpu_names()
    except Exception:  # noqa: BLE001 - machine info must never break a benchmark
        return []


def _nvidia_smi_gpus() -> list[str]:
    import subprocess

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], check=False,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()] if out.returncode == 0 else []


def machine_info(with_tf: bool = True) -> dict:
    """Describe the machine a benchmark ran on.

    Parameters
    ----------
    with_tf : bool
        Also list GPUs and the TensorFlow version when TensorFlow is already imported.

    Returns
    -------
    dict
        host, platform, python, cpu model, usable cores, total memory (GiB), load average, GPUs and
        package versions.
    """
    from ptycho_exp.results import git_sha, now_iso, package_versions

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": _cpu_model(), "cpus_usable": _usable_cpus(), "cpus_total": os.cpu_count(),
            "memory_gb": _total_memory_gb(), "loadavg": load, "gpus": _gpus(with_tf),
            "git_sha": git_sha(_ROOT), "measured_at": now_iso(),
            "versions": package_versions(("ptycho_exp", "numpy", "tensorflow", "keras"))}


def result_name(name: str) -> str:
    """``name`` if it is a valid result file stem, else ``ValueError`` (usable as an argparse ``type``)."""
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ValueError(f"bench result name {name!r}: use letters, digits, '-', '_' or '.' only")
    return name


def write_result(name: str, payload: dict, results_dir: Path | str | None = None) -> Path:
    """Write ``payload`` plus machine info to ``<results_dir>/<name>.json`` atomically.

    Parameters
    ----------
    name : str
        File stem, e.g. ``"throughput"``; letters, digits, ``-``, ``_`` and ``.`` only.
    payload : dict
        JSON-serialisable results; NaN/Inf become null.
    results_dir : path, optional
        Defaults to ``bench/results``.

    Returns
    -------
    Path
        The file written.
    """
    result_name(name)
    from ptycho_exp.results import write_json

    path = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out = path / f"{name}.json"
    write_json(out, {"name": name, "machine": machine_info(), **payload})
    return out


def blur_amplitude(patches, sigma: float, axes=(-2, -1)):
    """``patches`` with their amplitude blurred by a Gaussian of ``sigma`` px over ``axes``; phase kept.

    The calibration of the quality diagnostics: what a given loss or score means in pixels of blur.
    """
    import numpy as np
    from scipy.ndimage import gaussian_filter

    if sigma == 0:
        return patches
    return gaussian_filter(np.abs(patches), sigma, axes=axes) * np.exp(1j * np.angle(patches))


def load_pinn_job(job: Path, samples: int, min_gridsize: int = 1):
    """A finished PINN job's saved network and test data, with ``samples`` evenly spaced test indices.

    Exits with a message naming the problem when ``job`` is not a finished PINN job of at least
    ``min_gridsize`` or its test data has no ground-truth patches. Returns ``(model, meta, datasets, pick)``.
    """
    import json

    import numpy as np
    from omegaconf import OmegaConf

    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.models.fit import load_network

    cfg_path = Path(job) / "job_config.json"
    if not cfg_path.is_file():
        sys.exit(f"{cfg_path} not found: give the folder of a finished job")
    cfg = OmegaConf.create(json.loads(cfg_path.read_text()))
    if cfg.model.name != "pinn" or int(cfg.data.gridsize) < min_gridsize:
        sys.exit(f"{cfg_path}: model.name={cfg.model.name!r}, data.gridsize={cfg.data.gridsize}; "
                 f"this diagnostic needs a PINN job with data.gridsize >= {min_gridsize}")
    model, meta = load_network(job)
    ds = build_datasets(cfg.data, seed=int(cfg.seed), cache_dir=cfg.paths.cache_dir, need_train=False)
    if ds.test.patches is None:
        sys.exit("the job's test data has no ground-truth patches (simulated data is needed)")
    pick = np.linspace(0, ds.test.n - 1, min(samples, ds.test.n)).round().astype(int)
    return model, meta, ds, pick
