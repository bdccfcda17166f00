"""Is an iterative reconstruction usable?  Divergence checks on an engine's result.

An engine can run away on measured data: its data error climbs by orders of magnitude, values become
non-finite, or the probe and object drift apart in scale (probe × c, object / c gives the same
patterns, and a run can follow that direction until the object is ~0 and the probe ~∞).  The checks
here are facts of the data model, not tuned scores:

* **Data error**: the error of the last iteration (and of the returned object and probe) must not exceed
  ``rise_factor`` times the smallest error the run reached.
* **Finite values** in the error curve, the probe and the object.
* **Probe power vs data**: with a unitary FFT, ``Σ|FFT(P·O)|² = Σ|P·O|²`` (Parseval), so for a
  transmission object (``|O| ≈ 1``) the probe power ``Σ|P|²`` is about the mean pattern energy
  ``mean_j Σ I_j``.  A ratio outside ``[1/norm_factor, norm_factor]`` means the run lost the data's scale.
* **Object amplitude**: the illumination-weighted mean ``|O|`` of a transmission object is of order 1;
  outside ``[1/norm_factor, norm_factor]`` the run has drifted along the probe/object scale ambiguity.

Imports numpy and the standard library only (it runs inside the engine worker, also in a foreign
interpreter).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["NORM_FACTOR", "RISE_FACTOR", "DivergedRun", "RunHealth", "assess_run",
           "illuminated_mean_amplitude", "raise_if_failed"]

RISE_FACTOR = 100.0  # data error above this multiple of its minimum: diverged
NORM_FACTOR = 1e3  # probe power / pattern energy and mean |O| outside [1/NORM_FACTOR, NORM_FACTOR]: lost scale


class DivergedRun(RuntimeError):
    """An iterative reconstruction failed its divergence checks; the message holds the reason."""


def raise_if_failed(result: Any, what: str) -> None:
    """Raise :class:`DivergedRun` naming ``what`` and the reason when ``result.failed`` is true."""
    if getattr(result, "failed", False):
        meta = getattr(result, "metadata", {}) or {}
        run = f"{meta.get('engine', '?')} {meta.get('algorithm', '?')}, {meta.get('iterations', '?')} iterations"
        raise DivergedRun(f"{what} ({run}) diverged: {getattr(result, 'failure_reason', None) or 'no reason'}")


@dataclasses.dataclass
class RunHealth:
    """What :func:`assess_run` found.

    ``probe_norm = sqrt(Σ|P|²)``; ``object_norm`` the illumination-weighted mean ``|O|``;
    ``data_norm = sqrt(mean_j Σ I_j)`` (NaN when the data were not given); ``error_curve`` the
    per-iteration data error.  ``failed`` with ``failure_reason`` (all reasons, ``"; "``-joined).
    """

    failed: bool
    failure_reason: str | None
    error_curve: list[float]
    probe_norm: float
    object_norm: float
    data_norm: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (non-finite floats as None)."""

        def f(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "failed": bool(self.failed),
            "failure_reason": self.failure_reason,
            "error_curve": [f(v) for v in self.error_curve],
            "probe_norm": f(self.probe_norm),
            "object_norm": f(self.object_norm),
            "data_norm": f(self.data_norm),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunHealth:
        """Inverse of :meth:`as_dict` (None -> NaN)."""

        def g(x: Any) -> float:
            return float("nan") if x is None else float(x)

        return cls(
            failed=bool(d.get("failed", False)),
            failure_reason=d.get("failure_reason"),
            error_curve=[g(v) for v in d.get("error_curve", [])],
            probe_norm=g(d.get("probe_norm")),
            object_norm=g(d.get("object_norm")),
            data_norm=g(d.get("data_norm")),
        )


def illuminated_mean_amplitude(
    obj: np.ndarray, probe: np.ndarray, origin: tuple[float, float], positions: np.ndarray | None
) -> float:
    """Mean ``|O|`` weighted by the scan's summed probe intensity (the part of the object the data see).

    Parameters
    ----------
    obj : (H, W) complex object; object row ``r`` is scan coordinate ``origin[0] + r``.
    probe : (N, N) complex probe.
    origin : (row0, col0) of the object in scan coordinates.
    positions : (M, 2) (row, col) patch centres, or None: the unweighted mean over the object's central
        half (for results that do not carry their positions).

    Returns
    -------
    float; NaN when the object or probe is non-finite or nothing is illuminated.
    """
    o = np.abs(np.asarray(obj)).astype(np.float64)
    if not np.all(np.isfinite(o)):
        return float("nan")
    if positions is None or len(positions) == 0:
        h, w = o.shape
        return float(o[h // 4 : h - h // 4 or h, w // 4 : w - w // 4 or w].mean())
    p2 = np.abs(np.asarray(probe)).astype(np.float64) ** 2
    if not np.all(np.isfinite(p2)):
        return float("nan")
    n = p2.shape[-1]
    tl = np.round(np.asarray(positions, np.float64) - n / 2.0 - np.asarray(origin, np.float64)).astype(np.int64)
    weight = np.zeros_like(o)
    for r, c in tl:
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + n, o.shape[0]), min(c + n, o.shape[1])
        if r1 > r0 and c1 > c0:
            weight[r0:r1, c0:c1] += p2[r0 - r : r1 - r, c0 - c : c1 - c]
    total = weight.sum()
    return float((weight * o).sum() / total) if total > 0 else float("nan")


def assess_run(
    data_error: np.ndarray,
    probe: np.ndarray,
    obj: np.ndarray,
    origin: tuple[float, float] = (0.0, 0.0),
    positions: np.ndarray | None = None,
    mean_pattern_energy: float | None = None,
    final_data_error: float | None = None,
    rise_factor: float = RISE_FACTOR,
    norm_factor: float = NORM_FACTOR,
) -> RunHealth:
    """Check an engine's result for divergence (see the module docstring for the criteria).

    Parameters
    ----------
    data_error : (iterations,) the engine's per-iteration data error.
    probe, obj, origin, positions : the result and the scan (see :func:`illuminated_mean_amplitude`).
    mean_pattern_energy : ``mean_j Σ_k I_j(k)`` of the measured intensities, or None (probe check skipped).
    final_data_error : data error of the returned object and probe (same metric), or None.
    rise_factor, norm_factor : thresholds (defaults :data:`RISE_FACTOR`, :data:`NORM_FACTOR`).

    Returns
    -------
    RunHealth
    """
    err = np.asarray(data_error, dtype=np.float64).reshape(-1)
    prb = np.asarray(probe)
    probe_power = float(np.sum(np.abs(prb).astype(np.float64) ** 2)) if np.all(np.isfinite(prb)) else math.nan
    probe_norm = math.sqrt(probe_power) if math.isfinite(probe_power) else math.nan
    object_norm = illuminated_mean_amplitude(obj, prb, origin, positions)
    energy = math.nan if mean_pattern_energy is None else float(mean_pattern_energy)
    data_norm = math.sqrt(energy) if math.isfinite(energy) and energy >= 0 else math.nan
    reasons: list[str] = []

    if err.size and not np.all(np.isfinite(err)):
        first = int(np.argmin(np.isfinite(err)))
        reasons.append(f"non-finite data error from iteration {first + 1}")
    if not np.all(np.isfinite(prb)):
        reasons.append("non-finite values in the probe")
    if not np.all(np.isfinite(np.asarray(obj))):
        reasons.append("non-finite values in the object")

    finite = err[np.isfinite(err)]
    if finite.size:
        i_min = int(np.nanargmin(np.where(np.isfinite(err), err, np.nan)))
        e_min = float(err[i_min])
        last = float(err[np.isfinite(err)][-1])
        if e_min > 0 and last > rise_factor * e_min:
            reasons.append(
                f"data error rose from its minimum {e_min:.3g} (iteration {i_min + 1}) to {last:.3g} "
                f"(x{last / e_min:.3g} > {rise_factor:g})"
            )
        elif final_data_error is not None and e_min > 0:
            fe = float(final_data_error)
            if not math.isfinite(fe) or fe > rise_factor * e_min:
                reasons.append(
                    f"data error of the returned object and probe {fe:.3g} is above {rise_factor:g} x the "
                    f"run's minimum {e_min:.3g}"
                )

    if math.isfinite(probe_power) and math.isfinite(energy) and energy > 0:
        ratio = probe_power / energy
        if not (1.0 / norm_factor <= ratio <= norm_factor):
            reasons.append(
                f"probe power {probe_power:.3g} is {ratio:.3g} x the mean pattern energy {energy:.3g} "
                f"(expected about 1 for a transmission object; limits {1 / norm_factor:g}..{norm_factor:g})"
            )
    if math.isfinite(object_norm) and not (1.0 / norm_factor <= object_norm <= norm_factor):
        reasons.append(
            f"object mean amplitude {object_norm:.3g} is far from ~1 (limits {1 / norm_factor:g}.."
            f"{norm_factor:g}): the probe/object scale drifted"
        )

    return RunHealth(
        failed=bool(reasons),
        failure_reason="; ".join(reasons) if reasons else None,
        error_curve=[float(v) for v in err],
        probe_norm=probe_norm,
        object_norm=object_norm,
        data_norm=data_norm,
    )
