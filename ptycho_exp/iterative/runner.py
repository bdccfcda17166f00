"""Run an iterative engine out of process (NPZ in -> worker -> NPZ out).

    from ptycho_exp.iterative import run_engine
    res = run_engine(amplitude, positions_rc, probe, {"engine": "ptylab", "algorithm": "ePIE",
                     "iterations": 100}, workdir="runs/x/iterative")
    res.object, res.origin, res.data_error, res.metadata

For Tike pass ``python=".venv-tike/bin/python"`` (the worker is started by path, so that interpreter only
needs numpy and tike).  Imports numpy and the standard library only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import EngineResult, read_engine_output, write_engine_input

__all__ = ["WORKER_PATH", "EngineError", "run_engine"]

WORKER_PATH = Path(__file__).resolve().with_name("worker.py")
_TAIL_CHARS = 4000


class EngineError(RuntimeError):
    """The engine worker failed; ``stderr_tail`` holds the end of its stderr."""

    def __init__(self, message: str, stderr_tail: str = "", returncode: int | None = None) -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail
        self.returncode = returncode


def _tail(text: str | bytes | None, n: int = _TAIL_CHARS) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text[-n:]


def run_engine(
    diffraction: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray | None,
    settings: dict[str, Any],
    python: str | os.PathLike | None = None,
    workdir: str | os.PathLike | None = None,
    timeout_s: float | None = None,
) -> EngineResult:
    """Reconstruct with the engine named in ``settings["engine"]`` in a subprocess.

    Parameters
    ----------
    diffraction : (M, N, N) float32 amplitude, zero frequency centred (docs/CONTRACT.md §1).
    positions : (M, 2) (row, col) = (y, x) patch centres in object pixels.
    probe : (N, N) complex probe guess, or None (PtyLab then starts from a circular pupil).
    settings : ``{"engine": "ptylab" | "tike", ...}`` plus engine settings (see ``ptylab_engine.DEFAULTS``
        and ``tike_engine.DEFAULTS``); must be JSON-serialisable.
    python : interpreter for the worker (default: this one).
    workdir : where ``engine-<id>-in.npz`` / ``engine-<id>-out.npz`` are written.  The output is kept,
        the input is removed on success (kept on failure for debugging).  Default: a temporary directory
        removed afterwards.
    timeout_s : kill the worker after this many seconds (raises EngineError).

    Returns
    -------
    EngineResult with ``object`` (H, W) complex64, ``probe``, ``origin`` (row0, col0) such that object
    row ``r`` is scan coordinate ``row0 + r``, ``data_error`` per iteration, ``metadata``.
    """
    if "engine" not in settings:
        raise ValueError("settings must name the engine: settings['engine'] in {'ptylab', 'tike'}")
    own_dir = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="ptycho_engine_")) if own_dir else Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    tag = f"{settings['engine']}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    in_path = wd / f"engine-{tag}-in.npz"
    out_path = wd / f"engine-{tag}-out.npz"
    try:
        write_engine_input(in_path, diffraction, positions, probe, settings)
        env = dict(os.environ)
        env.setdefault("MPLBACKEND", "Agg")
        env.setdefault("TQDM_DISABLE", "1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = [str(python or sys.executable), str(WORKER_PATH), str(in_path), str(out_path)]
        try:
            proc = subprocess.run(
                cmd, check=False, capture_output=True, text=True, timeout=timeout_s, env=env
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineError(
                f"engine {settings['engine']!r} timed out after {timeout_s} s (input kept at {in_path})",
                _tail(exc.stderr),
            ) from None
        except OSError as exc:
            raise EngineError(f"cannot start engine worker with {cmd[0]!r}: {exc}") from None
        if proc.returncode != 0 or not out_path.is_file():
            tail = _tail(proc.stderr)
            last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "(no stderr)")
            raise EngineError(
                f"engine {settings['engine']!r} failed (exit {proc.returncode}): {last}",
                tail,
                proc.returncode,
            )
        result = read_engine_output(out_path)
        result.metadata.setdefault("worker_stderr_tail", _tail(proc.stderr, 1000))
        in_path.unlink(missing_ok=True)
        if not own_dir:
            result.metadata["output_path"] = str(out_path)
        return result
    finally:
        if own_dir:
            shutil.rmtree(wd, ignore_errors=True)
