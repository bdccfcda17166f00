"""NPZ protocol between ``ptycho_exp`` and the out-of-process iterative engines.

This module imports only numpy and the standard library, so that the engine worker can load it in a
foreign interpreter (for example the Tike virtual environment, which pins ``numpy<2``) without importing
the rest of ``ptycho_exp``.  It is imported both as ``ptycho_exp.iterative.protocol`` and, by the worker
run as a plain script, as the top-level module ``protocol``.

Conventions (docs/CONTRACT.md §1, §4)
-------------------------
* A scan position is ``(row, col) = (y, x)`` in object pixels (float64): the centre of an N×N patch,
  ``patch[i, j] = obj[y - N/2 + i, x - N/2 + j]``.
* Diffraction data is **amplitude** ``X = sqrt(fftshift(|FFT2(P·O)|²) / N²)`` (unitary FFT, zero frequency
  at pixel ``(N/2, N/2)``), float32, shape ``(M, N, N)``.
* An engine returns its object with an ``origin = (row0, col0)`` in scan-position coordinates: object row
  ``r`` is the scan coordinate ``row0 + r``, i.e. a patch centre ``y`` sits at object row ``y - row0``.

Files never contain pickled objects: dictionaries travel as JSON text in 0-d unicode arrays and every
file is read with ``allow_pickle=False``.  Writes are atomic (temporary file in the same directory, then
``os.replace``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

try:  # package import, or top-level import by the worker script (see module doc)
    from .health import RunHealth, assess_run
except ImportError:  # pragma: no cover - exercised by the worker run as a script
    from health import RunHealth, assess_run  # type: ignore[no-redef]

__all__ = [
    "PROTOCOL_VERSION",
    "EngineInput",
    "EngineResult",
    "ProtocolError",
    "amplitude_to_tike_intensity",
    "health_of",
    "read_engine_input",
    "read_engine_output",
    "tike_intensity_to_amplitude",
    "write_engine_input",
    "write_engine_output",
    "write_probe_file",
]

PROTOCOL_VERSION = 1


class ProtocolError(ValueError):
    """A protocol file is missing a key or has the wrong shape or dtype."""


# ----------------------------------------------------------------------------------------------------
# Data conversion
# ----------------------------------------------------------------------------------------------------
def amplitude_to_tike_intensity(amplitude: np.ndarray) -> np.ndarray:
    """Contract amplitude (zero frequency centred) -> Tike intensity (zero frequency at the corners).

    ``ifftshift(amplitude**2, axes=(-2, -1))`` as float32.  For even N the centred zero frequency at
    ``(N/2, N/2)`` lands exactly on ``(0, 0)``.
    """
    a = np.asarray(amplitude)
    if a.ndim < 2:
        raise ValueError(f"amplitude must have at least 2 dimensions, got shape {a.shape}")
    a64 = a.astype(np.float64, copy=False)
    return np.fft.ifftshift(a64 * a64, axes=(-2, -1)).astype(np.float32)


def tike_intensity_to_amplitude(intensity: np.ndarray) -> np.ndarray:
    """Inverse of :func:`amplitude_to_tike_intensity`: ``sqrt(fftshift(I))`` as float32 (negatives -> 0)."""
    i = np.asarray(intensity)
    if i.ndim < 2:
        raise ValueError(f"intensity must have at least 2 dimensions, got shape {i.shape}")
    i64 = np.clip(i.astype(np.float64, copy=False), 0.0, None)
    return np.sqrt(np.fft.fftshift(i64, axes=(-2, -1))).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EngineInput:
    """What an engine needs: amplitude data, (row, col) centre positions, probe guess, settings."""

    diffraction: np.ndarray  # (M, N, N) float32 amplitude, zero frequency centred
    positions: np.ndarray  # (M, 2) float64 (row, col) patch centres in object pixels
    probe: np.ndarray | None  # (N, N) complex64 or None
    settings: dict[str, Any]


@dataclasses.dataclass
class EngineResult:
    """An engine's reconstruction.

    ``object[r, c]`` is the object at scan coordinate ``(origin[0] + r, origin[1] + c)``.
    ``metadata`` holds at least ``engine``, ``version``, ``algorithm``, ``iterations``, ``seconds``, and
    ``health`` (:class:`~.health.RunHealth` as a dict), from which the divergence fields are filled:
    ``failed`` / ``failure_reason`` (the run diverged: do not score with it or against it),
    ``error_curve`` (per-iteration data error), ``probe_norm = sqrt(Σ|P|²)`` and ``object_norm`` (the
    illumination-weighted mean ``|O|``).  ``positions`` holds the engine's (corrected) scan positions
    ``(M, 2)`` (row, col) when it refined them, else None.
    """

    object: np.ndarray  # (H, W) complex64
    probe: np.ndarray  # (N, N) complex64
    origin: tuple[float, float]  # (row0, col0) in scan-position coordinates
    data_error: np.ndarray  # (iterations,) float64, the engine's own per-iteration data error
    metadata: dict[str, Any]
    failed: bool = False
    failure_reason: str | None = None
    error_curve: list[float] = dataclasses.field(default_factory=list)
    probe_norm: float = float("nan")
    object_norm: float = float("nan")
    positions: np.ndarray | None = None

    def patch_centre_index(self, positions: np.ndarray) -> np.ndarray:
        """Array indices (float) of the given (row, col) scan positions in ``object``."""
        return np.asarray(positions, dtype=np.float64) - np.asarray(self.origin, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------
def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def _json_array(d: dict[str, Any]) -> np.ndarray:
    return np.array(json.dumps(d, default=_json_default, sort_keys=True))


def _json_from(arr: np.ndarray, key: str) -> dict[str, Any]:
    if arr.dtype.kind != "U" or arr.ndim != 0:
        raise ProtocolError(f"'{key}' must be a 0-d unicode array holding JSON, got {arr.dtype} {arr.shape}")
    out = json.loads(str(arr[()]))
    if not isinstance(out, dict):
        raise ProtocolError(f"'{key}' must hold a JSON object")
    return out


def _atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    from ptycho_exp.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        np.savez(fh, **arrays)
    return path


def _require(npz: Any, key: str, path: Any) -> np.ndarray:
    if key not in npz.files:
        raise ProtocolError(f"{path}: missing key '{key}' (has {sorted(npz.files)})")
    return npz[key]


def _check_inputs(diffraction: np.ndarray, positions: np.ndarray, probe: np.ndarray | None) -> None:
    if diffraction.ndim != 3 or diffraction.shape[1] != diffraction.shape[2]:
        raise ProtocolError(f"'diffraction' must be (M, N, N), got shape {diffraction.shape}")
    m, n = diffraction.shape[0], diffraction.shape[1]
    if positions.shape != (m, 2):
        raise ProtocolError(f"positions must be ({m}, 2) (row, col), got shape {positions.shape}")
    if probe is not None and probe.shape != (n, n):
        raise ProtocolError(f"'probeGuess' must be ({n}, {n}), got shape {probe.shape}")
    if not np.all(np.isfinite(diffraction)):
        raise ProtocolError("'diffraction' contains non-finite values")
    if not np.all(np.isfinite(positions)):
        raise ProtocolError("positions contain non-finite values")


# ----------------------------------------------------------------------------------------------------
# Engine input
# ----------------------------------------------------------------------------------------------------
def write_engine_input(
    path: str | os.PathLike,
    diffraction: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray | None,
    settings: dict[str, Any],
) -> Path:
    """Write an engine input NPZ (contract keys + ``settings_json``) atomically.

    ``positions`` is ``(M, 2)`` ``(row, col)``; it is stored as ``ycoords = positions[:, 0]`` and
    ``xcoords = positions[:, 1]`` (float64).  ``probe`` may be None (engine picks its own initial probe).
    """
    diffraction = np.asarray(diffraction, dtype=np.float32)
    positions = np.asarray(positions, dtype=np.float64)
    probe_arr = None if probe is None else np.asarray(probe, dtype=np.complex64)
    _check_inputs(diffraction, positions, probe_arr)
    arrays = {
        "diffraction": diffraction,
        "ycoords": np.ascontiguousarray(positions[:, 0]),
        "xcoords": np.ascontiguousarray(positions[:, 1]),
        "settings_json": _json_array(dict(settings)),
        "protocol_version": np.array(PROTOCOL_VERSION, dtype=np.int64),
    }
    if probe_arr is not None:
        arrays["probeGuess"] = probe_arr
    return _atomic_savez(path, arrays)


def read_engine_input(path: str | os.PathLike) -> EngineInput:
    """Load an engine input NPZ (``allow_pickle=False``) and validate it."""
    with np.load(path, allow_pickle=False) as npz:
        diffraction = _require(npz, "diffraction", path)
        ycoords = _require(npz, "ycoords", path)
        xcoords = _require(npz, "xcoords", path)
        settings = _json_from(_require(npz, "settings_json", path), "settings_json")
        probe = npz["probeGuess"] if "probeGuess" in npz.files else None
    if diffraction.dtype != np.float32:
        raise ProtocolError(f"{path}: 'diffraction' must be float32 amplitude, got {diffraction.dtype}")
    if ycoords.ndim != 1 or xcoords.shape != ycoords.shape:
        raise ProtocolError(f"{path}: 'ycoords'/'xcoords' must be (M,), got {ycoords.shape}/{xcoords.shape}")
    if probe is not None and probe.dtype != np.complex64:
        raise ProtocolError(f"{path}: 'probeGuess' must be complex64, got {probe.dtype}")
    positions = np.stack([ycoords.astype(np.float64), xcoords.astype(np.float64)], axis=1)
    _check_inputs(diffraction, positions, probe)
    return EngineInput(diffraction=diffraction, positions=positions, probe=probe, settings=settings)


# ----------------------------------------------------------------------------------------------------
# Engine output
# ----------------------------------------------------------------------------------------------------
_REQUIRED_METADATA = ("engine", "version", "algorithm", "iterations", "seconds")


def write_engine_output(
    path: str | os.PathLike,
    reconstructed_object: np.ndarray,
    reconstructed_probe: np.ndarray,
    object_origin: tuple[float, float] | np.ndarray,
    data_error: np.ndarray,
    metadata: dict[str, Any],
    positions: np.ndarray | None = None,
) -> Path:
    """Write an engine output NPZ atomically.

    ``object_origin = (row0, col0)``: object row ``r`` is scan coordinate ``row0 + r`` (see module doc).
    ``metadata`` must contain ``engine``, ``version``, ``algorithm``, ``iterations``, ``seconds``; a
    ``health`` entry (divergence checks, :func:`~.health.assess_run`) travels with it.  ``positions``:
    the engine's corrected (M, 2) (row, col) scan positions, if it refined them.
    """
    obj = np.asarray(reconstructed_object)
    if obj.ndim != 2:
        raise ProtocolError(f"reconstructed object must be 2-D, got shape {obj.shape}")
    prb = np.asarray(reconstructed_probe)
    if prb.ndim != 2:
        raise ProtocolError(f"reconstructed probe must be 2-D, got shape {prb.shape}")
    origin = np.asarray(object_origin, dtype=np.float64).reshape(-1)
    if origin.shape != (2,):
        raise ProtocolError(f"object_origin must be (row0, col0), got {object_origin!r}")
    missing = [k for k in _REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ProtocolError(f"engine metadata lacks {missing}")
    arrays = {
        "object": obj.astype(np.complex64, copy=False),
        "probe": prb.astype(np.complex64, copy=False),
        "object_origin": origin,
        "data_error": np.asarray(data_error, dtype=np.float64).reshape(-1),
        "metadata_json": _json_array(dict(metadata)),
        "protocol_version": np.array(PROTOCOL_VERSION, dtype=np.int64),
    }
    if positions is not None:
        pos = np.asarray(positions, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise ProtocolError(f"positions must be (M, 2) (row, col), got shape {pos.shape}")
        arrays["positions"] = pos
    return _atomic_savez(path, arrays)


def health_of(
    obj: np.ndarray,
    probe: np.ndarray,
    origin: tuple[float, float],
    data_error: np.ndarray,
    metadata: dict[str, Any],
    positions: np.ndarray | None,
) -> RunHealth:
    """The result's divergence checks: ``metadata["health"]`` when the worker recorded it, else
    :func:`~.health.assess_run` on what the result holds (no data: the probe-power check is skipped)."""
    recorded = metadata.get("health")
    if isinstance(recorded, dict):
        return RunHealth.from_dict(recorded)
    return assess_run(data_error, probe, obj, origin, positions, None, metadata.get("final_data_error"))


def write_probe_file(path: str | os.PathLike, probe: np.ndarray) -> Path:
    """Write a reconstructed probe as a contract probe file (``probeGuess`` (N, N) complex64), atomically.

    Networks can start from it: ``data.probe=file data.probe_path=<path>``.
    """
    prb = np.asarray(probe)
    if prb.ndim != 2 or prb.shape[0] != prb.shape[1]:
        raise ProtocolError(f"probe must be square (N, N), got shape {prb.shape}")
    if not np.all(np.isfinite(prb)):
        raise ProtocolError("probe contains non-finite values: not written")
    return _atomic_savez(path, {"probeGuess": prb.astype(np.complex64)})


def read_engine_output(path: str | os.PathLike) -> EngineResult:
    """Load an engine output NPZ (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as npz:
        obj = _require(npz, "object", path)
        prb = _require(npz, "probe", path)
        origin = _require(npz, "object_origin", path)
        err = _require(npz, "data_error", path)
        meta = _json_from(_require(npz, "metadata_json", path), "metadata_json")
        positions = npz["positions"].astype(np.float64) if "positions" in npz.files else None
    if origin.shape != (2,):
        raise ProtocolError(f"{path}: 'object_origin' must be (2,), got {origin.shape}")
    o = (float(origin[0]), float(origin[1]))
    err = err.astype(np.float64, copy=False)
    health = health_of(obj, prb, o, err, meta, positions)
    meta.setdefault("health", health.as_dict())
    return EngineResult(
        object=obj,
        probe=prb,
        origin=o,
        data_error=err,
        metadata=meta,
        failed=health.failed,
        failure_reason=health.failure_reason,
        error_curve=list(health.error_curve),
        probe_norm=health.probe_norm,
        object_norm=health.object_norm,
        positions=positions,
    )
