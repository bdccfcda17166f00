"""Far-field forward model, photon scaling and Poisson noise (docs/CONTRACT.md §1).

Conventions
-----------
- The exit wave is ``Psi = P * O`` (probe times object patch).
- The diffraction *amplitude* is ``X = sqrt(fftshift(|FFT2(Psi)|**2) / N**2)`` over the last two
  axes: the transform is unitary (``sum |X|**2 == sum |Psi|**2``) and the zero frequency sits at
  pixel ``(N/2, N/2)``. Data carry amplitude, never intensity; intensity is ``X**2``.
- Every sum of squares is accumulated in float64 (uint16 data would overflow otherwise).
"""
from __future__ import annotations

import numpy as np
import scipy.fft

_CHUNK = 1024  # patterns per chunk for float64 reductions and Poisson draws


def exit_wave(probe: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Exit wave ``Psi = probe * patches``.

    Parameters
    ----------
    probe : (N, N) complex array
    patches : (..., N, N) complex array of object patches

    Returns
    -------
    (..., N, N) complex64
    """
    return (np.asarray(probe) * np.asarray(patches)).astype(np.complex64, copy=False)


def diffract(exit_wave: np.ndarray) -> np.ndarray:
    """Far-field diffraction amplitude of ``exit_wave`` over its last two axes.

    ``X = sqrt(fftshift(|FFT2(Psi)|**2) / (H*W))``: unitary, zero frequency at ``(H/2, W/2)``.

    Parameters
    ----------
    exit_wave : (..., H, W) complex array

    Returns
    -------
    (..., H, W) float32 amplitude
    """
    psi = np.asarray(exit_wave)
    if psi.dtype != np.complex128:
        psi = psi.astype(np.complex64, copy=False)
    spectrum = scipy.fft.fft2(psi, axes=(-2, -1), norm="ortho")
    amplitude = np.abs(spectrum).astype(np.float32, copy=False)
    return np.fft.fftshift(amplitude, axes=(-2, -1))


def pattern_energy(amplitudes: np.ndarray) -> np.ndarray:
    """Per-pattern total ``sum X**2`` over the last two axes, in float64.

    Parameters
    ----------
    amplitudes : (M, H, W) or (H, W) array (any real dtype, uint16 included)

    Returns
    -------
    (M,) float64 (a 0-d array for a single pattern)
    """
    if hasattr(amplitudes, "pattern_energies"):  # patterns read from a file on demand (data/h5.py)
        return amplitudes.pattern_energies()
    x = np.asarray(amplitudes)
    if x.ndim == 2:
        return np.asarray(np.sum(np.square(x, dtype=np.float64)))
    flat = x.reshape(x.shape[0], -1)
    out = np.empty(flat.shape[0], dtype=np.float64)
    for start in range(0, flat.shape[0], _CHUNK):
        block = flat[start:start + _CHUNK].astype(np.float64)
        out[start:start + _CHUNK] = np.einsum("ij,ij->i", block, block)
    return out


def mean_pattern_energy(amplitudes: np.ndarray) -> float:
    """Mean over patterns of ``sum X**2`` (float64)."""
    return float(np.mean(pattern_energy(amplitudes)))


def photon_scale(amplitudes: np.ndarray, nphotons: float) -> float:
    """Scale ``s`` such that the mean total counts per pattern of ``(s*X)**2`` is ``nphotons``.

    ``s = sqrt(nphotons / mean_patterns sum X**2)``.
    """
    energy = mean_pattern_energy(amplitudes)
    if not energy > 0:
        raise ValueError("photon_scale: the diffraction patterns are all zero (no signal to scale)")
    return float(np.sqrt(float(nphotons) / energy))


def poisson_noise(amplitudes: np.ndarray, nphotons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson-noisy amplitudes at a mean of ``nphotons`` total counts per pattern.

    Draws ``counts ~ Poisson(s**2 X**2)`` with ``s = photon_scale(amplitudes, nphotons)`` and
    returns ``sqrt(counts) / s`` (the same units as the input).

    Parameters
    ----------
    amplitudes : (M, N, N) noise-free amplitudes
    nphotons : mean total counts per pattern
    rng : numpy Generator (the only source of randomness)

    Returns
    -------
    (M, N, N) float32 noisy amplitudes
    """
    x = np.asarray(amplitudes)
    s = photon_scale(x, nphotons)
    out = np.empty(x.shape, dtype=np.float32)
    flat_in = x.reshape((-1,) + x.shape[-2:]) if x.ndim >= 2 else x
    flat_out = out.reshape(flat_in.shape)
    for start in range(0, flat_in.shape[0], _CHUNK):
        lam = np.square(flat_in[start:start + _CHUNK].astype(np.float64) * s)
        counts = rng.poisson(lam)
        flat_out[start:start + _CHUNK] = np.sqrt(counts) / s
    return out


def normalisation_factor(amplitudes: np.ndarray, N: int) -> float:
    """Factor ``f`` such that the mean per-pattern ``sum (f*X)**2`` equals ``(N/2)**2``.

    Works on any real dtype (sums in float64, so uint16 does not overflow).
    """
    energy = mean_pattern_energy(amplitudes)
    if not energy > 0:
        raise ValueError("normalisation_factor: the diffraction patterns are all zero")
    return float((N / 2.0) / np.sqrt(energy))


def model_intensity_scale(nphotons: float, N: int) -> float:
    """Model-side intensity scale ``s_model = sqrt(nphotons) / (N/2)`` (docs/CONTRACT.md §1)."""
    return float(np.sqrt(float(nphotons)) / (N / 2.0))
