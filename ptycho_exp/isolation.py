"""Process isolation of one job: the child process, its environment, and how it ended.

A job runs in a child process (``python -m ptycho_exp.run <job dir>``) so that TensorFlow state never leaks
between jobs and a job that dies hard (OOM kill, ``os._exit``, segfault) still leaves the parent able to
record it. This module starts the child (dying with its parent, ignoring SLURM's SIGUSR2), builds its
environment (device visibility, thread counts, TensorFlow settings), and turns its exit status and peak
memory into words. What is recorded is decided by :mod:`ptycho_exp.run`.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TENSORFLOW_ENV", "ChildExit", "child_env", "describe_exit", "disk_full", "log_tail", "parallel_jobs",
           "run_child",
           "tensorflow_env", "use_tensorflow_env"]

CHILD_MODULE = "ptycho_exp.run"
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


# --------------------------------------------------------------------------- the child
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


@dataclass(frozen=True)
class ChildExit:
    """How a job's child process ended: ``exit_code`` (negative: killed by that signal), its peak resident
    memory in MB, and the last part of what it wrote to stderr."""

    exit_code: int
    peak_rss_mb: float
    stderr_tail: str = ""


STDERR_TAIL_BYTES = 16384


def run_child(job_dir: Path, env: dict | None = None, heartbeat: Callable[[], None] | None = None,
              interval: float = 10.0, noise_log: Path | None = None) -> ChildExit:
    """Run ``python -m ptycho_exp.run <job_dir>`` with ``env`` added to this environment; wait for it.

    The child's stderr passes through this process (to its stderr), keeping the last
    :data:`STDERR_TAIL_BYTES` for :func:`disk_full`. With ``noise_log``, TensorFlow's start-up lines
    (:func:`is_tensorflow_noise`) go to that file instead of the terminal; the job's own lines pass.
    While waiting, ``heartbeat()`` is called every ``interval``
    seconds. The child dies with this process (``PR_SET_PDEATHSIG``); an interrupt here kills the child first.
    """
    import select

    cmd = [sys.executable, "-m", CHILD_MODULE, str(job_dir)]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE,
                            preexec_fn=_set_pdeathsig)  # noqa: PLW1509 - the parent runs no threads
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    tail = bytearray()
    out = getattr(sys.stderr, "buffer", None)

    partial = bytearray()  # an unfinished line, held until its end arrives

    def show(data: bytes) -> None:
        if out is not None and data:
            try:
                out.write(data)
                out.flush()
            except (OSError, ValueError):
                pass

    def take(chunk: bytes, final: bool = False) -> None:
        tail.extend(chunk)
        del tail[:-STDERR_TAIL_BYTES]
        if noise_log is None:
            show(chunk)
            return
        partial.extend(chunk)
        lines = bytes(partial).splitlines(keepends=True)
        partial.clear()
        if lines and not final and not lines[-1].endswith((b"\n", b"\r")):
            partial.extend(lines.pop())
        noise = [line for line in lines if is_tensorflow_noise(line)]
        show(b"".join(line for line in lines if not is_tensorflow_noise(line)))
        if noise:
            try:
                with open(noise_log, "ab") as fh:
                    fh.writelines(noise)
            except OSError:
                pass

    try:
        next_beat = time.monotonic() + interval
        open_pipe = True
        while True:
            if open_pipe:
                ready, _, _ = select.select([fd], [], [], min(interval, 1.0))
                if ready:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        take(chunk)
                    else:
                        open_pipe = False
            else:
                time.sleep(0.2)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if heartbeat is not None and time.monotonic() >= next_beat:
                heartbeat()
                next_beat = time.monotonic() + interval
        while open_pipe and select.select([fd], [], [], 0)[0]:  # what is left (a grandchild may hold the pipe)
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            take(chunk)
        take(b"", final=True)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildExit(exit_code=proc.returncode, peak_rss_mb=usage.ru_maxrss / 1024.0,
                     stderr_tail=tail.decode("utf-8", "replace"))


# What a full disk says, in Python (OSError errno 28), libc/HDF5 messages and logs.
DISK_FULL_MARKERS = ("No space left on device", "[Errno 28]", "errno = 28", "ENOSPC", "Disk quota exceeded",
                     "[Errno 122]")


def disk_full(job_dir: Path | str, texts: Iterable[str], min_free_mb: float = 1.0) -> str | None:
    """The words for a job that ran out of disk, or None.

    The disk counts as full when one of ``texts`` (the child's stderr tail, the job log's tail, the recorded
    error) carries a :data:`DISK_FULL_MARKERS` message, or when the job folder's file system has less than
    ``min_free_mb`` MiB free now.
    """
    import shutil

    said = next((m for m in DISK_FULL_MARKERS for t in texts if t and m in t), None)
    try:
        free_mb = shutil.disk_usage(job_dir).free / 2**20
    except OSError:
        free_mb = float("nan")
    if said is None and not free_mb < min_free_mb:
        return None
    what = "No space left on device" if said in (None, "[Errno 28]", "errno = 28", "ENOSPC") else said
    return (f"the disk holding {job_dir} is full ({what}; {free_mb:.1f} MiB free now): free space there or "
            "choose another output folder (hydra.run.dir / hydra.sweep.dir), then run the job again")


def log_tail(path: Path | str, n_bytes: int = STDERR_TAIL_BYTES) -> str:
    """The last ``n_bytes`` of a text file ("" when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n_bytes))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


# Lines TensorFlow's C++ runtime prints as it starts (absl logging: CUDA probes on a machine without a GPU,
# oneDNN and CPU-feature notes). A job's terminal shows them only with hydra.verbose=true; otherwise they go to
# the job folder's TENSORFLOW_LOG_FILE.
_TENSORFLOW_NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
                               rb"|[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\]"
                               rb"|To enable the following instructions: .* rebuild TensorFlow"
                               rb"|This TensorFlow binary is optimized to use available CPU instructions)")


def is_tensorflow_noise(line: bytes) -> bool:
    """Whether one stderr line of a job is TensorFlow's start-up chatter (not a line of the job itself)."""
    return bool(_TENSORFLOW_NOISE.match(line.lstrip()))


def describe_exit(code: int) -> tuple[str, str]:
    """(what happened, likely cause) of a child's exit code: ``("killed by signal 9 (SIGKILL)", " — probably out
    of memory")``, ``("exited with status 1", "")``, ..."""
    why = (f"killed by signal {-code} ({signal.Signals(-code).name})" if code < 0
           else f"exited with status {code}")
    hint = {-signal.SIGKILL: " — probably out of memory",
            -signal.SIGTERM: " — stopped from outside (scancel, a time limit, a shutdown)"}.get(code, "")
    return why, hint


# --------------------------------------------------------------------------- environment
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
