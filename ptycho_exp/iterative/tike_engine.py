"""Tike (GPU) rPIE / lstsq_grad reconstruction, run in Tike's own interpreter by the worker.

Tike 0.26 needs CuPy and pins ``numpy<2``; it cannot share the main environment (see
``scripts/make_tike_env.sh``).  This module imports numpy and the standard library only; ``tike`` is
imported inside :func:`reconstruct_tike`.  Written against the documented API of Tike 0.25/0.26
(``tike.ptycho.reconstruct(data, parameters, num_gpu)`` with ``PtychoParameters``, ``RpieOptions`` /
``LstsqOptions``, ``ObjectOptions``, ``ProbeOptions``, ``ExitWaveOptions``), checked against the tike
0.26.0 wheel's source (psi is ``(slices, H, W)`` there, ``(H, W)`` in 0.25; the probe is refined when
``probe_options`` is given).  Run through the worker on an NVIDIA H100 with tike 0.26.0 (cupy 14,
numpy 2.5) on the contract's test scan, the defaults (rPIE, 1000 iterations, probe refined, Poisson model)
reconstruct it to near-perfect scores.  Tike must see the data as photon counts of a sane size: handed
the contract's normalised intensities (~0.25 per pixel) rPIE with probe refinement degraded over the
iterations (amplitude SSIM 0.44 after 1000) and diverged on small scans, so the engine scales data and
probe together (:func:`tike_count_scale`; the solution is unchanged).  CPU tests drive it through a numpy
stand-in for ``tike.ptycho`` that implements the documented conventions.

Conventions handed to Tike
--------------------------
* Data: Tike wants **intensity with the zero frequency at the corners**; the contract carries centred
  amplitude, so ``data = ifftshift(amplitude**2)`` (:func:`protocol.amplitude_to_tike_intensity`).  Tike's
  forward model is ``|fft2(P·O, norm="ortho")|²`` (``ExitWaveOptions.propagation_normalization='ortho'``),
  which is exactly the contract's ``|FFT2(P·O)|² / N²``.
* Positions: Tike's ``scan`` is the *minimum corner* (top-left) of the probe in ``psi`` pixels, order
  (row, col); it must satisfy ``1 <= floor(scan) <= psi.shape - N - 1``.  Our centre ``p`` has top-left
  ``p - N/2``; we add an integer ``offset = 1 + pad - floor(min(p - N/2))`` and size ``psi`` to fit, so
  ``psi`` index ``r`` is scan coordinate ``r - offset`` and the returned ``origin = -offset``.
* ``batch_size`` (spec: "batch 10") is passed as Tike's ``num_batch`` - the number of mini-batches an
  epoch is split into - as in the PtychoPINN reference scripts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import numpy as np

try:  # package import (ptycho_exp.iterative.tike_engine) or sibling import (worker run as a script)
    from .protocol import amplitude_to_tike_intensity
except ImportError:  # pragma: no cover - exercised only when run as a script
    from protocol import amplitude_to_tike_intensity  # type: ignore[no-redef]

__all__ = ["DEFAULTS", "check_tike_available", "reconstruct_tike", "tike_count_scale", "tike_scan_geometry"]

DEFAULTS: dict[str, Any] = {
    "algorithm": "rpie",  # rpie | lstsq_grad
    "iterations": 1000,
    "batch_size": 10,  # -> Tike num_batch (number of mini-batches per epoch)
    "noise_model": "poisson",  # poisson | gaussian
    "use_adaptive_moment": True,
    "probe_refine": True,
    "positions_fixed": True,
    "alpha": 0.05,  # rPIE regularisation (1 -> ePIE)
    "probe_support": 0.05,
    "force_centered_intensity": True,
    "clip_magnitude": False,
    "object_init": 0.5,  # Tike's own default fill of a new object
    "object_padding": 2,  # extra pixels around the scanned field
    "counts_per_pixel": 100.0,  # mean counts per detector pixel handed to Tike (see tike_count_scale)
    "num_gpu": 1,
    "seed": 0,
}


def tike_scan_geometry(
    positions: np.ndarray, n: int, pad: int = 2
) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """Map (row, col) patch centres to Tike's scan convention.

    Returns ``(scan float32 (M, 2) top-left corners in psi pixels, psi_shape, offset)`` where
    ``psi`` index = scan coordinate + ``offset`` (so ``origin = -offset``).
    """
    pos = np.asarray(positions, dtype=np.float64)
    top_left = pos - n / 2.0
    lo = np.floor(top_left.min(axis=0))
    hi = np.floor(top_left.max(axis=0))
    offset = 1.0 + pad - lo
    scan = (top_left + offset).astype(np.float32)
    shape = tuple(int(v) for v in (hi - lo + n + 2 + 2 * pad))
    return scan, (shape[0], shape[1]), offset


def check_tike_available(python: str | None = None, timeout_s: float = 120.0) -> str | None:
    """Return None if ``python`` can import tike and cupy and sees a GPU, else a clear message."""
    exe = python or sys.executable
    code = (
        "import sys\n"
        "try:\n"
        "    import numpy, cupy, tike, tike.ptycho\n"
        "except Exception as e:\n"
        "    print('import failed: %s: %s' % (type(e).__name__, e)); sys.exit(3)\n"
        "try:\n"
        "    n = cupy.cuda.runtime.getDeviceCount()\n"
        "except Exception as e:\n"
        "    print('CUDA unavailable: %s: %s' % (type(e).__name__, e)); sys.exit(4)\n"
        "if n < 1:\n"
        "    print('no CUDA GPU visible'); sys.exit(4)\n"
        "print('ok tike %s cupy %s numpy %s gpus %d' % (getattr(tike, '__version__', '?'), cupy.__version__,"
        " numpy.__version__, n))\n"
    )
    try:
        proc = subprocess.run(
            [exe, "-c", code], check=False, capture_output=True, text=True, timeout=timeout_s
        )
    except FileNotFoundError:
        return f"Tike interpreter not found: {exe} (create it with scripts/make_tike_env.sh)"
    except subprocess.TimeoutExpired:
        return f"Tike availability check timed out after {timeout_s:.0f} s ({exe})"
    out = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode == 0 and out.startswith("ok"):
        return None
    detail = out or (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return f"Tike is not usable with {exe}: {detail} (needs tike + cupy + an NVIDIA GPU; see scripts/make_tike_env.sh)"


# config names (model.iterative.*) -> names used here
_ALIASES = {"adaptive_moments": "use_adaptive_moment"}


def _settings(settings: dict[str, Any]) -> dict[str, Any]:
    s = dict(DEFAULTS)
    s.update({_ALIASES.get(k, k): v for k, v in settings.items() if v is not None})
    algo = str(s["algorithm"]).lower()
    if algo not in ("rpie", "lstsq_grad", "lstsq"):
        raise ValueError(f"tike algorithm must be 'rpie' or 'lstsq_grad', got {s['algorithm']!r}")
    s["algorithm"] = "lstsq_grad" if algo.startswith("lstsq") else "rpie"
    if s["noise_model"] not in ("poisson", "gaussian"):
        raise ValueError(f"noise_model must be 'poisson' or 'gaussian', got {s['noise_model']!r}")
    if s.pop("position_correction", False):  # model.iterative.position_correction
        s["positions_fixed"] = False
    s["iterations"] = int(s["iterations"])
    s["batch_size"] = int(s["batch_size"])
    if s["iterations"] < 1 or s["batch_size"] < 1:
        raise ValueError("iterations and batch_size must be >= 1")
    return s


class _TikeNamespace:
    """Look a name up in ``tike.ptycho`` and then ``tike.ptycho.solvers`` (exports moved between releases)."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        if hasattr(self._module, name):
            return getattr(self._module, name)
        solvers = getattr(self._module, "solvers", None)
        if solvers is not None and hasattr(solvers, name):
            return getattr(solvers, name)
        raise AttributeError(f"tike.ptycho has no {name!r}; this engine needs tike 0.25 or 0.26")


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def tike_count_scale(intensity: np.ndarray, counts_per_pixel: float = 100.0) -> float:
    """Factor that brings the mean detector-pixel intensity to ``counts_per_pixel``.

    Parameters
    ----------
    intensity : ndarray, shape (M, N, N)
        Diffraction intensities (any normalisation).
    counts_per_pixel : float
        Target mean value per pixel; the mean total per pattern becomes ``counts_per_pixel * N * N``.

    Returns
    -------
    float
        ``c`` such that ``mean(c * intensity) == counts_per_pixel`` (1.0 for all-zero data).
    """
    mean = float(np.mean(np.asarray(intensity, dtype=np.float64)))
    return counts_per_pixel / mean if mean > 0 else 1.0


def reconstruct_tike(
    diffraction: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray | None,
    settings: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], np.ndarray, dict[str, Any]]:
    """Run Tike on contract data; same signature and return value as ``reconstruct_ptylab``.

    ``data_error`` is Tike's per-epoch cost (mean over mini-batches) of its noise model.
    """
    s = _settings(settings)
    amp = np.asarray(diffraction)
    if amp.ndim != 3 or amp.shape[1] != amp.shape[2]:
        raise ValueError(f"diffraction must be (M, N, N), got {amp.shape}")
    m, n = amp.shape[0], amp.shape[-1]
    if probe is None:
        raise ValueError("the Tike engine needs a probe guess ('probeGuess')")
    if np.shape(probe) != (n, n):
        raise ValueError(f"probe must be ({n}, {n}), got {np.shape(probe)}")

    try:
        import cupy
        import tike
        import tike.ptycho
    except ImportError as exc:
        raise RuntimeError(
            f"the tike engine needs tike and cupy in {sys.executable} ({type(exc).__name__}: {exc}); build that "
            "environment with `make tike-env` (scripts/make_tike_env.sh) and point model.iterative.python at it"
        ) from None
    try:
        n_gpu = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 - any CUDA failure means: no usable GPU
        raise RuntimeError(f"the tike engine needs an NVIDIA GPU, but CuPy cannot use CUDA here "
                           f"({type(exc).__name__}: {exc}); run model=ptylab on a CPU machine") from None
    if n_gpu < 1:
        raise RuntimeError("the tike engine needs an NVIDIA GPU, but CuPy sees none; run model=ptylab instead")

    version = str(getattr(tike, "__version__", "unknown"))
    if version != "unknown" and _version_tuple(version) < (0, 25, 0):
        raise RuntimeError(f"tike {version} is too old: the engine needs tike >= 0.25 (PtychoParameters API)")
    np.random.seed(int(s["seed"]) % (2**32))  # Tike's batch clustering uses numpy's global RNG

    data = amplitude_to_tike_intensity(amp)  # float32, zero frequency at the corners
    # Tike's noise models and probe update behave as for photon counts: at a few counts per pattern rPIE
    # with probe refinement diverges (seen on an H100). Scaling data and probe together leaves the
    # solution unchanged (the probe absorbs the factor), so hand Tike counts of a sane size.
    count_scale = tike_count_scale(data, float(s["counts_per_pixel"]))
    data = (data * count_scale).astype(np.float32)
    scan, psi_shape, offset = tike_scan_geometry(positions, n, int(s["object_padding"]))
    psi = np.full(psi_shape, complex(s["object_init"]), dtype=np.complex64)
    probe5 = (np.asarray(probe, dtype=np.complex64) * np.float32(np.sqrt(count_scale))).reshape(1, 1, 1, n, n)

    ptycho = _TikeNamespace(tike.ptycho)
    if s["algorithm"] == "rpie":
        algorithm_options = ptycho.RpieOptions(
            num_iter=s["iterations"], num_batch=s["batch_size"], alpha=float(s["alpha"])
        )
    else:
        algorithm_options = ptycho.LstsqOptions(num_iter=s["iterations"], num_batch=s["batch_size"])
    object_options = ptycho.ObjectOptions(
        use_adaptive_moment=bool(s["use_adaptive_moment"]), clip_magnitude=bool(s["clip_magnitude"])
    )
    probe_options = (
        ptycho.ProbeOptions(
            use_adaptive_moment=bool(s["use_adaptive_moment"]),
            probe_support=float(s["probe_support"]),
            force_centered_intensity=bool(s["force_centered_intensity"]),
        )
        if s["probe_refine"]
        else None
    )
    position_options = (
        None
        if s["positions_fixed"]
        else ptycho.PositionOptions(
            initial_scan=scan.copy(), use_adaptive_moment=bool(s["use_adaptive_moment"])
        )
    )
    exitwave_options = ptycho.ExitWaveOptions(
        measured_pixels=np.ones((n, n), dtype=bool), noise_model=s["noise_model"]
    )

    def make_parameters(psi_arr: np.ndarray) -> Any:
        return ptycho.PtychoParameters(
            psi=psi_arr,
            probe=probe5,
            scan=scan,
            algorithm_options=algorithm_options,
            object_options=object_options,
            probe_options=probe_options,
            position_options=position_options,
            exitwave_options=exitwave_options,
        )

    try:  # tike 0.26: psi is (slices, H, W)
        parameters = make_parameters(psi[np.newaxis])
    except ValueError as exc:  # tike 0.25: psi is (H, W)
        if "psi" not in str(exc):
            raise
        parameters = make_parameters(psi)

    t0 = time.perf_counter()
    result = ptycho.reconstruct(data=data, parameters=parameters, num_gpu=int(s["num_gpu"]))
    seconds = time.perf_counter() - t0

    out_psi = np.asarray(result.psi)
    while out_psi.ndim > 2:
        out_psi = out_psi[0]
    out_probe = np.asarray(result.probe).reshape(-1, n, n)[0] / np.sqrt(count_scale)
    costs = getattr(result.algorithm_options, "costs", []) or []
    data_error = np.array([float(np.mean(np.asarray(c, dtype=np.float64))) for c in costs], dtype=np.float64)
    meta = {
        "engine": "tike",
        "version": version,
        "algorithm": s["algorithm"],
        "iterations": int(s["iterations"]),
        "seconds": float(seconds),
        "iterations_per_second": float(s["iterations"] / max(seconds, 1e-12)),
        "n_positions": int(m),
        "num_batch": int(s["batch_size"]),
        "noise_model": s["noise_model"],
        "use_adaptive_moment": bool(s["use_adaptive_moment"]),
        "probe_refine": bool(s["probe_refine"]),
        "positions_fixed": bool(s["positions_fixed"]),
        "object_shape": list(out_psi.shape),
        "data_error_metric": f"tike cost ({s['noise_model']}), mean over mini-batches per epoch",
        "data_convention": "intensity = ifftshift(amplitude**2), zero frequency at the corners",
        "count_scale": float(count_scale),
    }
    origin = (float(-offset[0]), float(-offset[1]))
    # refined positions back to (row, col) patch centres in scan coordinates (scan = top-left in psi)
    used = np.asarray(getattr(result, "scan", scan), dtype=np.float64) + n / 2.0 - np.asarray(offset)
    return out_psi.astype(np.complex64), out_probe.astype(np.complex64), origin, data_error, meta, used
