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
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ptycho_exp.files import CLAIM_FILE, RESULT_FILE, atomic_write_text

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


# ----------------------------------------------------------------------------------------- reading
RESULT_STATUSES = ("ok", "failed", "skipped", "running")
# Sub-records that must be JSON objects when present (null counts as absent).
_RECORD_KEYS = ("metrics", "timings", "throughput", "resources", "provenance", "config", "final_losses", "data")
_MAX_RESULT_BYTES = 64 << 20  # a job record is kilobytes; a larger "result.json" is not one


class UnreadableResult(ValueError):
    """A ``result.json`` that exists but is not a job record: ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def result_problem(record: Any) -> str | None:
    """Why a parsed ``result.json`` is not a job record (None when it is one).

    Checked: a JSON object; ``status`` one of :data:`RESULT_STATUSES`; ``metrics`` (and the other
    sub-records) objects whose metric values are numbers or null; ``error``/``config_hash`` text or null.
    """
    if not isinstance(record, dict):
        return f"holds a JSON {type(record).__name__}, not an object"
    status = record.get("status")
    if status not in RESULT_STATUSES:
        return f"status is {status!r}, not one of {', '.join(RESULT_STATUSES)}"
    for key in _RECORD_KEYS:
        value = record.get(key)
        if value is not None and not isinstance(value, dict):
            return f"{key!r} is a {type(value).__name__}, not an object"
    for name, value in (record.get("metrics") or {}).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"metric {name!r} is {type(value).__name__} {str(value)[:40]!r}, not a number"
    for key in ("error", "error_type", "config_hash"):
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key!r} is a {type(value).__name__}, not text"
    return None


def load_result(job_dir: Path | str) -> dict | None:
    """The job's result record; None when the job has none (yet).

    Raises
    ------
    UnreadableResult
        ``result.json`` exists but is not a job record: not a regular file, unreadable, not UTF-8, not
        JSON (truncated, binary), or of the wrong shape (:func:`result_problem`).
    """
    path = Path(job_dir) / RESULT_FILE
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UnreadableResult(path, f"cannot be read ({exc.strerror})") from None
    import stat as stat_mod

    if not stat_mod.S_ISREG(st.st_mode):
        raise UnreadableResult(path, "is not a regular file")
    if st.st_size > _MAX_RESULT_BYTES:
        raise UnreadableResult(path, f"is {st.st_size / 2**20:.0f} MiB, too large to be a job record")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableResult(path, f"cannot be read ({exc.strerror})") from None
    try:
        record = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UnreadableResult(path, "is not text (binary data)") from None
    except json.JSONDecodeError as exc:
        what = "is empty" if not data.strip() else f"is not valid JSON (truncated?): {exc.msg} (byte {exc.pos})"
        raise UnreadableResult(path, what) from None
    problem = result_problem(record)
    if problem is not None:
        raise UnreadableResult(path, problem)
    return record


def read_result(job_dir: Path | str) -> dict | None:
    """:func:`load_result`, with None also for an unreadable record (for callers that only ask "is there a
    usable result?"; those that list jobs use :func:`load_result` and report the bad file)."""
    try:
        return load_result(job_dir)
    except UnreadableResult:
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


# ----------------------------------------------------------------------------------------- job claims
# A job folder is run by one process at a time. The process that runs it holds CLAIM_FILE, created exclusively
# (link(2) of a written temp file, or O_CREAT|O_EXCL; both atomic also on NFSv3+, where flock is often
# refused), holding its PID, host, start time and sweep run; while the job runs it refreshes the file's mtime
# (the heartbeat). A claim is stale when its owner is gone: on the same host, its PID is dead (or is a
# different, newer process); on another host, its heartbeat is older than CLAIM_STALE_S.
RUN_ENV = "PTYCHO_EXP_SWEEP_RUN"
HEARTBEAT_S = 10.0
CLAIM_STALE_S = 120.0
_TAKEOVER_STALE_S = 30.0


@dataclass(frozen=True)
class Claim:
    """Who runs a job folder: ``pid`` on ``host`` since ``started_at`` for sweep ``run`` (None: a single run)."""

    path: Path
    pid: int | None
    host: str | None
    started_at: str | None
    run: str | None
    token: str | None
    pid_start: str | None = None
    slurm_job: str | None = None
    heartbeat: float = 0.0  # mtime of the claim file

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"


class JobClaimed(RuntimeError):
    """The job folder is claimed by another live process (``owner``)."""

    def __init__(self, owner: Claim) -> None:
        self.owner = owner
        super().__init__(f"{owner.path.parent} is running in another process ({owner.describe()}, "
                         f"since {owner.started_at})")


def new_run_id() -> str:
    """An id for one sweep (``<host>:<pid>:<random>``), shared by its jobs through :data:`RUN_ENV`."""
    import secrets

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def current_run() -> str | None:
    """The sweep run this process works for (:data:`RUN_ENV`), or None."""
    return os.environ.get(RUN_ENV) or None


def describe_run(run: str | None) -> str:
    """``"pid 12 on host x"`` for a run id from :func:`new_run_id`."""
    host, _, rest = str(run or "").partition(":")
    pid = rest.partition(":")[0]
    return f"pid {pid} on host {host}" if host and pid else "an unknown process"


def _slurm_job() -> str | None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if job:
        return f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID") or None


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``), None if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    """Whether process ``pid`` exists on this host (and, when ``start`` is given, is the one that started then)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    except OSError:
        return False
    if start is not None:
        now = process_start(pid)
        if now is not None and now != start:
            return False  # the PID was reused by a newer process
    return True


def read_claim(job_dir: Path | str) -> Claim | None:
    """The claim of ``job_dir``, or None when it has none. A claim file being written (empty) reads as a claim
    of an unknown owner."""
    path = Path(job_dir) / CLAIM_FILE
    try:
        mtime = path.stat().st_mtime
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return Claim(path, None, None, None, None, None, heartbeat=time.time())
    try:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError
    except ValueError:
        d = {}
    pid = d.get("pid")
    return Claim(path, pid if isinstance(pid, int) else None, _text(d.get("host")), _text(d.get("started_at")),
                 _text(d.get("run")), _text(d.get("token")), _text(d.get("pid_start")), _text(d.get("slurm_job")),
                 heartbeat=mtime)


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def claim_is_stale(claim: Claim, *, now: float | None = None, host: str | None = None,
                   stale_after: float = CLAIM_STALE_S) -> bool:
    """Whether ``claim``'s owner is gone.

    Same host: its PID is dead or was reused. Another host (or an unreadable claim): its heartbeat (the
    file's mtime) is older than ``stale_after`` seconds.
    """
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    if claim.host == host and claim.pid is not None:
        return not pid_alive(claim.pid, claim.pid_start)
    if claim.pid is None and claim.host is None:  # empty or unreadable: its writer died while writing it
        stale_after = min(stale_after, _TAKEOVER_STALE_S)
    return now - claim.heartbeat > stale_after


def _ours(claim: Claim) -> bool:
    """A claim this process may take over at once: its own, or one left by its own sweep run or SLURM task
    (a requeued task, a retry)."""
    if claim.token is not None and claim.host == socket.gethostname() and claim.pid == os.getpid():
        return True
    run, slurm = current_run(), _slurm_job()
    return (run is not None and claim.run == run) or (slurm is not None and claim.slurm_job == slurm)


def claim_owner(job_dir: Path | str, *, stale_after: float = CLAIM_STALE_S) -> Claim | None:
    """The live claim of ``job_dir`` (None when nobody runs it)."""
    claim = read_claim(job_dir)
    if claim is None or claim_is_stale(claim, stale_after=stale_after):
        return None
    return claim


def is_running(job_dir: Path | str) -> bool:
    """Whether a live process runs the job in ``job_dir`` now (it holds the folder's claim)."""
    return claim_owner(job_dir) is not None


def claim_job(job_dir: Path | str, *, stale_after: float = CLAIM_STALE_S) -> Claim:
    """Claim ``job_dir`` for this process (the folder is created).

    A stale claim, or one left by this sweep run or SLURM task, is taken over (one process at a time, under
    a takeover guard file also created with O_EXCL).

    Raises
    ------
    JobClaimed
        Another live process holds the claim.
    """
    import secrets

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / CLAIM_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": now_iso(), "run": current_run(),
            "token": secrets.token_hex(8), "pid_start": process_start(os.getpid()), "slurm_job": _slurm_job()}
    for _ in range(50):
        if _create_exclusive(path, json.dumps(mine).encode()):
            return Claim(path, mine["pid"], mine["host"], mine["started_at"], mine["run"], mine["token"],
                         mine["pid_start"], mine["slurm_job"], heartbeat=time.time())
        owner = read_claim(job_dir)
        if owner is None:
            continue  # released meanwhile
        if not (_ours(owner) or claim_is_stale(owner, stale_after=stale_after)):
            raise JobClaimed(owner)
        _take_over(job_dir, owner)
    raise JobClaimed(read_claim(job_dir) or Claim(path, None, None, None, None, None))


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists (False then); never visible empty or half-written.

    The content goes to a temp file first, which is then hard-linked to ``path`` (``link`` fails when the name
    exists, atomically, also over NFS). Where hard links are refused, ``O_CREAT|O_EXCL`` creates it (then a
    reader may briefly see it empty; :func:`claim_is_stale` gives such a claim :data:`_TAKEOVER_STALE_S`).
    """
    import errno

    from ptycho_exp.files import temp_name

    tmp = path.with_name(temp_name(path.name))
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:  # over NFS a lost reply to a link that worked reads as EEXIST: count the links
            return os.stat(tmp).st_nlink == 2
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                raise
    finally:
        tmp.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _take_over(job_dir: Path, owner: Claim) -> None:
    """Remove ``owner``'s (stale) claim unless it changed meanwhile; one process at a time."""
    path = job_dir / CLAIM_FILE
    guard = path.with_name(CLAIM_FILE + ".takeover")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - guard.stat().st_mtime > _TAKEOVER_STALE_S:  # its maker died mid-takeover
                guard.unlink(missing_ok=True)
        except OSError:
            pass
        time.sleep(0.05)
        return
    try:
        current = read_claim(job_dir)
        if current is not None and current.token == owner.token and current.heartbeat == owner.heartbeat:
            path.unlink(missing_ok=True)
            log.info("took over the stale claim of %s (%s, since %s)", job_dir, owner.describe(), owner.started_at)
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


def beat(claim: Claim) -> None:
    """Refresh ``claim``'s heartbeat (its file's mtime); a vanished claim file is not recreated."""
    try:
        os.utime(claim.path)
    except OSError as exc:
        log.debug("heartbeat of %s failed: %s", claim.path, exc)


def release_claim(claim: Claim) -> None:
    """Remove ``claim``'s file if it is still this claim (never another owner's)."""
    current = read_claim(claim.path.parent)
    if current is not None and current.token == claim.token:
        claim.path.unlink(missing_ok=True)


@contextmanager
def heartbeat_thread(claim: Claim, interval: float = HEARTBEAT_S):
    """Refresh ``claim``'s heartbeat every ``interval`` seconds from a daemon thread during the block (for work
    done in this process; a parent waiting on a child beats from its wait loop instead)."""
    import threading

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            beat(claim)

    thread = threading.Thread(target=loop, name="claim-heartbeat", daemon=True)
    thread.start()
    try:
        yield claim
    finally:
        stop.set()
        thread.join(timeout=5)
