"""The files of a job folder and of an aggregate folder, by name, in one place.

A job folder (``hydra.run.dir`` or one ``hydra.sweep.dir/<n>``) holds:

* :data:`RESULT_FILE` - the outcome record (written last, atomically; its presence marks a finished job),
* :data:`JOB_CONFIG_FILE` - the resolved config the isolated child process reads,
* :data:`RECON_FILE` - the registered reconstruction and its ground truth (``recon``, ``gt``, ``origin``),
* :data:`HISTORY_FILE`, :data:`FRC_FILE` - the training history and the Fourier ring correlation curves,
* :data:`JOB_LOG_FILE` - the child's log,
* :data:`MODEL_DIR` / :data:`MODEL_FILE` (+ :data:`NORM_FILE`) - a trained network,
* :data:`HYDRA_DIR` - Hydra's record of the composed config and overrides,
* :data:`CLAIM_FILE` - present while a process runs the job (owner PID, host, start time; its mtime is the
  owner's heartbeat); see :func:`ptycho_exp.results.claim_job`,
* ``.train_backup-<config hash>/`` (:data:`TRAIN_BACKUP_PREFIX`) - a training checkpoint that lets a killed or
  requeued job resume; removed when training ends and when a job is recorded as failed.

Every file the framework writes is written atomically here: to a temp file ``.tmp-<random>-<name>`` in the same
folder (the name keeps its suffix, which some writers need, e.g. Keras's ``.keras``), flushed and fsynced,
then moved over the target with ``os.replace``. A reader never sees a torn file; a killed writer leaves
only a temp file, which :func:`remove_stale_temp_files` deletes.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_path", "temp_name",
           "is_temp_file", "remove_stale_temp_files"]

log = logging.getLogger(__name__)
TEMP_PREFIX = ".tmp-"

# --- job folder
RESULT_FILE = "result.json"
JOB_CONFIG_FILE = "job_config.json"
RECON_FILE = "recon.npz"
HISTORY_FILE = "history.csv"
FRC_FILE = "frc.csv"
JOB_LOG_FILE = "job.log"
TENSORFLOW_LOG_FILE = "tensorflow.log"  # TensorFlow's start-up lines, kept off the terminal
WRITE_PROBE_FILE = ".write_probe"
MODEL_DIR = "model"
MODEL_FILE = "model.keras"
NORM_FILE = "norm.json"
TENSORBOARD_DIR = "tensorboard"
HYDRA_DIR = ".hydra"
CLAIM_FILE = ".claim.json"
TRAIN_BACKUP_PREFIX = ".train_backup-"
OVERRIDES_FILE = Path(HYDRA_DIR) / "overrides.yaml"
HYDRA_CONFIG_FILE = Path(HYDRA_DIR) / "config.yaml"

# --- sweep folder
MULTIRUN_FILE = "multirun.yaml"

# --- aggregate folder
RAW_FILE = "raw_results_all_trials.csv"
RESULTS_FILE = "results.csv"
BEST_FILE = "best_params.yaml"
ENSEMBLE_FILE = "ensemble.csv"
FINDINGS_FILE = "findings.csv"
SUMMARY_FILE = "STUDY_SUMMARY.md"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"


# ----------------------------------------------------------------------------------------- atomic writes
def temp_name(name: str) -> str:
    """The temp-file name an atomic write of ``name`` uses: ``.tmp-<random>-<name>``."""
    return f"{TEMP_PREFIX}{secrets.token_hex(4)}-{name}"


def is_temp_file(path: Path, names: Iterable[str] | None = None) -> bool:
    """Whether ``path`` is a temp file of an atomic write (of one of ``names``, when given).

    Also recognised: ``.<name>.<random>.tmp`` and ``<name>.tmp``, so that debris from older releases is cleaned too.
    """
    n = path.name
    if names is None:
        return n.startswith(TEMP_PREFIX) or n.endswith(".tmp")
    for name in names:
        if n.startswith(TEMP_PREFIX) and n.endswith("-" + name) and len(n) > len(TEMP_PREFIX) + len(name) + 1:
            return True
        if n.endswith(".tmp") and (n.startswith(f".{name}.") or n == f"{name}.tmp"):
            return True
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temp path (same folder, :func:`temp_name`) to write ``path`` through, for writers that want a file
    name (``savefig``, ``np.savez``, ``keras.Model.save``); on a clean exit it is fsynced and moved over ``path``,
    on an error removed. The folder is created. The file gets the mode ``open()`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None) -> None:
    """``obj`` as JSON (strict: NaN is refused), with a final newline, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default,
                                       allow_nan=False) + "\n")


def training_backups(folder: Path | str) -> list[Path]:
    """The training backup folders (``.train_backup-*``) in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(TRAIN_BACKUP_PREFIX) and p.is_dir())


def remove_stale_temp_files(folder: Path | str, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temp files a killed atomic write left in ``folder`` (not recursive).

    Only those of the given file ``names`` (every temp file when None; see :func:`is_temp_file`). Call it
    while no live writer can own them (holding :func:`ptycho_exp.results.folder_lock`, or before a job starts).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = None if names is None else list(names)
    found = [p for p in folder.iterdir() if p.is_file() and is_temp_file(p, names)]
    for p in found:
        p.unlink(missing_ok=True)
        log.info("removed stale temp file %s (left by a killed writer)", p)
    return found
