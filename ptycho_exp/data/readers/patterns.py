"""Pure helpers on detector frames and geometry: wavelength, object pixel, cleaning, zero frequency,
crop/bin and probe resampling (see :mod:`ptycho_exp.data.readers`)."""
from __future__ import annotations

import numpy as np


def energy_to_wavelength(energy_ev: float) -> float:
    """Photon wavelength (m) of ``energy_ev`` electron-volts: ``h c / (e E)``."""
    from scipy.constants import c, e, h

    return float(h * c / (e * float(energy_ev)))


def object_pixel_size(wavelength: float, distance: float, n: int, detector_pixel: float) -> float:
    """Real-space pixel ``wavelength * distance / (n * detector_pixel)`` of an ``n``-pixel detector window."""
    return float(wavelength) * float(distance) / (int(n) * float(detector_pixel))


def clean_frames(frames: np.ndarray, bad: np.ndarray | None, saturation: float | None
                 ) -> tuple[np.ndarray, int, int]:
    """Float64 copy of ``frames`` with negative counts clipped and bad/saturated pixels set to 0.

    Parameters
    ----------
    frames : (n, H, W) counts, any real dtype
    bad : (H, W) bool mask of bad pixels (True = bad) or None
    saturation : counts at or above which a pixel is saturated, or None

    Returns
    -------
    (cleaned, negative values clipped, saturated values zeroed)
    """
    x = np.asarray(frames, dtype=np.float64)
    saturated = 0
    if saturation is not None:
        hot = x >= float(saturation)
        saturated = int(np.count_nonzero(hot))
        x[hot] = 0.0
    negative = x < 0
    clipped = int(np.count_nonzero(negative))
    x[negative] = 0.0
    if bad is not None:
        x[:, bad] = 0.0
    return x, clipped, saturated


def find_zero_frequency(mean_pattern: np.ndarray, iterations: int = 3) -> tuple[tuple[int, int], tuple[float, float]]:
    """Pixel of the zero frequency of a mean diffraction pattern, and its local centre of mass.

    Starts at the brightest pixel of the 3x3 median-filtered pattern (a single hot pixel cannot win),
    then moves to the rounded centre of mass of the window of half-width ``max(2, min(H, W) // 16)``
    around it, ``iterations`` times (the brightest pixel of a few patterns can sit a pixel off the
    symmetry centre; the centre of mass of a centro-symmetric mean intensity does not). Indices wrap
    around the edges, so a zero frequency at the corners is found at (0, 0).

    Returns
    -------
    ((row, col) integer zero frequency, (row, col) centre of mass around it)
    """
    from scipy.ndimage import median_filter

    m = np.asarray(mean_pattern, dtype=np.float64)
    r, c = (int(v) for v in np.unravel_index(int(np.argmax(median_filter(m, size=3, mode="wrap"))), m.shape))
    w = max(2, min(m.shape) // 16)
    com = (float(r), float(c))
    for _ in range(max(1, int(iterations))):
        rr, cc = np.arange(r - w, r + w + 1), np.arange(c - w, c + w + 1)
        win = m[np.ix_(rr % m.shape[0], cc % m.shape[1])]
        total = float(win.sum())
        if not total > 0:
            break
        com = (float((win.sum(axis=1) * rr).sum() / total), float((win.sum(axis=0) * cc).sum() / total))
        moved = (int(np.rint(com[0])) % m.shape[0], int(np.rint(com[1])) % m.shape[1])
        if moved == (r, c):
            break
        r, c = moved
    return (r, c), com


def at_corner(peak: tuple[int, int], shape: tuple[int, int], radius: float | None = None) -> bool:
    """True when ``peak`` lies within ``radius`` (default ``min(H, W) / 8``) of pixel (0, 0), with wrap-around.

    Only a zero frequency that close to the corners is taken for unshifted (corner) data; a beam that
    is merely off-centre on the detector is not.
    """
    def wrap(d, n):
        d = abs(d) % n
        return min(d, n - d)

    radius = min(shape) / 8.0 if radius is None else float(radius)
    return bool(np.hypot(wrap(peak[0], shape[0]), wrap(peak[1], shape[1])) < radius)


def window_start(centre: int, N: int, b: int) -> int:
    """First detector pixel of the ``N*b`` window whose binned pixel ``N/2`` holds ``centre``.

    For odd ``b`` the zero frequency is the centre of its ``b x b`` block; for even ``b`` it is half a
    detector pixel before it (blocks have no centre pixel).
    """
    return int(centre) - (N // 2) * b - (b - 1) // 2


def crop_and_bin(frames: np.ndarray, centre: tuple[int, int], N: int, b: int) -> tuple[np.ndarray, int]:
    """The ``N*b`` square window around ``centre``, summed in ``b x b`` blocks to ``(n, N, N)``.

    Window pixels outside the detector are 0. Returns (binned frames, outside pixels per frame).
    """
    n, H, W = frames.shape
    side = N * b
    r0, c0 = window_start(centre[0], N, b), window_start(centre[1], N, b)
    out = np.zeros((n, side, side), dtype=np.float64)
    rs, cs = max(r0, 0), max(c0, 0)
    re_, ce = min(r0 + side, H), min(c0 + side, W)
    if re_ > rs and ce > cs:
        out[:, rs - r0:re_ - r0, cs - c0:ce - c0] = frames[:, rs:re_, cs:ce]
    outside = side * side - max(re_ - rs, 0) * max(ce - cs, 0)
    if b > 1:
        out = out.reshape(n, N, b, N, b).sum(axis=(2, 4))
    return out, int(outside)


def resample_probe(probe: np.ndarray, ratio: float, N: int) -> np.ndarray:
    """Resample ``probe`` to a pixel ``1/ratio`` times its own and centre-crop/pad it to ``N x N``.

    ``ratio = dx_old / dx_new``. The grid keeps its field of view at ``round(n_p * ratio)`` pixels by
    cropping or zero-padding the (unitary, centred) spectrum, so total power ``sum |P|**2`` is kept
    for a band-limited probe; then the real-space array is centre-cropped or zero-padded to ``N``.
    """
    p = np.asarray(probe, dtype=np.complex128)
    n_p = p.shape[-1]
    m = int(round(n_p * float(ratio)))
    if m < 2:
        raise ValueError(f"probe of {n_p} px resampled by {ratio:g} would have {m} px")
    if m != n_p:
        spec = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(p), norm="ortho"))
        spec = _centre_fit(spec, m)
        p = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(spec), norm="ortho"))
    return _centre_fit(p, N).astype(np.complex64)


def _centre_fit(a: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop or zero-pad a square array to ``n x n`` keeping pixel ``(s/2, s/2)`` at ``(n/2, n/2)``."""
    s = a.shape[-1]
    out = np.zeros((n, n), dtype=a.dtype)
    src0, dst0 = max(s // 2 - n // 2, 0), max(n // 2 - s // 2, 0)
    k = min(s, n)
    out[dst0:dst0 + k, dst0:dst0 + k] = a[src0:src0 + k, src0:src0 + k]
    return out
