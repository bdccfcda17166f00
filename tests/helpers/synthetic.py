"""Synthetic sweep folders shaped like Hydra's (for tests and ``bench/aggregate_scale.py``).

Writes ``<sweep>/multirun.yaml`` and, per job, ``.hydra/config.yaml``, ``.hydra/overrides.yaml`` and
``result.json`` (via :func:`ptycho_exp.results.write_json`) with random but seeded metrics. Nothing here
trains anything; it only produces the files the aggregator reads.

Results are in the current format (``metrics_version`` 2): headline metrics, ``phase_ssim_ref`` /
``phase_ms_ssim_ref``, ``null_*`` scores of a flat image (quality ``null_quality``), ``scored_against``,
``metrics_valid`` / ``invalid_reason``; ``legacy=True`` writes the older format without any of those.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ptycho_exp.files import RESULT_FILE, atomic_write_text
from ptycho_exp.results import write_json

METRIC_NAMES = ("mae", "mse", "psnr", "psnr255", "ssim", "ms_ssim", "frc50", "frc_1_7", "pearson")
DEFAULT_QUALITY = {"pinn": 0.90, "baseline": 0.80, "ptylab": 0.70, "tike": 0.75}


def _yaml_dump(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def _set_dotted(cfg: dict, key: str, value: Any) -> None:
    parts = key.lstrip("+").split(".")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _fmt(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def synthetic_metrics(quality: float, rng: np.random.Generator, noise: float = 0.03) -> dict[str, float]:
    """Flat ``amp_*``/``phase_*`` metrics roughly consistent with a quality level in [0, 1]."""
    out: dict[str, float] = {}
    for part in ("amp", "phase"):
        q = float(np.clip(quality + rng.normal(0, noise), 0.01, 0.999))
        out[f"{part}_ssim"] = q
        out[f"{part}_ms_ssim"] = float(np.clip(q + rng.normal(0, noise / 2), 0.0, 1.0))
        out[f"{part}_mae"] = float((1 - q) * 0.2 + abs(rng.normal(0, 0.005)))
        out[f"{part}_mse"] = float(out[f"{part}_mae"] ** 2 * 1.5)
        out[f"{part}_psnr"] = float(10 + 25 * q + rng.normal(0, 0.5))
        out[f"{part}_psnr255"] = float(out[f"{part}_psnr"] + 48.1)
        out[f"{part}_frc50"] = float(20 + 150 * q + rng.normal(0, 3))
        out[f"{part}_frc_1_7"] = float(30 + 160 * q + rng.normal(0, 3))
        out[f"{part}_pearson"] = float(np.clip(q + rng.normal(0, noise / 3), -1, 1))
    out["reg_dy"] = float(rng.normal(0, 0.3))
    out["reg_dx"] = float(rng.normal(0, 0.3))
    return out


def current_format_metrics(quality: float, rng: np.random.Generator, null_quality: float = 0.03) -> dict[str, float]:
    """:func:`synthetic_metrics` plus the published-convention phase scores (near 1 for any weak-phase image)
    and the ``null_*`` scores of a flat image (quality ``null_quality``)."""
    out = synthetic_metrics(quality, rng)
    out["phase_ssim_ref"] = float(np.clip(0.95 + 0.04 * quality + rng.normal(0, 0.005), 0.0, 1.0))
    out["phase_ms_ssim_ref"] = float(np.clip(0.96 + 0.03 * quality + rng.normal(0, 0.005), 0.0, 1.0))
    null = synthetic_metrics(null_quality, rng, noise=0.005)
    out.update({f"null_{k}": v for k, v in null.items() if not k.startswith("reg_")})
    return out


def write_multirun_yaml(sweep_dir: Path | str, task_overrides: Sequence[str], *,
                        sweeper: Mapping | None = None, launcher: Mapping | None = None,
                        study_name: str | None = None, objective: Any = None) -> Path:
    """A minimal ``multirun.yaml`` with the fields the study tools read."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"hydra": {
        "sweep": {"dir": str(sweep_dir), "subdir": "${hydra.job.num}"},
        "launcher": dict(launcher or {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}),
        "sweeper": dict(sweeper or {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                    "max_batch_size": None, "params": None}),
        "overrides": {"hydra": [f"hydra.sweep.dir={sweep_dir}", "hydra.mode=MULTIRUN"],
                      "task": list(task_overrides)},
        "mode": "MULTIRUN"},
        "study_name": study_name or sweep_dir.name, "objective": objective}
    path = sweep_dir / "multirun.yaml"
    atomic_write_text(path, _yaml_dump(cfg))
    return path


def write_job(job_dir: Path | str, overrides: Sequence[str], config: Mapping,
              result: Mapping | None) -> Path:
    """One job folder: ``.hydra/{config,overrides}.yaml`` and optionally ``result.json``."""
    job_dir = Path(job_dir)
    (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    atomic_write_text(job_dir / ".hydra" / "config.yaml", _yaml_dump(dict(config)))
    atomic_write_text(job_dir / ".hydra" / "overrides.yaml", _yaml_dump(list(overrides)))
    if result is not None:
        write_json(job_dir / RESULT_FILE, dict(result))
    return job_dir


def base_config(model: str = "pinn", seed: int = 1) -> dict:
    return {"model": {"name": model, "nll_weight": 1.0, "n_filters_scale": 2},
            "data": {"object": "lines", "N": 64, "gridsize": 1, "nphotons": 1e9, "n_train": 512},
            "train": {"epochs": 50, "batch_size": 16, "learning_rate": 1e-3},
            "eval": {"reference": "ground_truth", "reference_algorithm": "ePIE", "reference_iterations": 300},
            "seed": seed, "tag": "", "study_name": "synthetic", "objective": None}


def write_synthetic_sweep(
    sweep_dir: Path | str,
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    rng_seed: int = 0,
    quality: Mapping[str, float] | Callable[[dict], float] | None = None,
    failed: Iterable[int] = (),
    running: Iterable[int] = (),
    pending: Iterable[int] = (),
    missing: Iterable[int] = (),
    recon_shape: tuple[int, int] | None = None,
    study_name: str = "synthetic",
    objective: Any = None,
    sweeper: Mapping | None = None,
    launcher: Mapping | None = None,
    compare_png: bool = False,
    legacy: bool = False,
    null_quality: float = 0.03,
    scored_against: str | Callable[[dict], str] = "ground_truth",
    invalid: Mapping[int, str] | None = None,
) -> list[Path]:
    """Write a full synthetic sweep; returns the job folders written.

    ``grid`` maps override keys to values (``model`` is the model group); jobs are the cartesian product in
    Hydra's order. ``quality`` maps model -> level, or is a function of the job's parameter dict (keys as in
    ``grid``); metrics are drawn around it. Job indices in ``failed``/``running`` get that status; those in
    ``pending`` get a folder without ``result.json``; those in ``missing`` get no folder at all (planned, not
    started). ``recon_shape`` writes a tiny ``recon.npz`` (recon, gt) per ok job.

    ``legacy`` writes results as older versions did (no ``metrics_version``, null or ``_ref`` scores,
    ``scored_against``, ``metrics_valid``; ``phase_ssim`` on the published ``(phi+pi)/2pi`` scale, i.e. near 1).
    ``scored_against`` is the reference label of every job, or a function of the job's parameter dict;
    ``invalid`` maps job indices to the ``invalid_reason`` of an ok job whose scores are invalid.
    """
    sweep_dir = Path(sweep_dir)
    grid = dict(grid or {"model": ["pinn", "baseline", "ptylab"], "data.n_train": [512, 1024],
                         "seed": [1, 2, 3]})
    failed, running, pending, missing = set(failed), set(running), set(pending), set(missing)
    rng = np.random.default_rng(rng_seed)
    task = [f"{k}={','.join(_fmt(v) for v in vals)}" for k, vals in grid.items()]
    write_multirun_yaml(sweep_dir, task, sweeper=sweeper, launcher=launcher, study_name=study_name,
                        objective=objective)
    gt = None
    if recon_shape is not None:
        yy, xx = np.mgrid[: recon_shape[0], : recon_shape[1]]
        amp = 0.5 + 0.4 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
        gt = (amp * np.exp(1j * 0.8 * np.cos(xx / 5.0 + yy / 7.0))).astype(np.complex64)
    jobs = []
    keys = list(grid)
    for num, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        params = dict(zip(keys, combo))
        if num in missing:
            continue
        model = str(params.get("model", "pinn"))
        seed = int(params.get("seed", 1))
        cfg = base_config(model, seed)
        cfg["study_name"] = study_name
        cfg["objective"] = objective
        for k, v in params.items():
            if k == "model":
                continue
            _set_dotted(cfg, k, v)
        overrides = [f"{k}={_fmt(v)}" for k, v in params.items()]
        job_dir = sweep_dir / str(num)
        if num in pending:
            jobs.append(write_job(job_dir, overrides, cfg, None))
            continue
        if callable(quality):
            q = float(quality(params))
        else:
            q = float((quality or DEFAULT_QUALITY).get(model, 0.5))
        n_train = params.get("data.n_train")
        if n_train is not None and model in ("pinn", "baseline"):
            q = q - 0.02 * (np.log2(1024) - np.log2(float(n_train)))
        if legacy:
            metrics = synthetic_metrics(q, rng)
            metrics["phase_ssim"] = float(np.clip(0.95 + 0.04 * q + rng.normal(0, 0.005), 0.0, 1.0))
            metrics["phase_ms_ssim"] = float(np.clip(0.96 + 0.03 * q + rng.normal(0, 0.005), 0.0, 1.0))
        else:
            metrics = current_format_metrics(q, rng, null_quality)
        train_s = float(0.0 if model in ("ptylab", "tike") else 20 + 0.05 * float(n_train or 512)
                        + rng.normal(0, 1))
        total = train_s + float(5 + abs(rng.normal(0, 1)))
        status = "failed" if num in failed else "running" if num in running else "ok"
        result: dict[str, Any] = {
            "schema": 1, "status": status, "error": None, "error_type": None,
            "config_hash": f"{num:016x}", "model": model, "seed": seed, "tag": "",
            "metrics": metrics if status == "ok" else {},
            "timings": ({"total_s": total, "data_s": 1.0, "train_s": train_s, "inference_s": 0.5,
                         "eval_s": 1.0} if status == "ok" else {}),
            "throughput": ({"train_patterns_per_s": 500.0, "inference_patterns_per_s": 4000.0}
                           if status == "ok" else {}),
            "resources": {"peak_rss_mb": float(800 + rng.normal(0, 10)), "n_params": 2_300_000},
            "provenance": {"started_at": "2025-01-01T00:00:00+00:00",
                           "finished_at": None if status == "running" else "2025-01-01T00:01:00+00:00"},
            "config": cfg, "attempts": 1,
        }
        sa = scored_against(params) if callable(scored_against) else scored_against
        if sa != "ground_truth":
            cfg["eval"]["reference"] = "iterative"
            algorithm, iterations = (sa.split(":") + ["ePIE", "300"])[1:3]
            cfg["eval"].update(reference_algorithm=algorithm, reference_iterations=int(iterations))
        if not legacy and status == "ok":
            bad = (invalid or {}).get(num)
            result.update({"scored_against": sa, "metrics_valid": bad is None, "invalid_reason": bad,
                           "metric_notes": {}, "metrics_version": 2})
        if status == "failed":
            result["error"] = "RuntimeError: synthetic failure\nTraceback (most recent call last): ..."
            result["error_type"] = "RuntimeError"
        if status == "running":
            from ptycho_exp.results import now_iso

            result["provenance"]["started_at"] = now_iso()
        write_job(job_dir, overrides, cfg, result)
        if status == "ok" and gt is not None:
            noise = (1.0 - q) * 0.3
            rec = gt * np.exp(1j * rng.uniform(-np.pi, np.pi))  # arbitrary global phase
            rec = rec + noise * (rng.normal(size=gt.shape) + 1j * rng.normal(size=gt.shape))
            rec = np.roll(rec, int(rng.integers(-1, 2)), axis=1)
            np.savez(job_dir / "recon.npz", recon=rec.astype(np.complex64), gt=gt)
        if status == "ok" and compare_png:
            _tiny_png(job_dir / "compare_amp_phase.png")
        jobs.append(job_dir)
    return jobs


def _tiny_png(path: Path) -> None:
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"\x00\x00\x00\x00"  # 1x1 grey pixel, filter byte + RGB
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    path.write_bytes(png)
