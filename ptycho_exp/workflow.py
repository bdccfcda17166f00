"""The science of one job: data -> reconstruction (network or iterative) -> evaluation -> files.

Called by :func:`ptycho_exp.run.train_and_evaluate`; returns the parts of ``result.json`` that
depend on the science (metrics, timings, throughput, resources, data summary).
"""
from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_exp.config import NETWORK_MODELS

log = logging.getLogger("ptycho_exp.workflow")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def iterative_settings(cfg: Any, seed: int) -> dict:
    """Settings handed to an iterative engine worker."""
    it = cfg.model.iterative
    return {"engine": cfg.model.name, "algorithm": it.algorithm, "iterations": int(it.iterations),
            "batch_size": int(it.batch_size), "beta_object": float(it.beta_object),
            "beta_probe": float(it.beta_probe), "probe_refine": bool(it.probe_refine),
            "noise_model": it.noise_model, "adaptive_moments": bool(it.adaptive_moments), "seed": int(seed)}


def reconstruct_iterative(cfg: Any, scan: Any, job_dir: Path, settings: dict | None = None) -> tuple:
    """Run the configured iterative engine out of process; returns (EngineResult, seconds)."""
    from ptycho_exp.iterative.runner import run_engine

    settings = settings or iterative_settings(cfg, cfg.seed)
    python = cfg.model.iterative.python if settings["engine"] == "tike" else None
    if settings["engine"] == "tike":
        from ptycho_exp.iterative.tike_engine import check_tike_available

        problem = check_tike_available(python)
        if problem:
            raise RuntimeError(problem)
    t0 = time.time()
    res = run_engine(scan.diffraction, scan.positions, scan.probe, settings, python=python,
                     workdir=job_dir / f"engine_{settings['engine']}", timeout_s=cfg.model.iterative.timeout_s)
    return res, time.time() - t0


def reference_object(cfg: Any, scan: Any, job_dir: Path) -> tuple[np.ndarray, str]:
    """The object the test scan is scored against, and what it is."""
    if scan.object is not None and cfg.eval.reference == "ground_truth":
        return scan.object, "ground_truth"
    if scan.object is None and cfg.eval.reference == "ground_truth":
        log.warning("the test data has no objectGuess: scoring against an iterative reference "
                    "(PtyLab mPIE, 300 iterations); set eval.reference=iterative to silence this")
    settings = {**iterative_settings(cfg, 0), "engine": "ptylab", "algorithm": "mPIE", "iterations": 300}
    res, _ = reconstruct_iterative(cfg, scan, job_dir / "reference", settings)
    obj = _object_in_scan_frame(res, scan)
    return obj, "iterative:ptylab-mPIE-300"


def _object_in_scan_frame(res: Any, scan: Any) -> np.ndarray:
    """Place an engine's object into an array indexed by scan coordinates (origin at 0,0)."""
    r0, c0 = (int(round(v)) for v in res.origin)
    N = scan.N
    need_h = int(np.ceil(scan.positions[:, 0].max())) + N + 1
    need_w = int(np.ceil(scan.positions[:, 1].max())) + N + 1
    h, w = max(need_h, r0 + res.object.shape[0]), max(need_w, c0 + res.object.shape[1])
    out = np.ones((h, w), np.complex64)
    rs, cs = max(r0, 0), max(c0, 0)
    src = res.object[rs - r0:, cs - c0:]
    out[rs:rs + src.shape[0], cs:cs + src.shape[1]] = src
    return out


def run_science(cfg: Any, job_dir: Path) -> dict:
    """Data, reconstruction, evaluation and artifacts of one job."""
    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.evaluate.pipeline import evaluate_object, evaluate_reconstruction, write_frc_csv

    timings: dict[str, float] = {}
    t0 = time.time()
    ds = build_datasets(cfg.data, seed=cfg.seed, cache_dir=cfg.paths.cache_dir,
                        need_train=cfg.model.name in NETWORK_MODELS)
    timings["data_s"] = time.time() - t0
    test_scan, test = ds.test_scan, ds.test
    gt, reference = reference_object(cfg, test_scan, job_dir)
    out: dict[str, Any] = {"data": {**ds.info, "reference": reference}}
    positions = test.positions.reshape(-1, 2)
    if cfg.model.name in NETWORK_MODELS:
        from ptycho_exp.models.fit import fit_network, predict_patches, release_tf

        fit = fit_network(cfg.model, cfg.train, ds.train, test_scan.probe, float(cfg.data.nphotons), job_dir,
                          seed=int(cfg.seed), threads=_threads(cfg))
        timings["train_s"] = fit.train_seconds
        t1 = time.time()
        pred = predict_patches(fit.model, test.diffraction, fit.norm_factor, batch_size=cfg.eval.batch_size)
        timings["inference_s"] = time.time() - t1
        patches = np.moveaxis(pred, -1, 1).reshape(-1, pred.shape[1], pred.shape[2])
        t2 = time.time()
        ev = evaluate_reconstruction(patches, positions, gt, crop=cfg.eval.crop,
                                     upsample_factor=cfg.eval.upsample_factor, trim_px=cfg.eval.trim_px)
        timings["eval_s"] = time.time() - t2
        out["throughput"] = {"train_patterns_per_s": fit.train_patterns_per_s,
                             "inference_patterns_per_s": patches.shape[0] / max(timings["inference_s"], 1e-9)}
        out["resources"] = {"n_params": int(fit.n_params)}
        out["final_losses"] = fit.final_losses
        out["epochs_run"] = fit.epochs_run
        release_tf()
    else:
        res, seconds = reconstruct_iterative(cfg, test_scan, job_dir)
        timings["train_s"] = 0.0
        timings["inference_s"] = seconds
        t2 = time.time()
        ev = evaluate_object(res.object, res.origin, test_scan.positions, gt, crop=cfg.eval.crop,
                             upsample_factor=cfg.eval.upsample_factor, trim_px=cfg.eval.trim_px,
                             patch_size=test_scan.N)
        timings["eval_s"] = time.time() - t2
        out["throughput"] = {"inference_patterns_per_s": test_scan.n_positions / max(seconds, 1e-9)}
        out["resources"] = {"n_params": 0}
        out["engine"] = res.metadata
        err = np.asarray(res.data_error, float)
        out["final_losses"] = {"data_error": float(err[-1]) if err.size else None}
    write_frc_csv(job_dir / "frc.csv", ev.frc)
    if cfg.eval.save_recon:
        _save_recon(job_dir / "recon.npz", ev, cfg.model.name, reference)
    if cfg.eval.figures:
        from ptycho_exp.evaluate.figures import plot_comparison

        label = {"pinn": "PINN", "baseline": "baseline"}.get(cfg.model.name, cfg.model.name)
        plot_comparison(job_dir / "compare_amp_phase.png", ev.gt, {label: ev.recon},
                        gt_label="GT" if reference == "ground_truth" else "reference")
    out["metrics"] = ev.metrics
    out["timings"] = timings
    out.setdefault("resources", {})["peak_rss_mb"] = peak_rss_mb()
    return out


def _threads(cfg: Any) -> tuple[int, int]:
    import os

    intra = int(cfg.hardware.intra_op_threads) or int(os.environ.get("PTYCHO_EXP_INTRA_THREADS", "0"))
    return intra, int(cfg.hardware.inter_op_threads)


def _save_recon(path: Path, ev: Any, model: str, reference: str) -> None:
    import io

    from ptycho_exp.results import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, recon=ev.recon.astype(np.complex64), gt=ev.gt.astype(np.complex64),
                        origin=np.asarray(ev.origin, np.int64), model=np.array(model),
                        reference=np.array(reference))
    atomic_write_bytes(path, buf.getvalue())
