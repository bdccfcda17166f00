"""Memory a PtyLab reconstruction needs for a scan, checked before the engine starts.

PtyLab holds the whole ptychogram in memory by design (as float32 intensities, after a float64 copy of the
amplitudes), and the job process holds the scan too while the engine worker runs. The need is estimated as
``ENGINE_BASE_BYTES + ENGINE_PATTERN_FACTOR * pattern bytes`` (pattern bytes: M x N x N x 4, the float32
amplitudes), measured as the peak RSS of a job process and its engine worker on scans of two sizes
(``bench/engine_memory.py``); it is compared with the memory the system can give without swapping
(``MemAvailable`` of ``/proc/meminfo``). A scan that does not fit is refused with one line naming the
file, the estimate, the available memory and the fix, before the engine (or, in the pre-run validation,
before the job) starts. Standard library only.
"""
from __future__ import annotations

__all__ = ["ENGINE_BASE_BYTES", "ENGINE_PATTERN_FACTOR", "EngineMemoryError", "available_memory_bytes",
           "check_engine_memory", "engine_memory_bytes", "engine_memory_shortfall"]

ENGINE_PATTERN_FACTOR = 20.0       # peak RSS growth per byte of float32 patterns (job + PtyLab worker): 18.6 measured
ENGINE_BASE_BYTES = 384 * 2 ** 20  # the two processes' interpreters and libraries, any scan: 357 MiB measured
MEMINFO = "/proc/meminfo"


class EngineMemoryError(MemoryError):
    """The scan does not fit in memory for an iterative engine; the message is one line with the fix."""


def engine_memory_bytes(n_patterns: int, N: int) -> int:
    """Estimated peak memory (bytes) of a PtyLab reconstruction of ``n_patterns`` N x N patterns.

    Parameters
    ----------
    n_patterns : int
        Patterns the engine reconstructs from (M).
    N : int
        Pattern side (px).

    Returns
    -------
    int
        ``ENGINE_BASE_BYTES + ENGINE_PATTERN_FACTOR * M * N * N * 4``.
    """
    return int(ENGINE_BASE_BYTES + ENGINE_PATTERN_FACTOR * int(n_patterns) * int(N) ** 2 * 4)


def available_memory_bytes(meminfo: str = MEMINFO) -> int | None:
    """``MemAvailable`` of ``meminfo`` in bytes, or None where it cannot be read (not Linux)."""
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.2f} GiB"


def engine_memory_shortfall(what: str, n_patterns: int, N: int, available: int | None = None) -> str | None:
    """One line saying why a PtyLab reconstruction of a scan does not fit in memory, or None when it fits.

    Parameters
    ----------
    what : str
        The scan as the user named it, e.g. ``"data.test_path='/d/scan.h5'"``.
    n_patterns, N : int
        The scan's patterns (M) and their side.
    available : int, optional
        Bytes available (default: :func:`available_memory_bytes`; unknown means the check is skipped).
    """
    available = available_memory_bytes() if available is None else int(available)
    if available is None:
        return None
    need = engine_memory_bytes(n_patterns, N)
    if need <= available:
        return None
    patterns = int(n_patterns) * int(N) ** 2 * 4
    return (f"{what}: the iterative engine (PtyLab) holds the whole scan in memory and needs about {_gib(need)} "
            f"for its {int(n_patterns)} patterns of {int(N)}x{int(N)} ({_gib(patterns)} of float32 patterns x "
            f"{ENGINE_PATTERN_FACTOR:g} + {_gib(ENGINE_BASE_BYTES)}), but only {_gib(available)} is available; "
            f"fix: reduce the scan with `ptycho-exp data import ... --bin B` (B x B fewer pixels per pattern) or "
            f"`--frames A:B` (fewer patterns; data.reader.bin and data.reader.frame_start/frame_stop for "
            f"data=cxi|ptylab_h5, data.n_test for an iterative arm), or run on a machine with more memory")


def check_engine_memory(what: str, n_patterns: int, N: int, available: int | None = None) -> None:
    """Raise :class:`EngineMemoryError` when :func:`engine_memory_shortfall` finds the scan does not fit."""
    reason = engine_memory_shortfall(what, n_patterns, N, available)
    if reason:
        raise EngineMemoryError(reason)
