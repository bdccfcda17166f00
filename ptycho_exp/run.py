"""One job's lifecycle: validate, skip-if-done, run (isolated), always record the outcome.

``hydra_task`` is the Hydra task function (parent side, light: no TensorFlow). With
``hardware.isolate`` (the default) the science runs in a child process
(``python -m ptycho_exp.run <job dir>``), so TensorFlow state never leaks between jobs and a
job that dies hard (OOM kill, ``os._exit``, segfault) is still recorded as failed with its
exit status and peak memory. Either way ``result.json`` is written atomically.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ptycho_exp import results
from ptycho_exp.config import ConfigError, check_device, validate

log = logging.getLogger("ptycho_exp.run")
JOB_CONFIG_FILE = "job_config.json"
# TensorFlow settings a job process starts with unless the caller's environment sets them (read once,
# when TensorFlow is first imported). TensorFlow turns on its oneDNN kernels by itself only on CPUs with
# AVX-512 VNNI/BF16 or AMX; on AVX2-only CPUs (AMD Zen 3, older Xeons) its default Eigen kernels train
# the networks 15-36 % slower (docs/PERFORMANCE.md, "CPUs without bfloat16").
TENSORFLOW_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "1"}


def tensorflow_env(environ: dict | None = None) -> dict[str, str]:
    """:data:`TENSORFLOW_ENV`, each value overridden by ``environ`` (default ``os.environ``) where set there."""
    environ = os.environ if environ is None else environ
    return {key: environ.get(key, default) for key, default in TENSORFLOW_ENV.items()}


def use_tensorflow_env() -> None:
    """Put :data:`TENSORFLOW_ENV` into this process's environment where unset (before TensorFlow is imported)."""
    for key, value in tensorflow_env().items():
        os.environ.setdefault(key, value)


# --------------------------------------------------------------------------- config helpers
def job_config_dict(cfg: Any) -> dict:
    """The resolved job config as plain containers (Hydra's own node removed)."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    container.pop("hydra", None)
    return container


def as_config(job_cfg: dict) -> Any:
    """A typed DictConfig (schema-checked) from a plain job config dict."""
    from omegaconf import OmegaConf

    from ptycho_exp.config import Config

    return OmegaConf.merge(OmegaConf.structured(Config), job_cfg)


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
            "timings": {"total_s": time.time() - started}, "config": job_cfg,
            "provenance": {**results.provenance(), "started_at": _iso(started),
                           "finished_at": results.now_iso()}, **extra}


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def done_result(job_dir: Path, job_cfg: dict) -> dict | None:
    """The job's ok result for this exact config, if it already exists (skip-if-done)."""
    prev = results.read_result(job_dir)
    if prev and prev.get("status") == "ok" and prev.get("config_hash") == results.config_hash(job_cfg):
        return prev
    return None


def check_writable(job_dir: Path) -> None:
    """Fail before any work when the output folder cannot be written."""
    probe = job_dir / ".write_probe"
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
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
        results.write_json(job_dir / results.RESULT_FILE, res)
        return res
    res = {"schema": results.SCHEMA_VERSION, "status": "ok", "error": None, "error_type": None,
           "config_hash": results.config_hash(job_cfg), "model": job_cfg["model"]["name"],
           "seed": job_cfg["seed"], "tag": job_cfg["tag"], **outcome, "config": job_cfg,
           "provenance": {**results.provenance(), "started_at": _iso(started),
                          "finished_at": results.now_iso()}}
    res.setdefault("timings", {})["total_s"] = time.time() - started
    results.write_json(job_dir / results.RESULT_FILE, res)
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


# --------------------------------------------------------------------------- isolation
def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Die with the parent: a killed sweep leaves no orphan job writing results later.

    SIGUSR2 is ignored: SLURM sends it to every process of the step before a time limit or a
    preemption, and it is the parent's (submitit's) job to checkpoint and requeue; the child must
    not die of it first and be recorded as failed.
    """
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_isolated(job_cfg: dict, job_dir: Path, env: dict | None = None) -> dict:
    """Run the job in a child process; record a failure if the child dies without a result."""
    started = time.time()
    results.write_json(job_dir / JOB_CONFIG_FILE, job_cfg)
    cmd = [sys.executable, "-m", "ptycho_exp.run", str(job_dir)]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})},
                            preexec_fn=_set_pdeathsig)  # noqa: PLW1509 - the parent runs no threads
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak_mb = usage.ru_maxrss / 1024.0
    res = results.read_result(job_dir)
    if res is not None and res.get("config_hash") == results.config_hash(job_cfg) \
            and res.get("status") in ("ok", "failed") and _iso(started) <= res["provenance"]["finished_at"]:
        return res
    code = proc.returncode
    why = (f"killed by signal {-code} ({signal.Signals(-code).name})" if code < 0
           else f"exited with status {code}")
    hint = {-signal.SIGKILL: " — probably out of memory",
            -signal.SIGTERM: " — stopped from outside (scancel, a time limit, a shutdown)"}.get(code, "")
    res = failed_result(job_cfg, f"job process {why} without writing a result{hint}", "ProcessDied",
                        started, resources={"peak_rss_mb": peak_mb}, exit_code=code)
    results.write_json(job_dir / results.RESULT_FILE, res)
    return res


def child_env(cfg: Any, job_num: int, n_parallel: int, gpus: list[str] | None = None,
              n_cpus: int | None = None) -> dict:
    """Environment for one job: device visibility and thread counts (pure given ``gpus``/``n_cpus``).

    Parameters
    ----------
    cfg : the job config (``hardware.device``, ``hardware.intra_op_threads`` are read).
    job_num : Hydra's job number; with several GPUs visible and several jobs at once, job ``k``
        gets GPU ``gpus[k % len(gpus)]`` (round-robin). Where more jobs run at once than there are
        GPUs, TensorFlow's memory grows on demand (``TF_FORCE_GPU_ALLOW_GROWTH``) so they can share one.
    n_parallel : how many jobs run at once on this machine (the launcher's ``n_jobs``).
    gpus : visible GPU ids (default: ``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi -L``).
    n_cpus : CPU count split between concurrent jobs (default ``os.cpu_count()``).
    """
    env: dict[str, str] = {}
    device = cfg.hardware.device
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif n_parallel > 1:
        gpus = _visible_gpus() if gpus is None else list(gpus)
        if len(gpus) > 1:
            env["CUDA_VISIBLE_DEVICES"] = gpus[job_num % len(gpus)]
        if len(gpus) < n_parallel:  # jobs share a GPU: TensorFlow would give the first one all its memory
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if n_parallel > 1 and cfg.hardware.intra_op_threads == 0:
        per_job = max(1, (n_cpus or os.cpu_count() or 1) // n_parallel)
        env.update(OMP_NUM_THREADS=str(per_job), PTYCHO_EXP_INTRA_THREADS=str(per_job))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(tensorflow_env())
    return env


def parallel_jobs(n_jobs: Any, n_cpus: int | None = None) -> int:
    """Jobs at once for a launcher ``n_jobs`` (joblib: -1 = all CPUs, -2 = all but one; None: 1)."""
    if n_jobs is None:
        return 1
    n = int(n_jobs)
    if n < 0:
        n = (n_cpus or os.cpu_count() or 1) + 1 + n
    return max(1, n)


def _visible_gpus() -> list[str]:
    ids = os.environ.get("CUDA_VISIBLE_DEVICES")
    if ids is not None:
        return [i for i in ids.split(",") if i.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


# --------------------------------------------------------------------------- CLI mode
_MODE_FLAGS = ("-m", "--multirun", "-r", "--run", "-c", "--cfg", "-i", "--info", "-h", "--help", "--hydra-help",
               "-sc", "--shell-completion", "--experimental-rerun")
_STUDY_GROUPS = ("study", "experiment", "local")


def register_plugins() -> None:
    """Make our sweeper and SLURM launcher (``_target_: ptycho_exp.study...``) resolvable.

    Hydra only discovers plugins in the ``hydra_plugins`` namespace; ours lives in the package.
    Importing it costs nothing extra: Hydra's plugin scan imports the Optuna sweeper module anyway.
    """
    import importlib

    from hydra.core.plugins import Plugins

    for module, name in (("ptycho_exp.study.sweeper", "ResumableOptunaSweeper"),
                         ("ptycho_exp.study.launchers", "ResilientSlurmLauncher")):
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

        from ptycho_exp.study.plan import _split, compose_job_config

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fixed, _ = _split(overrides)  # sweep overrides (a=1,2) cannot be composed, and need not be
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
    found = results.remove_stale_temp_files(job_dir)
    probe = Path(job_dir) / ".write_probe"
    if probe.is_file():
        probe.unlink(missing_ok=True)
        found.append(probe)
    return found


def run_job(job_cfg: dict, job_dir: Path, isolate: bool, retries: int = 0, env: dict | None = None) -> dict:
    """Skip if done, else run (isolated or in-process), re-running a failure up to ``retries`` times."""
    remove_job_debris(job_dir)
    prev = done_result(job_dir, job_cfg)
    if prev is not None:
        log.info("skip: %s already has an ok result for config %s", job_dir, prev["config_hash"])
        return prev
    res: dict = {}
    for attempt in range(retries + 1):
        if attempt:
            log.warning("retry %d/%d of %s after: %s", attempt, retries, job_dir, res.get("error"))
        if isolate:
            res = run_isolated(job_cfg, job_dir, env)
        else:  # in this process: the TensorFlow settings count only if TensorFlow is not imported yet
            use_tensorflow_env()
            res = train_and_evaluate(job_cfg, job_dir)
        if res.get("status") == "ok":
            break
    if retries and res.get("status") != "ok":
        res["attempts"] = retries + 1
        results.write_json(job_dir / results.RESULT_FILE, res)
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
            results.write_json(job_dir / results.RESULT_FILE, res)
        except OSError:
            pass
        if not multirun:
            print(f"ptycho_exp: configuration error: {exc}", file=sys.stderr)
            sys.exit(2)
        log.error("configuration error: %s", exc)
        return objective_value(res, cfg.objective)
    n_parallel = parallel_jobs(hc.launcher.get("n_jobs")) if "n_jobs" in hc.launcher else 1
    job_num = int(hc.job.get("num", 0) or 0) if multirun else 0
    env = child_env(cfg, job_num, n_parallel)
    res = run_job(job_cfg, job_dir, cfg.hardware.isolate, cfg.hardware.retries, env)
    status = res.get("status")
    log.info("job %s: %s%s", job_dir, status, "" if status == "ok" else f" ({res.get('error')})")
    if status != "ok" and not multirun:
        print(f"ptycho_exp: job failed: {res.get('error')} (see {job_dir / results.RESULT_FILE})",
              file=sys.stderr)
        sys.exit(1)
    return objective_value(res, cfg.objective)


def _child_main(argv: list[str]) -> int:
    """``python -m ptycho_exp.run <job dir>``: the isolated child."""
    import json

    job_dir = Path(argv[0])
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s",
                        datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout),
                                                      logging.FileHandler(job_dir / "job.log")])
    for noisy in ("tensorflow", "absl", "matplotlib", "PIL", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    job_cfg = json.loads((job_dir / JOB_CONFIG_FILE).read_text())
    res = train_and_evaluate(job_cfg, job_dir)
    return 0 if res["status"] == "ok" else 3


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
