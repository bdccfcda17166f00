"""Out-of-process entry point of the iterative engines.

    python -m ptycho_exp.iterative.worker IN.npz OUT.npz
    python /path/to/ptycho_exp/iterative/worker.py IN.npz OUT.npz     # e.g. with the Tike venv's python

Reads an engine input NPZ (:func:`protocol.write_engine_input`), dispatches on ``settings["engine"]``
(``ptylab`` | ``tike``), checks the result for divergence (:mod:`health`: recorded in the output's
metadata, never an error), writes the engine output NPZ atomically and exits 0.  On any error it prints one
line ``ptycho_exp worker error: ...`` to stderr, writes no output file and exits 2 (set
``PTYCHO_EXP_WORKER_TRACEBACK=1`` to also print the traceback).

Only numpy and the standard library are imported at module level; the engine module is imported lazily,
and the sibling modules are imported as top-level modules when this file runs as a script, so the rest of
``ptycho_exp`` (TensorFlow, pandas, ...) is never needed in the engine's interpreter.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

if __package__:  # python -m ptycho_exp.iterative.worker, or imported
    from . import health, protocol
else:  # python /path/to/worker.py: import siblings as top-level modules
    _here = os.path.dirname(os.path.abspath(__file__))
    if _here not in sys.path:
        sys.path.insert(0, _here)
    import health  # type: ignore[no-redef]
    import protocol  # type: ignore[no-redef]

ENGINES = ("ptylab", "tike")
EXIT_OK = 0
EXIT_ERROR = 2


class WorkerError(Exception):
    """An error with a message clear enough to print on its own."""


def _engine_function(name: str) -> Callable[..., Any]:
    if name == "ptylab":
        if __package__:
            from .ptylab_engine import reconstruct_ptylab
        else:
            from ptylab_engine import reconstruct_ptylab  # type: ignore[no-redef]
        return reconstruct_ptylab
    if name == "tike":
        if __package__:
            from .tike_engine import reconstruct_tike
        else:
            from tike_engine import reconstruct_tike  # type: ignore[no-redef]
        return reconstruct_tike
    raise WorkerError(
        f"unknown engine {name!r} in settings['engine'] (expected one of: {', '.join(ENGINES)})"
    )


def run(in_path: str, out_path: str) -> None:
    """Read ``in_path``, reconstruct, write ``out_path`` (raises on error)."""
    if not os.path.isfile(in_path):
        raise WorkerError(f"input file not found: {in_path}")
    inp = protocol.read_engine_input(in_path)
    engine = inp.settings.get("engine")
    if not isinstance(engine, str):
        raise WorkerError(f"settings['engine'] must be one of: {', '.join(ENGINES)} (got {engine!r})")
    func = _engine_function(engine.lower())
    t0 = time.perf_counter()
    obj, probe, origin, data_error, meta, *rest = func(inp.diffraction, inp.positions, inp.probe, inp.settings)
    total = time.perf_counter() - t0
    corrected = rest[0] if rest else None  # engines that refine positions return them
    meta = dict(meta)
    amp = inp.diffraction.astype(np.float64)
    energy = float(np.mean(np.sum(amp * amp, axis=(-2, -1))))
    meta["health"] = health.assess_run(
        data_error, probe, obj, origin, inp.positions if corrected is None else corrected, energy,
        meta.get("final_data_error"),
    ).as_dict()
    meta.setdefault("engine", engine.lower())
    meta.setdefault("seconds", total)
    meta["worker_seconds"] = total
    meta["python"] = sys.executable
    meta["settings"] = inp.settings
    protocol.write_engine_output(out_path, obj, probe, origin, data_error, meta, positions=corrected)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("ptycho_exp worker error: usage: worker.py IN.npz OUT.npz", file=sys.stderr)
        return EXIT_ERROR
    in_path, out_path = argv
    try:
        if os.path.exists(out_path):  # never leave a stale result that could be mistaken for this run's
            os.unlink(out_path)
        run(in_path, out_path)
    except Exception as exc:  # noqa: BLE001 - the worker reports every failure the same way
        if os.environ.get("PTYCHO_EXP_WORKER_TRACEBACK"):
            traceback.print_exc(file=sys.stderr)
        msg = str(exc).strip().replace("\n", " | ") or "(no message)"
        kind = "" if isinstance(exc, WorkerError) else f"{type(exc).__name__}: "
        print(f"ptycho_exp worker error: {kind}{msg}", file=sys.stderr)
        try:
            if os.path.exists(out_path):
                os.unlink(out_path)
        except OSError:
            pass
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
