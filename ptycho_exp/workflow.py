"""The science of one job: data -> reconstruction (network or iterative) -> evaluation -> files.

Called by :func:`ptycho_exp.run.train_and_evaluate`; returns the parts of ``result.json`` that
depend on the science (metrics, timings, throughput, resources, data summary).

Besides ``metrics`` (the job's scores, ``null_*`` scores of the best constant image on the same
pixels and, where an iterative reference and ground truth both exist, ``ref_*`` scores of that
reference against ground truth), ``result.json`` records what the scores mean:

* ``scored_against``: ``"ground_truth"`` or ``"<engine>:<algorithm>:<iterations>"`` of the iterative
  reference (jobs scored against different references are not comparable);
* ``metrics_valid`` / ``invalid_reason``: False with the reason when the scores cannot be used
  (coverage below ``eval.min_coverage``, a ground truth that is constant in the scored region);
* ``metric_notes``: why some metrics are NaN (``{"amp" | "phase": reason}``), and an iterative
  arm's failure;
* ``phase_sync`` (networks with ``eval.phase_sync=true``): ``as_predicted``, the scores of the patches as
  predicted (``metrics`` are those of the phase-aligned patches), and ``window_px``;
* ``metrics_version``: :data:`METRICS_VERSION` (2: headline phase SSIM / MS-SSIM on the ground
  truth's own range, the reference publication's convention as ``phase_*_ref``; results without
  it scored phase SSIM / MS-SSIM on the ``(phi+pi)/2pi`` scale and MS-SSIM with a uniform window).

A job never scores against a failed iterative reference: it fails with
``iterative reference failed: <reason>`` before any training.
"""
from __future__ import annotations

import logging
import resource
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_exp.evaluate.metrics import METRICS_VERSION
from ptycho_exp.files import FRC_FILE, RECON_FILE
from ptycho_exp.models.registry import NETWORK_MODELS

log = logging.getLogger("ptycho_exp.workflow")


class ReferenceFailed(RuntimeError):
    """The iterative reference a job would be scored against failed (diverged, non-finite, ...)."""


def engine_failure(res: Any) -> str | None:
    """Why an engine result is unusable, or None: the engine's own verdict (``failed`` /
    ``failure_reason``, as attributes or in ``metadata``) or a non-finite object or probe."""
    meta = getattr(res, "metadata", None) or {}
    if getattr(res, "failed", False) or meta.get("failed"):
        return str(getattr(res, "failure_reason", None) or meta.get("failure_reason") or "marked failed by the engine")
    if not np.all(np.isfinite(res.object)):
        return "the reconstructed object holds NaN or Inf"
    if not np.all(np.isfinite(res.probe)):
        return "the reconstructed probe holds NaN or Inf"
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def iterative_settings(cfg: Any, seed: int) -> dict:
    """Settings handed to an iterative engine worker."""
    it = cfg.model.iterative
    return {"engine": cfg.model.name, "algorithm": it.algorithm, "iterations": int(it.iterations),
            "batch_size": int(it.batch_size), "beta_object": float(it.beta_object),
            "beta_probe": float(it.beta_probe), "probe_refine": bool(it.probe_refine),
            "noise_model": it.noise_model, "adaptive_moments": bool(it.adaptive_moments), "seed": int(seed),
            "position_correction": bool(getattr(it, "position_correction", False))}


def tike_python(cfg: Any) -> str:
    """The interpreter for the Tike worker: ``model.iterative.python``; a relative path that does not
    exist from the working directory is taken relative to the repository root (where ``make tike-env``
    puts ``.venv-tike``)."""
    python = cfg.model.iterative.python or ".venv-tike/bin/python"
    p = Path(python)
    if not p.is_absolute() and not p.exists() and "/" in python:
        root = Path(__file__).resolve().parent.parent
        if (root / p).exists():
            return str(root / p)
    return str(python)


def check_engine_available(cfg: Any) -> None:
    """Fail at once (before any data work) when the configured iterative engine cannot run here."""
    if cfg.model.name != "tike":
        return
    from ptycho_exp.iterative.tike_engine import check_tike_available

    problem = check_tike_available(tike_python(cfg))
    if problem:
        raise RuntimeError(f"model=tike cannot run: {problem}. Fix: on a machine with an NVIDIA GPU run "
                           "`make tike-env` (builds .venv-tike) or point model.iterative.python "
                           "(or PTYCHO_EXP_TIKE_PYTHON) at a Python with tike + cupy; without a GPU use "
                           "model=ptylab (CPU)")


def reconstruct_iterative(cfg: Any, scan: Any, job_dir: Path, settings: dict | None = None) -> tuple:
    """Run the configured iterative engine out of process; returns (EngineResult, seconds)."""
    from ptycho_exp.iterative.runner import run_engine

    settings = settings or iterative_settings(cfg, cfg.seed)
    python = tike_python(cfg) if settings["engine"] == "tike" else None  # checked by run_science first
    t0 = time.time()
    res = run_engine(scan.diffraction, scan.positions, scan.probe, settings, python=python,
                     workdir=job_dir / f"engine_{settings['engine']}", timeout_s=cfg.model.iterative.timeout_s)
    return res, time.time() - t0


def cached_engine_result(cfg: Any, scan: Any, job_dir: Path, settings: dict, kind: str,
                         available: int | None = None) -> tuple:
    """An engine's result for this exact scan and settings, from ``paths.cache_dir/<kind>/`` or computed
    (then cached). An iterative arm ignores ``data.n_train``, so a sweep over it reuses one run per seed.

    A PtyLab scan that would not fit in memory (``available`` bytes; default ``MemAvailable``) raises
    :class:`ptycho_exp.iterative.memory.EngineMemoryError` first, before its patterns are read (for the
    cache key) or the engine starts; the job is recorded as failed with that one-line reason.

    Returns (EngineResult, wall seconds of the run or None when it came from the cache).
    """
    from ptycho_exp.iterative.memory import check_engine_memory
    from ptycho_exp.iterative.protocol import read_engine_output, write_engine_output

    if settings["engine"] == "ptylab":
        check_engine_memory(_data_name(cfg, kind), scan.n_positions, scan.N, available)

    extra = {"python": tike_python(cfg)} if settings["engine"] == "tike" else {}
    cache = Path(cfg.paths.cache_dir) / kind / f"{_engine_cache_key(scan, {**settings, **extra})}.npz"
    if cache.is_file():
        try:
            res = read_engine_output(cache)
            log.info("%s %s result from cache %s", kind, settings["engine"], cache)
            return res, None
        except (OSError, ValueError) as exc:
            log.warning("unreadable engine cache %s (%s): recomputing", cache, exc)
    res, seconds = reconstruct_iterative(cfg, scan, job_dir / kind, settings)
    failure = engine_failure(res)
    metadata = {**res.metadata, "failed": True, "failure_reason": failure} if failure else res.metadata
    try:  # a failure is cached with its verdict (metadata), so it is not recomputed, nor used, by the next job
        write_engine_output(cache, res.object, res.probe, res.origin, res.data_error, metadata)
    except OSError as exc:
        log.warning("cannot cache the engine result at %s: %s", cache, exc)
    return res, seconds


def reference_settings(cfg: Any) -> dict:
    """Settings of the iterative reference reconstruction (PtyLab on the CPU; independent of the arm;
    ``eval.reference_algorithm`` and ``eval.reference_iterations`` are range-checked by :mod:`ptycho_exp.validate`)."""
    algorithm = str(cfg.eval.reference_algorithm)
    iterations = int(cfg.eval.reference_iterations)
    return {"engine": "ptylab", "algorithm": algorithm, "iterations": iterations, "beta_object": 0.25,
            "beta_probe": 0.25, "probe_refine": True, "seed": 0}


def _engine_cache_key(scan: Any, settings: dict) -> str:
    """Content hash of a scan and engine settings (the key of the engine result cache)."""
    import hashlib
    import json

    h = hashlib.sha256()
    for arr in (scan.diffraction, scan.positions, scan.probe):
        if hasattr(arr, "chunks"):  # patterns in a file (.h5): hashed chunk by chunk, the same digest
            h.update(f"{np.dtype(arr.dtype).str}{tuple(arr.shape)}".encode())
            for _, block in arr.chunks():
                h.update(np.ascontiguousarray(block).tobytes())
            continue
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:32]


def scored_against_label(settings: dict) -> str:
    """``"<engine>:<algorithm>:<iterations>"`` of an iterative reference (``result.json`` ``scored_against``)."""
    return f"{settings['engine']}:{settings['algorithm']}:{int(settings['iterations'])}"


def reference_object(cfg: Any, scan: Any, job_dir: Path) -> tuple[np.ndarray, str, Any]:
    """The object the test scan is scored against, what it is, and the iterative reference's result.

    ``eval.reference=ground_truth`` uses the data's ``objectGuess`` when there is one; otherwise (or with
    ``eval.reference=iterative``) a PtyLab reconstruction of the whole test scan
    (``eval.reference_algorithm``, ``eval.reference_iterations``; default ePIE, 300) is the reference.
    It depends only on the test scan and those settings, so every arm and seed is scored against the same
    object; it is cached under ``paths.cache_dir/reference/``. The returned label is
    ``"ground_truth"`` or ``"iterative:ptylab-<algorithm>-<iterations>"``; the engine result is None
    when scoring against ground truth.

    Raises
    ------
    ReferenceFailed
        The iterative reference failed (:func:`engine_failure`): nothing is scored against it.
    ConfigError
        A test window lies off the reference's reconstructed object.
    """
    if scan.object is not None and cfg.eval.reference == "ground_truth":
        return scan.object, "ground_truth", None
    settings = reference_settings(cfg)
    label = f"iterative:ptylab-{settings['algorithm']}-{settings['iterations']}"
    if scan.object is None and cfg.eval.reference == "ground_truth":
        log.warning("the test data has no objectGuess: scoring against an iterative reference (%s); "
                    "set eval.reference=iterative to silence this", label)
    res, seconds = cached_engine_result(cfg, scan, job_dir, settings, "reference")
    if seconds is not None:
        log.info("iterative reference (%s) computed in %.1f s", label, seconds)
    failure = engine_failure(res)
    if failure:
        raise ReferenceFailed(f"iterative reference failed: {failure} ({scored_against_label(settings)}; "
                              "fix: choose a stable eval.reference_algorithm (ePIE) or fewer "
                              "eval.reference_iterations, or score against ground truth)")
    from ptycho_exp.validate import check_scan_on_object

    check_scan_on_object(scan.positions, scan.N, res.object.shape, _test_data_name(cfg), origin=res.origin,
                         what=f"the iterative reference ({scored_against_label(settings)})")
    return _object_in_scan_frame(res, scan), label, res


def cached_reference(cfg: Any, scan: Any) -> Any:
    """The iterative reference's result for this test scan if it is already in the cache, else None
    (never computed here, never a failed one)."""
    from ptycho_exp.config import ConfigError
    from ptycho_exp.iterative.protocol import read_engine_output

    try:
        settings = reference_settings(cfg)
    except ConfigError:
        return None
    cache = Path(cfg.paths.cache_dir) / "reference" / f"{_engine_cache_key(scan, settings)}.npz"
    if not cache.is_file():
        return None
    try:
        res = read_engine_output(cache)
    except (OSError, ValueError):
        return None
    return None if engine_failure(res) else res


def _data_name(cfg: Any, kind: str) -> str:
    """How a message names the scan an engine run of ``kind`` (labels, reference, iterative) reconstructs."""
    if kind != "labels" or cfg.data.train_on == "test":
        return _test_data_name(cfg)
    if cfg.data.kind == "npz":
        return f"data.train_path={str(cfg.data.train_path)!r}"
    return "the simulated training scan (data)"


def _test_data_name(cfg: Any) -> str:
    """How a message names the test data."""
    if cfg.data.kind != "simulate":
        return f"data.test_path={str(cfg.data.test_path)!r}"
    return "the simulated test scan (data)"


def check_test_scan_on_object(cfg: Any, ds: Any) -> None:
    """Every test window on the ground-truth object (when there is one); ConfigError otherwise."""
    scan = ds.test_scan
    if scan.object is None:
        return
    from ptycho_exp.validate import check_scan_on_object

    used = np.unique(ds.test.groups.ravel())
    check_scan_on_object(scan.positions[used], scan.N, scan.object.shape, _test_data_name(cfg))


def _object_in_scan_frame(res: Any, scan: Any) -> np.ndarray:
    """Place an engine's object into an array indexed by scan coordinates (origin at 0,0)."""
    r0, c0 = (round(float(v)) for v in res.origin)
    N = scan.N
    need_h = int(np.ceil(scan.positions[:, 0].max())) + N + 1
    need_w = int(np.ceil(scan.positions[:, 1].max())) + N + 1
    h, w = max(need_h, r0 + res.object.shape[0]), max(need_w, c0 + res.object.shape[1])
    out = np.ones((h, w), np.complex64)
    rs, cs = max(r0, 0), max(c0, 0)
    src = res.object[rs - r0:, cs - c0:]
    out[rs:rs + src.shape[0], cs:cs + src.shape[1]] = src
    return out


def check_ground_truth_for_training(cfg: Any, ds: Any) -> None:
    """The supervised baseline needs ground-truth patches (``objectGuess`` or ``Y``) in its training data;
    raise a ConfigError naming the file and the fix before any training or reference work."""
    if cfg.model.name != "baseline" or ds.train is None or ds.train.patches is not None:
        return
    from ptycho_exp.config import ConfigError

    where = (f"data.train_path={cfg.data.train_path!r} has neither objectGuess nor Y"
             if cfg.data.kind != "simulate" else "the training data has no ground truth")
    raise ConfigError(f"model=baseline needs ground truth to train on (supervised): {where}. Fix: use "
                      "data.labels=iterative (labels from a PtyLab reconstruction of the training scan), "
                      "model=pinn (unsupervised) or an iterative arm (model=ptylab) for data without ground "
                      "truth, or add objectGuess (H, W complex64) or Y (M, N, N complex64) to the file")


def training_backup_dir(cfg: Any, job_dir: Path) -> Path:
    """Per-epoch training checkpoint folder of a job, keyed by its config (a changed config never resumes)."""
    from omegaconf import OmegaConf

    from ptycho_exp.files import TRAIN_BACKUP_PREFIX
    from ptycho_exp.results import config_hash

    return Path(job_dir) / f"{TRAIN_BACKUP_PREFIX}{config_hash(OmegaConf.to_container(cfg, resolve=True))}"


def run_science(cfg: Any, job_dir: Path) -> dict:
    """Data, reconstruction, evaluation and artifacts of one job."""
    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.evaluate.pipeline import (
        evaluate_object,
        evaluate_reconstruction,
        metrics_validity,
        scored_canvas,
        write_frc_csv,
    )

    timings: dict[str, float] = {}
    check_engine_available(cfg)  # model=tike without a GPU / tike env: fail before any data work
    t0 = time.time()
    ds = build_datasets(cfg.data, seed=cfg.seed, cache_dir=cfg.paths.cache_dir,
                        need_train=cfg.model.name in NETWORK_MODELS)
    timings["data_s"] = time.time() - t0
    test_scan, test = ds.test_scan, ds.test
    if cfg.model.name == "baseline" and str(cfg.data.labels) == "iterative":  # labels: PtyLab on the training scan
        from ptycho_exp.data.datasets import attach_labels

        res, _ = cached_engine_result(cfg, ds.train_scan, job_dir, reference_settings(cfg), "labels")
        label = f"iterative:ptylab-{cfg.eval.reference_algorithm}-{cfg.eval.reference_iterations}"
        attach_labels(ds, _object_in_scan_frame(res, ds.train_scan), label)
    check_ground_truth_for_training(cfg, ds)
    check_test_scan_on_object(cfg, ds)  # a scan off the object scores zeros against zeros: refuse it
    t0 = time.time()
    gt, reference, ref_res = reference_object(cfg, test_scan, job_dir)
    if reference != "ground_truth":
        timings["reference_s"] = time.time() - t0
    scored_against = "ground_truth" if ref_res is None else scored_against_label(reference_settings(cfg))
    out: dict[str, Any] = {"data": {**ds.info, "reference": reference}, "scored_against": scored_against}
    metric_notes: dict[str, str] = {}
    positions = test.positions.reshape(-1, 2)
    if cfg.model.name in NETWORK_MODELS:
        from ptycho_exp.models.fit import fit_network, predict_patches, release_tf
        from ptycho_exp.models.pinn import probe_scaling_mode

        _drop_unused_arrays(cfg, ds)
        fit = fit_network(cfg.model, cfg.train, ds.train, ds.probe, ds.counts_per_pattern, job_dir,
                          seed=int(cfg.seed), threads=_threads(cfg), backup_dir=training_backup_dir(cfg, job_dir),
                          grouping=str(cfg.data.grouping),
                          probe_scaling=probe_scaling_mode(str(cfg.model.probe_scaling), str(cfg.data.kind)))
        if fit.scaling:
            out["data"]["scaling"] = fit.scaling
        timings["train_s"] = fit.train_seconds
        if isinstance(test.diffraction, np.ndarray):
            t1 = time.time()
            pred = predict_patches(fit.model, test.diffraction, fit.norm_factor, batch_size=cfg.eval.batch_size,
                                   offsets=test.offsets)
            timings["inference_s"] = time.time() - t1
            patches = np.moveaxis(pred, -1, 1).reshape(-1, pred.shape[1], pred.shape[2])
            t2 = time.time()
            kw = {"crop": cfg.eval.crop, "upsample_factor": cfg.eval.upsample_factor, "trim_px": cfg.eval.trim_px}
            if cfg.eval.phase_sync:
                from ptycho_exp.evaluate.phase_sync import evaluate_phase_synced

                ev, as_predicted = evaluate_phase_synced(patches, positions, gt, **kw)
            else:
                ev = evaluate_reconstruction(patches, positions, gt, **kw)
            timings["eval_s"] = time.time() - t2
        else:  # patterns in a file (.h5): read, predicted and stitched batch by batch, no patches kept
            ev, as_predicted, timings["inference_s"], timings["eval_s"] = _streamed_evaluation(
                cfg, fit, test, positions, gt)
        if cfg.eval.phase_sync:
            from ptycho_exp.evaluate.phase_sync import phase_sync_record

            crop = scored_canvas(positions, int(test.diffraction.shape[1]), cfg.eval.crop)[0]
            out["phase_sync"] = phase_sync_record(as_predicted.metrics, crop)
        out["throughput"] = {"train_patterns_per_s": fit.train_patterns_per_s,
                             "inference_patterns_per_s": positions.shape[0] / max(timings["inference_s"], 1e-9)}
        out["resources"] = {"n_params": int(fit.n_params)}
        out["final_losses"] = fit.final_losses
        out["epochs_run"] = fit.epochs_run
        out["dtype_policy"] = fit.dtype_policy
        out["device"] = fit.device
        out["onednn"] = fit.onednn
        out["schedule"] = fit.schedule
        release_tf()
    else:
        # the same test positions as the networks (the data.n_test subset and its group members)
        used = np.unique(test.groups.ravel())
        if cfg.model.name == "ptylab":  # refuse before the subset reads the patterns (from an .h5 file)
            from ptycho_exp.iterative.memory import check_engine_memory

            check_engine_memory(_test_data_name(cfg), used.size, test_scan.N)
        scan = test_scan.subset(used)
        res, wall = cached_engine_result(cfg, scan, job_dir, iterative_settings(cfg, cfg.seed), "iterative")
        from ptycho_exp.iterative import write_probe_file

        arm_failure = engine_failure(res)
        if arm_failure:  # a diverged or non-finite run is recorded as a failed job, never scored
            raise RuntimeError(f"the model={cfg.model.name} reconstruction ({settings_name(res)}) diverged or "
                               f"failed: {arm_failure}")
        write_probe_file(job_dir / "iterative_probe.npz", res.probe)  # data.probe=file data.probe_path=<it>
        seconds = float(res.metadata.get("seconds") or wall or 0.0)  # the engine's own reconstruction time
        timings["train_s"] = 0.0
        timings["inference_s"] = seconds
        if wall is not None:
            timings["engine_wall_s"] = wall  # including the worker process start
        t2 = time.time()
        ev = evaluate_object(res.object, res.origin, scan.positions, gt, crop=cfg.eval.crop,
                             upsample_factor=cfg.eval.upsample_factor, trim_px=cfg.eval.trim_px,
                             patch_size=scan.N)
        timings["eval_s"] = time.time() - t2
        out["throughput"] = {"inference_patterns_per_s": scan.n_positions / max(seconds, 1e-9)}
        out["resources"] = {"n_params": 0}
        out["engine"] = {**res.metadata, "cached": wall is None}
        out["engine"].update(failed=False, failure_reason=None)
        err = np.asarray(res.data_error, float)
        out["final_losses"] = {"data_error": float(err[-1]) if err.size else None}
    ref_metrics = _reference_metrics(cfg, test_scan, ref_res, positions)
    write_frc_csv(job_dir / FRC_FILE, ev.frc)
    if cfg.eval.save_recon:
        _save_recon(job_dir / RECON_FILE, ev, cfg.model.name, reference)
    if cfg.eval.figures:
        from ptycho_exp.evaluate.figures import plot_comparison

        label = {"pinn": "PINN", "baseline": "baseline"}.get(cfg.model.name, cfg.model.name)
        plot_comparison(job_dir / "compare_amp_phase.png", ev.gt, {label: ev.recon},
                        gt_label="GT" if reference == "ground_truth" else "reference")
    out["metrics"] = {**ev.metrics, **ref_metrics}
    valid, reason = metrics_validity(ev, float(cfg.eval.min_coverage))
    if not valid:
        log.warning("metrics invalid: %s", reason)
    out["metrics_valid"] = valid
    out["invalid_reason"] = reason
    out["metric_notes"] = {**ev.notes, **metric_notes}
    out["metrics_version"] = METRICS_VERSION
    out["timings"] = timings
    out.setdefault("resources", {})["peak_rss_mb"] = peak_rss_mb()
    return out


def _streamed_evaluation(cfg: Any, fit: Any, test: Any, positions: np.ndarray, gt: np.ndarray):
    """Score a test scan whose patterns stay in a file: each batch of ``eval.batch_size`` samples is read,
    predicted and added to the stitched object on the scored canvas, so memory holds the canvas and one
    batch, not the predicted patches. The scores equal those of the in-memory path on the same patterns.

    With ``eval.phase_sync`` the scan is predicted twice (:func:`ptycho_exp.predict.stitch_phase_synced`;
    inference time counts both passes).

    Returns
    -------
    (EvalResult, EvalResult as predicted or None (without eval.phase_sync), inference seconds,
    evaluation seconds (stitching and scoring))
    """
    from ptycho_exp.evaluate.pipeline import evaluate_stitched, scored_canvas
    from ptycho_exp.predict import stitch_phase_synced, stitch_predictions

    t0 = time.time()
    N = int(test.diffraction.shape[1])
    crop, origin, shape = scored_canvas(positions, N, cfg.eval.crop)
    stitch = partial(stitch_predictions, fit.model, test.diffraction, test.positions, fit.norm_factor, crop,
                     origin=origin, shape=shape, batch_size=cfg.eval.batch_size, offsets=test.offsets)
    score = partial(evaluate_stitched, gt_object=gt, upsample_factor=cfg.eval.upsample_factor,
                    trim_px=cfg.eval.trim_px)
    if cfg.eval.phase_sync:
        raw, st, predict_s = stitch_phase_synced(stitch, positions, crop)
        return score(st), score(raw), predict_s, time.time() - t0 - predict_s
    st, predict_s = stitch()
    return score(st), None, predict_s, time.time() - t0 - predict_s


def settings_name(res: Any) -> str:
    """``engine:algorithm:iterations`` of an engine result (from its metadata)."""
    meta = res.metadata or {}
    return f"{meta.get('engine', '?')}:{meta.get('algorithm', '?')}:{meta.get('iterations', '?')}"


def _reference_metrics(cfg: Any, scan: Any, ref_res: Any, positions: np.ndarray) -> dict:
    """``ref_*``: the iterative reference scored against ground truth on the job's scored region, when
    both exist (the reference computed for this job, or already cached for this test scan); else {}."""
    from ptycho_exp.evaluate.metrics import METRICS, REF_PREFIX
    from ptycho_exp.evaluate.pipeline import evaluate_object

    if scan.object is None:
        return {}
    res = ref_res if ref_res is not None else cached_reference(cfg, scan)
    if res is None:
        return {}
    ev = evaluate_object(res.object, res.origin, positions, scan.object, crop=cfg.eval.crop,
                         upsample_factor=cfg.eval.upsample_factor, trim_px=cfg.eval.trim_px, patch_size=scan.N)
    return {f"{REF_PREFIX}{k}": v for k, v in ev.metrics.items() if k in METRICS}


def _drop_unused_arrays(cfg: Any, ds: Any) -> None:
    """Free what a network job no longer needs before training (peak memory): the whole training scan
    (the samples hold the patterns used), the test samples' ground-truth patches (scoring uses the object)
    and, for the PINN without a real-space term, the training samples' ground-truth patches."""
    ds.train_scan = None
    ds.test.patches = None
    if cfg.model.name == "pinn" and not float(cfg.model.realspace_weight) > 0 and ds.train is not None:
        ds.train.patches = None


def _threads(cfg: Any) -> tuple[int, int]:
    import os

    intra = int(cfg.hardware.intra_op_threads) or int(os.environ.get("PTYCHO_EXP_INTRA_THREADS", "0"))
    return intra, int(cfg.hardware.inter_op_threads)


def _save_recon(path: Path, ev: Any, model: str, reference: str) -> None:
    import io

    from ptycho_exp.files import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, recon=ev.recon.astype(np.complex64), gt=ev.gt.astype(np.complex64),
                        origin=np.asarray(ev.origin, np.int64), model=np.array(model),
                        reference=np.array(reference))
    atomic_write_bytes(path, buf.getvalue())
