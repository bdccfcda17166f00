"""PtyLab (CPU) ePIE / rPIE / mPIE on in-memory arrays.

Imports numpy and the standard library at module level only; PtyLab is imported inside
:func:`reconstruct_ptylab`.

Algorithms
----------
* ``ePIE`` (default): PtyLab's ePIE engine.  Object step ``β P*/max|P|²``, probe step ``β O*/max|O|²``.
* ``rPIE``: PtyLab's mPIE engine with the momentum switched off (``feedbackM = 0``): regularised PIE,
  steps ``β P*/(α max|P|² + (1-α)|P|²)`` with ``α = alphaObject`` / ``alphaProbe`` (default 0.1).
* ``mPIE``: rPIE plus momentum (``feedbackM``, ``frictionM``).  Fastest on clean simulated data; its
  momentum can run away on measured data, so it is not the default reference.

Position correction (``position_correction: true``) is PtyLab's pcPIE (a cross-correlation search of
±1 px around each position after every object update; momentum on the per-position step), available in
PtyLab's mPIE-class engines only.  With ``ePIE`` it therefore runs the mPIE engine with
``alphaObject = alphaProbe = 1`` and no momentum, which is exactly ePIE's update.  The corrected positions
are returned (``(M, 2)`` (row, col) scan coordinates, sub-pixel valued).

Sub-pixel positions: PtyLab's CPM engines place each patch at a whole pixel (``round(encoder / dxo)``),
so positions given with fractions, and positions found by the correction, are used rounded to the nearest
pixel.  The corrected encoder positions themselves are continuous and are returned unrounded.

Coordinate mapping (verified by ``tests/iterative/test_iterative.py``)
-----------------------------------------------------------
PtyLab works in metres: ``encoder = (positions - c) * dxo`` with ``c = round(mean(positions))`` (integer,
so the encoder is centred on 0 as PtyLab requires) and converts back to the top-left pixel of each patch
with ``round(encoder / dxo) + No//2 - Np//2`` in an ``No × No`` object.  Our patch top-left is
``p - N/2``, so object index ``r`` is scan coordinate ``r + c - No//2 + (Np//2 - N/2)``: that is the
returned ``origin`` (exact for integer positions; sub-pixel positions are rounded by PtyLab).  Position
correction keeps the mean of the encoder positions, so the origin stays valid.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from typing import Any

import numpy as np

__all__ = ["DEFAULTS", "engine_plan", "forward_intensity", "normalised_data_error", "probe_power_scale",
           "reconstruct_ptylab"]

DEFAULTS: dict[str, Any] = {
    "algorithm": "ePIE",  # ePIE | rPIE | mPIE
    "iterations": 100,
    "betaObject": 0.25,
    "betaProbe": 0.25,
    "probe_refine": True,
    "seed": 0,
    "position_order": "random",  # random | sequential
    # None: rescale the initial probe to the data power only when no probe guess is given
    "probe_power_correction": None,
    "fftshift_switch": True,
    # PtyLab pcPIE position correction (runs on the mPIE engine; see the module doc)
    "position_correction": False,
    # a probe guess whose power is off the mean pattern energy by more than this factor (either way) is
    # rescaled to it once before the first iteration (0: never); None guesses keep PtyLab's own scaling
    "probe_power_match": 4.0,
    "verbose": False,
}

# PtyLab's mPIE defaults; rPIE is mPIE with feedbackM = 0
_MPIE_DEFAULTS = {"alphaObject": 0.1, "alphaProbe": 0.1, "feedbackM": 0.3, "frictionM": 0.7}

# Geometry: any consistent values; only dxo = wavelength*zo/(Nd*dxd) matters (Fraunhofer).
_WAVELENGTH = 632.8e-9
_ZO = 5e-2
_DXO = 1e-5


def forward_intensity(obj: np.ndarray, probe: np.ndarray, top_left: np.ndarray) -> np.ndarray:
    """|FFT2_unitary(P · O[patch])|², zero frequency centred, for integer top-left corners (M, 2)."""
    n = probe.shape[-1]
    tl = np.asarray(top_left, dtype=np.int64)
    patches = np.stack([obj[r : r + n, c : c + n] for r, c in tl])
    far = np.fft.fft2(patches * probe[None], norm="ortho")
    return np.fft.fftshift(np.abs(far) ** 2, axes=(-2, -1))


def normalised_data_error(measured_intensity: np.ndarray, estimated_intensity: np.ndarray) -> float:
    """PtyLab's data error: Σ_j Σ|I_meas - I_est| / Σ I_meas,j (summed over positions j)."""
    num = np.sum(np.abs(measured_intensity - estimated_intensity), axis=(-2, -1))
    den = np.sum(measured_intensity, axis=(-2, -1)) + 1e-20
    return float(np.sum(num / den))


# config names (model.iterative.*) -> PtyLab names
_ALIASES = {"beta_object": "betaObject", "beta_probe": "betaProbe", "alpha_object": "alphaObject",
            "alpha_probe": "alphaProbe"}
_ALGORITHMS = {"epie": "ePIE", "rpie": "rPIE", "mpie": "mPIE"}


def _settings(settings: dict[str, Any]) -> dict[str, Any]:
    s = dict(DEFAULTS)
    given = {_ALIASES.get(k, k): v for k, v in settings.items()}
    s.update({k: v for k, v in given.items() if v is not None or k == "probe_power_correction"})
    algo = str(s["algorithm"])
    if algo.lower() not in _ALGORITHMS:
        raise ValueError(f"ptylab algorithm must be 'ePIE', 'rPIE' or 'mPIE', got {algo!r}")
    s["algorithm"] = _ALGORITHMS[algo.lower()]
    s["iterations"] = int(s["iterations"])
    if s["iterations"] < 1:
        raise ValueError(f"iterations must be >= 1, got {s['iterations']}")
    if s["position_order"] not in ("random", "sequential"):
        raise ValueError(f"position_order must be 'random' or 'sequential', got {s['position_order']!r}")
    s["position_correction"] = bool(s["position_correction"])
    if not float(s["probe_power_match"]) >= 0:
        raise ValueError(f"probe_power_match must be >= 0 (0: off), got {s['probe_power_match']!r}")
    return s


def engine_plan(s: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """PtyLab engine class name and the mPIE-class constants for the resolved settings ``s``.

    ``ePIE`` runs PtyLab's ePIE engine unless position correction is on (then the mPIE engine with
    ``alpha = 1`` and no momentum: the same update); ``rPIE`` is mPIE without momentum.
    """
    algo = s["algorithm"]
    if algo == "ePIE" and not s["position_correction"]:
        return "ePIE", {}
    consts = {k: float(s[k]) if s.get(k) is not None else v for k, v in _MPIE_DEFAULTS.items()}
    if algo == "ePIE":
        consts.update(alphaObject=1.0, alphaProbe=1.0, feedbackM=0.0, frictionM=0.0)
    elif algo == "rPIE":
        consts.update(feedbackM=0.0, frictionM=0.0)
    return "mPIE", consts


def probe_power_scale(probe: np.ndarray, mean_pattern_energy: float, match: float) -> float:
    """Factor that brings ``Σ|P|²`` to the mean pattern energy when they differ by more than ``match``.

    Parseval: for ``|O| ≈ 1`` the probe power equals the mean pattern energy.  Returns 1.0 when the
    ratio is within ``[1/match, match]``, when ``match`` is 0 (off) or the probe is zero.
    """
    power = float(np.sum(np.abs(np.asarray(probe)).astype(np.float64) ** 2))
    if not match or not power > 0 or not mean_pattern_energy > 0:
        return 1.0
    ratio = power / float(mean_pattern_energy)
    if 1.0 / match <= ratio <= match:
        return 1.0
    return float(np.sqrt(1.0 / ratio))


def reconstruct_ptylab(
    diffraction: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray | None,
    settings: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], np.ndarray, dict[str, Any]]:
    """Run PtyLab ePIE/mPIE on contract data.

    Parameters
    ----------
    diffraction : (M, N, N) amplitude, zero frequency centred (docs/CONTRACT.md §1).
    positions : (M, 2) float (row, col) patch centres in object pixels.
    probe : (N, N) complex initial probe, or None for PtyLab's circular pupil.
    settings : see :data:`DEFAULTS` (``algorithm``, ``iterations``, ``betaObject``, ``betaProbe``,
        ``probe_refine``, ``seed``, ``position_order``, ``probe_power_correction``,
        ``position_correction``, ``probe_power_match``; rPIE/mPIE also take ``alphaObject``,
        ``alphaProbe``, mPIE ``feedbackM``, ``frictionM``).

    Returns
    -------
    object (H, W) complex64, probe (N, N) complex64, origin (row0, col0), data_error (iterations,)
    float64 (PtyLab's per-iteration error), metadata dict, and the positions the engine used
    ((M, 2) (row, col): the corrected ones with ``position_correction``, else the input).
    """
    s = _settings(settings)
    amp = np.asarray(diffraction, dtype=np.float64)
    if amp.ndim != 3 or amp.shape[1] != amp.shape[2]:
        raise ValueError(f"diffraction must be (M, N, N), got {amp.shape}")
    m, n = amp.shape[0], amp.shape[-1]
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (m, 2):
        raise ValueError(f"positions must be ({m}, 2), got {pos.shape}")
    if probe is not None and np.shape(probe) != (n, n):
        raise ValueError(f"probe must be ({n}, {n}), got {np.shape(probe)}")

    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("TQDM_DISABLE", "1")
    sink: Any = sys.stderr if s["verbose"] else io.StringIO()
    rng_state = np.random.get_state()
    np.random.seed(int(s["seed"]) % (2**32))
    try:
        with contextlib.redirect_stdout(sink):
            import PtyLab
            from PtyLab import Engines
            from PtyLab.ExperimentalData.ExperimentalData import ExperimentalData
            from PtyLab.Monitor.Monitor import DummyMonitor
            from PtyLab.Params.Params import Params
            from PtyLab.Reconstruction.Reconstruction import Reconstruction

            intensity = (amp * amp).astype(np.float32)
            centre = np.round(pos.mean(axis=0))
            exp = ExperimentalData("test:nodata", "CPM")
            exp.ptychogram = intensity
            exp.wavelength = _WAVELENGTH
            exp.zo = _ZO
            exp.dxd = _WAVELENGTH * _ZO / (n * _DXO)
            exp.encoder = (pos - centre) * _DXO  # PtyLab rounds to whole pixels when it takes patches
            exp.entrancePupilDiameter = None
            exp._setData()

            params = Params()
            params.gpuSwitch = False
            params.propagatorType = "Fraunhofer"
            params.positionOrder = s["position_order"]
            params.fftshiftSwitch = bool(s["fftshift_switch"])
            ppc = s["probe_power_correction"]
            params.probePowerCorrectionSwitch = bool(probe is None if ppc is None else ppc)
            params.positionCorrectionSwitch = s["position_correction"]

            rec = Reconstruction(exp, params)
            rec.initializeObjectProbe()
            energy = float(np.mean(np.sum(intensity.astype(np.float64), axis=(-2, -1))))
            probe_scale = 1.0
            if probe is not None:
                probe_scale = probe_power_scale(probe, energy, float(s["probe_power_match"]))
                p = (np.asarray(probe, dtype=np.complex64) * np.float32(probe_scale)).reshape(
                    rec.probe.shape[:-2] + (n, n))
                rec.initialGuessProbe = p.copy()
                rec.probe = p.copy()

            monitor = DummyMonitor()
            engine_name, consts = engine_plan(s)
            engine = getattr(Engines, engine_name)(rec, exp, params, monitor)
            engine.numIterations = s["iterations"]
            engine.betaObject = float(s["betaObject"])
            engine.betaProbe = float(s["betaProbe"]) if s["probe_refine"] else 0.0
            for key, value in consts.items():
                setattr(engine, key, value)

            t0 = time.perf_counter()
            engine.reconstruct()
            seconds = time.perf_counter() - t0
    finally:
        np.random.set_state(rng_state)

    obj = np.asarray(rec.object).reshape(-1, rec.No, rec.No)[0].astype(np.complex64)
    prb = np.asarray(rec.probe).reshape(-1, n, n)[0].astype(np.complex64)
    top_left = np.asarray(rec.positions, dtype=np.int64)  # the (corrected) positions used, whole pixels
    origin_arr = centre - rec.No // 2 + (rec.Np // 2 - n / 2.0)
    # Sanity: our top-left (p - N/2) minus PtyLab's top-left of the given positions must equal the
    # origin up to rounding.
    given_tl = np.round(np.asarray(exp.encoder) / rec.dxo) + rec.No // 2 - rec.Np // 2
    resid = np.abs(pos - n / 2.0 - given_tl - origin_arr)
    if resid.max() > 0.5 + 1e-6:
        raise RuntimeError(f"PtyLab position mapping changed (residual {resid.max():.3f} px); fix origin")
    used = np.asarray(rec.encoder_corrected, dtype=np.float64) / rec.dxo + centre

    data_error = np.asarray(rec.error, dtype=np.float64).reshape(-1)
    final_error = normalised_data_error(intensity.astype(np.float64), forward_intensity(obj, prb, top_left))
    version = getattr(PtyLab, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as _v

            version = _v("ptylab")
        except Exception:  # noqa: BLE001  # pragma: no cover - metadata missing
            version = "unknown"
    meta = {
        "engine": "ptylab",
        "version": str(version),
        "algorithm": s["algorithm"],
        "iterations": int(s["iterations"]),
        "seconds": float(seconds),
        "iterations_per_second": float(s["iterations"] / max(seconds, 1e-12)),
        "n_positions": int(m),
        "probe_refine": bool(s["probe_refine"]),
        "betaObject": float(s["betaObject"]),
        "betaProbe": float(s["betaProbe"]),
        "seed": int(s["seed"]),
        "position_order": s["position_order"],
        "probe_power_correction": bool(params.probePowerCorrectionSwitch),
        "position_correction": bool(s["position_correction"]),
        "ptylab_engine": engine_name,
        **{k: float(v) for k, v in consts.items()},
        "initial_probe": "guess" if probe is not None else "circ",
        # factor applied once to the probe guess to match the data's power (1.0: used as given)
        "initial_probe_scale": float(probe_scale),
        "mean_pattern_energy": energy,
        "object_shape": list(obj.shape),
        # data error of the returned object/probe, same metric as data_error (PtyLab's error is
        # accumulated during the sweep; this one is evaluated after it)
        "final_data_error": final_error,
        "data_error_metric": "sum_j sum|I_meas-I_est| / sum I_meas,j (PtyLab)",
    }
    if s["position_correction"]:
        shift = used - pos
        meta["position_shift_rms_px"] = float(np.sqrt(np.mean(np.sum(shift**2, axis=1))))
        meta["position_shift_max_px"] = float(np.max(np.hypot(shift[:, 0], shift[:, 1])))
    return obj, prb, (float(origin_arr[0]), float(origin_arr[1])), data_error, meta, used
