"""One job's lifecycle: validate, claim the folder, skip-if-done, run (isolated), always record the outcome.

A job folder is run by one process at a time: the job claims it first (:func:`ptycho_exp.results.claim_job`)
and a job whose folder a live process holds is skipped ("running in another process"). A job that fails
leaves no temp files and no training backup; one killed by a full disk is recorded as ``DiskFull``.

``hydra_task`` is the Hydra task function (parent side, light: no TensorFlow). With
``hardware.isolate`` (the default) the science runs in a child process
(``python -m ptycho_exp.run <job dir>``), so TensorFlow state never leaks between jobs and a
job that dies hard (OOM kill, ``os._exit``, segfault) is still recorded as failed with its
exit status and peak memory (the child process: :mod:`ptycho_exp.isolation`). Either way
``result.json`` is written atomically.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ptycho_exp import files, isolation, results
from ptycho_exp.compose import as_config, job_config_dict, split_overrides
from ptycho_exp.config import ConfigError, check_device, validate
from ptycho_exp.files import JOB_CONFIG_FILE, JOB_LOG_FILE, RESULT_FILE, TENSORFLOW_LOG_FILE, WRITE_PROBE_FILE

log = logging.getLogger("ptycho_exp.run")


# --------------------------------------------------------------------------- objective
def objective_value(result: dict, objective: Any) -> Any:
    """The number(s) a sweeper optimises; NaN for a failed job."""
    if objective is None:
        return None
    keys = [objective] if isinstance(objective, str) else list(objective)
    ok = result.get("status") == "ok"
    flat = {**result.get("metrics", {}), **result.get("timings", {}), **result.get("throughput", {})}
    values = []
    for key in keys:
        v = flat.get(key) if ok else None
        values.append(float(v) if isinstance(v, (int, float)) and v is not None else math.nan)
    return values[0] if len(values) == 1 else values


# --------------------------------------------------------------------------- result records
def failed_result(job_cfg: dict, error: str, error_type: str, started: float, **extra: Any) -> dict:
    return {"schema": results.SCHEMA_VERSION, "status": "failed", "error": error, "error_type": error_type,
            "config_hash": results.config_hash(job_cfg), "model": job_cfg["model"]["name"],
            "seed": job_cfg.get("seed"), "tag": job_cfg.get("tag", ""), "metrics": {},  # a lost job's stub has neither
            "timings": {"total_s": time.time() - started}, "config": job_cfg, "run": results.current_run(),
            "provenance": {**results.provenance(), "started_at": _iso(started),
                           "finished_at": results.now_iso()}, **extra}


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def done_result(job_dir: Path, job_cfg: dict) -> dict | None:
    """The job's ok result for this exact config, if it already exists (skip-if-done)."""
    try:
        prev = results.load_result(job_dir)
    except results.UnreadableResult as exc:
        log.warning("%s; the job runs again and replaces it", exc)
        return None
    if prev and prev.get("status") == "ok" and prev.get("config_hash") == results.config_hash(job_cfg):
        return prev
    return None


def check_writable(job_dir: Path) -> None:
    """Fail before any work when the output folder cannot be written."""
    probe = job_dir / WRITE_PROBE_FILE
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink(missing_ok=True)  # a process running the job may have removed it as debris
    except OSError as exc:
        raise ConfigError(f"paths.output_dir={str(job_dir)!r} is not writable ({exc.strerror}): "
                          "choose a writable folder with hydra.run.dir=... or hydra.sweep.dir=...") from None


# --------------------------------------------------------------------------- the science, guarded
def train_and_evaluate(job_cfg: dict, job_dir: Path | str) -> dict:
    """Run one job in this process and write ``result.json``; never raises for a job error."""
    job_dir = Path(job_dir)
    started = time.time()
    try:
        cfg = as_config(job_cfg)
        validate(cfg)
        from ptycho_exp.workflow import run_science

        _inject_fault(cfg.fault)
        outcome = run_science(cfg, job_dir)
    except Exception as exc:  # noqa: BLE001 - a failed job is recorded, never propagated
        detail = traceback.format_exc()
        log.error("job failed: %s: %s", type(exc).__name__, exc)
        res = failed_result(job_cfg, f"{type(exc).__name__}: {exc}", type(exc).__name__, started,
                            traceback=detail)
        results.write_json(job_dir / RESULT_FILE, res)
        return res
    res = {"schema": results.SCHEMA_VERSION, "status": "ok", "error": None, "error_type": None,
           "config_hash": results.config_hash(job_cfg), "model": job_cfg["model"]["name"],
           "seed": job_cfg["seed"], "tag": job_cfg["tag"], **outcome, "config": job_cfg,
           "run": results.current_run(), "provenance": {**results.provenance(), "started_at": _iso(started),
                          "finished_at": results.now_iso()}}
    res.setdefault("timings", {})["total_s"] = time.time() - started
    results.write_json(job_dir / RESULT_FILE, res)
    return res


def _inject_fault(fault: str) -> None:
    """Testing hook (config key ``fault``): make this job fail in a chosen way."""
    if fault == "raise":
        raise RuntimeError("fault injection: fault=raise")
    if fault == "exit":
        sys.stdout.flush()
        os._exit(1)
    if fault == "sleep":
        time.sleep(float(os.environ.get("PTYCHO_EXP_FAULT_SLEEP", "3600")))
    if fault == "oom":  # what the kernel's OOM killer does: memory grows, then SIGKILL, no chance to clean up
        hog = b"\x01" * (int(os.environ.get("PTYCHO_EXP_FAULT_OOM_MB", "300")) << 20)  # pages really touched
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        del hog  # pragma: no cover - never reached


# --------------------------------------------------------------------------- isolation (ptycho_exp.isolation)
def run_isolated(job_cfg: dict, job_dir: Path, env: dict | None = None,
                 claim: results.Claim | None = None, show_tensorflow: bool = False) -> dict:
    """Run the job in a child process; record a failure if the child dies without a result.

    While the child runs, ``claim``'s heartbeat is refreshed. TensorFlow's start-up lines go to the job
    folder's ``tensorflow.log``, not the terminal, unless ``show_tensorflow``. A child that dies without a result is
    described by its exit status, or by the full disk that killed it (:func:`ptycho_exp.isolation.disk_full`).
    """
    started = time.time()
    results.write_json(job_dir / JOB_CONFIG_FILE, job_cfg)
    child = isolation.run_child(job_dir, env, heartbeat=None if claim is None else lambda: results.beat(claim),
                                interval=results.HEARTBEAT_S,
                                noise_log=None if show_tensorflow else job_dir / TENSORFLOW_LOG_FILE)
    res = results.read_result(job_dir)
    if res is not None and res.get("config_hash") == results.config_hash(job_cfg) \
            and res.get("status") in ("ok", "failed") \
            and _iso(started) <= str((res.get("provenance") or {}).get("finished_at") or ""):
        return res
    why, hint = isolation.describe_exit(child.exit_code)
    error = f"job process {why} without writing a result{hint}"
    full = isolation.disk_full(job_dir, [child.stderr_tail, isolation.log_tail(job_dir / JOB_LOG_FILE)])
    extra: dict = {}
    if full is not None:
        error, extra = f"{full} (the job process {why} without writing a result)", {"process_exit": why}
    res = failed_result(job_cfg, error, "DiskFull" if full else "ProcessDied", started,
                        resources={"peak_rss_mb": child.peak_rss_mb}, exit_code=child.exit_code, **extra)
    if full is not None:
        clean_failed_job(job_dir, res)  # first: what it frees may be what the record needs
    _record(job_dir, res)
    return res


def _disk_full_error(job_dir: Path, res: dict) -> dict:
    """A failed record whose error is a full disk gets ``error_type`` DiskFull and says so first."""
    if res.get("status") != "failed" or res.get("error_type") == "DiskFull":
        return res
    full = isolation.disk_full(job_dir, [str(res.get("error") or "")], min_free_mb=0.0)
    if full is None:
        return res
    return {**res, "error": f"{full} ({res.get('error')})", "error_type": "DiskFull"}


def clean_failed_job(job_dir: Path, res: dict) -> list[Path]:
    """Delete what a failed job leaves that is of no use and may fill the disk: temp files of atomic writes
    and the training backup (kept when the job was stopped from outside, SIGTERM/SIGINT, so that a requeued
    job resumes from it)."""
    found = files.remove_stale_temp_files(job_dir)
    if res.get("exit_code") in (-signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP):
        return found
    for backup in files.training_backups(job_dir):
        shutil.rmtree(backup, ignore_errors=True)
        log.info("removed the training backup %s of the failed job", backup)
        found.append(backup)
    return found


def _record(job_dir: Path, res: dict) -> None:
    """Write ``res`` as the job's result; a full disk is logged, not raised (the outcome is still returned)."""
    try:
        results.write_json(job_dir / RESULT_FILE, res)
    except OSError as exc:
        log.error("could not record the job's result in %s: %s", job_dir / RESULT_FILE, exc)
        files.remove_stale_temp_files(job_dir)


# --------------------------------------------------------------------------- CLI mode
_MODE_FLAGS = ("-m", "--multirun", "-r", "--run", "-c", "--cfg", "-i", "--info", "-h", "--help", "--hydra-help",
               "-sc", "--shell-completion", "--experimental-rerun")
_STUDY_GROUPS = ("study", "experiment", "local")


def register_plugins() -> None:
    """Make our sweeper and SLURM launcher (``_target_: ptycho_exp.sweep...``) resolvable.

    Hydra only discovers plugins in the ``hydra_plugins`` namespace; ours lives in the package.
    Importing it costs nothing extra: Hydra's plugin scan imports the Optuna sweeper module anyway.
    """
    import importlib

    from hydra.core.plugins import Plugins

    for module, name in (("ptycho_exp.sweep.sweeper", "ResumableOptunaSweeper"),
                         ("ptycho_exp.sweep.launchers", "ResilientSlurmLauncher")):
        try:  # each needs its Hydra plugin package; a lean environment (e.g. a GPU node) may lack one
            Plugins.instance().register(getattr(importlib.import_module(module), name))
        except ImportError as exc:
            log.debug("plugin %s.%s not registered: %s", module, name, exc)


def wants_multirun(argv: list[str]) -> bool:
    """True when the overrides select a study/experiment whose config sets ``hydra.mode: MULTIRUN``.

    Hydra 1.4 takes the run mode only from the primary config or the command line, so
    ``python -m ptycho_exp study=quick`` would fail with "hydra.mode changed during config
    composition". The entry point calls this and adds ``--multirun`` itself. It composes the
    config (compose API, no job runs) only when a study/experiment/local group is overridden and
    neither a mode flag nor ``hydra.mode=`` is given.
    """
    if any(a in _MODE_FLAGS or a.startswith(("--cfg=", "--info=", "hydra.mode=", "-cn", "--config-name",
                                             "-cp", "--config-path", "-cd", "--config-dir"))
           for a in argv):
        return False
    overrides = [a for a in argv if not a.startswith("-")]
    groups = {a.lstrip("+~").split("=", 1)[0] for a in overrides if "=" in a}
    if not groups & set(_STUDY_GROUPS):
        return False
    try:
        import warnings

        from hydra.types import RunMode

        from ptycho_exp.compose import compose_job_config

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fixed, _ = split_overrides(overrides)  # sweep overrides (a=1,2) cannot be composed, and need not be
            cfg = compose_job_config(fixed, return_hydra=True)
        return cfg.hydra.mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - a bad override is reported by Hydra itself, with its message
        return any(a.lstrip("+").split("=", 1)[0] == "study" and a.split("=", 1)[1] not in ("", "null")
                   for a in overrides)


# --------------------------------------------------------------------------- Hydra task (parent)
def remove_job_debris(job_dir: Path) -> list[Path]:
    """Delete what a killed run left in ``job_dir``: temp files of atomic writes and ``.write_probe``.

    Only this job writes into its folder, and it has not started yet, so they are debris.
    """
    found = files.remove_stale_temp_files(job_dir)
    probe = Path(job_dir) / WRITE_PROBE_FILE
    if probe.is_file():
        probe.unlink(missing_ok=True)
        found.append(probe)
    return found


def run_job(job_cfg: dict, job_dir: Path, isolate: bool, retries: int = 0, env: dict | None = None,
            show_tensorflow: bool = False) -> dict:
    """Claim the job folder, skip if done, else run (isolated or in-process), re-running a failure up to
    ``retries`` times; the claim is released at the end.

    Raises
    ------
    ptycho_exp.results.JobClaimed
        Another live process runs this job (its folder's claim, :func:`ptycho_exp.results.claim_job`).
    """
    claim = results.claim_job(job_dir)
    try:
        return _run_claimed(job_cfg, job_dir, isolate, retries, env, claim, show_tensorflow)
    finally:
        results.release_claim(claim)


def _run_claimed(job_cfg: dict, job_dir: Path, isolate: bool, retries: int, env: dict | None,
                 claim: results.Claim, show_tensorflow: bool = False) -> dict:
    remove_job_debris(job_dir)
    prev = done_result(job_dir, job_cfg)
    if prev is not None:
        log.info("skip: %s already has an ok result for config %s", job_dir, prev["config_hash"])
        return prev
    res: dict = {}
    for attempt in range(retries + 1):
        if attempt:
            log.warning("retry %d/%d of %s after: %s", attempt, retries, job_dir, res.get("error"))
        recorded, started = True, time.time()
        try:
            if isolate:
                res = run_isolated(job_cfg, job_dir, env, claim, show_tensorflow)
            else:  # in this process: the TensorFlow settings count only if TensorFlow is not imported yet
                isolation.use_tensorflow_env()
                with results.heartbeat_thread(claim):
                    res = train_and_evaluate(job_cfg, job_dir)
        except OSError as exc:  # writing the job's config or its outcome failed (a full disk)
            res, recorded = failed_result(job_cfg, f"{type(exc).__name__}: {exc}", type(exc).__name__,
                                          started), False
        if res.get("status") == "ok":
            break
        described = _disk_full_error(job_dir, res)
        if described is not res or attempt == retries:
            clean_failed_job(job_dir, described)  # before writing: what it frees may be what the record needs
        if described is not res or not recorded:
            _record(job_dir, described)
        res = described
    if retries and res.get("status") != "ok":
        res["attempts"] = retries + 1
        _record(job_dir, res)
    return res


def hydra_task(cfg: Any) -> Any:
    """The ``@hydra.main`` task: validate, run one job, return the sweep objective."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    job_dir = Path(hc.runtime.output_dir)
    started = time.time()
    job_cfg = job_config_dict(cfg)
    try:
        validate(cfg)
        check_device(cfg)  # here, where the job runs (a SLURM node, not the login node)
        check_writable(job_dir)
    except ConfigError as exc:
        res = failed_result(job_cfg, str(exc), "ConfigError", started)
        try:
            results.write_json(job_dir / RESULT_FILE, res)
        except OSError:
            pass
        if not multirun:
            print(f"ptycho_exp: configuration error: {exc}", file=sys.stderr)
            sys.exit(2)
        log.error("configuration error: %s", exc)
        return objective_value(res, cfg.objective)
    n_parallel = isolation.parallel_jobs(hc.launcher.get("n_jobs")) if "n_jobs" in hc.launcher else 1
    job_num = int(hc.job.get("num", 0) or 0) if multirun else 0
    env = isolation.child_env(cfg, job_num, n_parallel)
    try:
        res = run_job(job_cfg, job_dir, cfg.hardware.isolate, cfg.hardware.retries, env,
                      show_tensorflow=bool(hc.verbose))  # hydra.verbose=true shows TensorFlow's start-up lines
    except results.JobClaimed as exc:
        owner = exc.owner
        msg = (f"job {job_dir.name} is running in another process ({owner.describe()}, since {owner.started_at}); "
               "skipped")
        if not multirun:
            print(f"ptycho_exp: {msg}: wait for it, or choose another hydra.run.dir", file=sys.stderr)
            sys.exit(1)
        log.warning(msg)
        return objective_value({"status": "skipped"}, cfg.objective)
    status = res.get("status")
    log.info("job %s: %s%s", job_dir, status, "" if status == "ok" else f" ({res.get('error')})")
    if status != "ok" and not multirun:
        print(f"ptycho_exp: job failed: {res.get('error')} (see {job_dir / RESULT_FILE})",
              file=sys.stderr)
        sys.exit(1)
    return objective_value(res, cfg.objective)


def _child_main(argv: list[str]) -> int:
    """``python -m ptycho_exp.run <job dir>``: the isolated child."""
    import json

    job_dir = Path(argv[0])
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s",
                        datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout),
                                                      logging.FileHandler(job_dir / JOB_LOG_FILE)])
    for noisy in ("tensorflow", "absl", "matplotlib", "PIL", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    job_cfg = json.loads((job_dir / JOB_CONFIG_FILE).read_text())
    res = train_and_evaluate(job_cfg, job_dir)
    return 0 if res["status"] == "ok" else 3


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
