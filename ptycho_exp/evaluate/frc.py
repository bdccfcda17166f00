"""Fourier ring correlation (docs/CONTRACT.md §6.4).

Rings are integer spatial frequencies ``r = round(sqrt(ky**2 + kx**2))`` in
cycles per image width (``k`` = FFT index frequency of an ``n x n`` image),
``r = 0 .. n // 2``. Resolution thresholds are reported in the same unit.
"""

from __future__ import annotations

import numpy as np

__all__ = ["frc_curve", "frc_threshold_crossing", "frc50", "frc_1_7"]


def _square(img, n):
    """Central ``n x n`` crop (zero-pad a dimension that is smaller)."""
    H, W = img.shape
    out = np.zeros((n, n), dtype=img.dtype)
    hs, ws = min(H, n), min(W, n)
    r0, c0 = (H - hs) // 2, (W - ws) // 2
    R0, C0 = (n - hs) // 2, (n - ws) // 2
    out[R0 : R0 + hs, C0 : C0 + ws] = img[r0 : r0 + hs, c0 : c0 + ws]
    return out


def _window(n, kind):
    if kind in ("hann", True):
        w = np.hanning(n)
    elif kind == "tukey":
        from scipy.signal.windows import tukey

        w = tukey(n, alpha=0.25)
    else:
        raise ValueError(f"unknown apodisation {kind!r} (use False, 'hann' or 'tukey')")
    return np.outer(w, w)


def frc_curve(img1, img2, apodize=False):
    """Fourier ring correlation of two images.

    Parameters
    ----------
    img1, img2 : ndarray, shape (H, W)
        Real (or complex) images of equal shape. Non-square images are
        centre-cropped to the square of the smaller dimension.
    apodize : bool or {'hann', 'tukey'}, optional
        If set, subtract each image's mean and multiply by a 2-D Hann
        (``True``/'hann') or Tukey(alpha=0.25) window before the FFT.
        Default off.

    Returns
    -------
    rings : ndarray, float64, shape (n // 2 + 1,)
        Ring index = spatial frequency in cycles per image width.
    frc : ndarray, float64, shape (n // 2 + 1,)
        ``Re sum(F1 conj F2) / sqrt(sum|F1|^2 sum|F2|^2)`` per ring; 0 where a
        ring carries no power in either image.
    """
    a = np.asarray(img1)
    b = np.asarray(img2)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two 2-D images of equal shape, got {a.shape}, {b.shape}")
    n = min(a.shape)
    if a.shape[0] != a.shape[1]:
        a, b = _square(a, n), _square(b, n)
    dtype = np.complex128 if (np.iscomplexobj(a) or np.iscomplexobj(b)) else np.float64
    a = a.astype(dtype)
    b = b.astype(dtype)
    if apodize:
        w = _window(n, apodize)
        a = (a - a.mean()) * w
        b = (b - b.mean()) * w
    F1 = np.fft.fft2(a)
    F2 = np.fft.fft2(b)
    k = np.fft.fftfreq(n) * n
    r = np.rint(np.hypot(k[:, None], k[None, :])).astype(np.int64).ravel()
    nr = n // 2 + 1
    keep = r < nr
    r = r[keep]
    num = np.bincount(r, weights=np.real(F1 * np.conj(F2)).ravel()[keep], minlength=nr)
    p1 = np.bincount(r, weights=(np.abs(F1) ** 2).ravel()[keep], minlength=nr)
    p2 = np.bincount(r, weights=(np.abs(F2) ** 2).ravel()[keep], minlength=nr)
    den = np.sqrt(p1 * p2)
    frc = np.zeros(nr, dtype=np.float64)
    ok = den > 0
    frc[ok] = num[ok] / den[ok]
    return np.arange(nr, dtype=np.float64), np.clip(frc, -1.0, 1.0)


def frc_threshold_crossing(frc, threshold, rings=None) -> float:
    """First ring where the FRC drops below ``threshold`` (linear interpolation).

    Parameters
    ----------
    frc : array_like, shape (R,)
        FRC values per ring.
    threshold : float
        E.g. 0.5 or 1/7.
    rings : array_like, shape (R,), optional
        Ring coordinates (default ``arange(R)``).

    Returns
    -------
    float
        Interpolated ring (cycles per image width) between the last ring at or
        above the threshold and the first ring below it; ``rings[-1]`` (Nyquist)
        if it never drops.

    Notes
    -----
    Ring 0 is the single zero-frequency coefficient. The evaluation fixes it by
    normalisation (amplitude mean scaling, phase plane removal leaves a mean
    near 0 whose sign is noise), so it says nothing about resolution: it is
    taken as fully correlated and the search starts at ring 1.
    """
    f = np.nan_to_num(np.asarray(frc, dtype=np.float64), nan=0.0)
    rg = np.arange(f.size, dtype=np.float64) if rings is None else np.asarray(rings, float)
    if f.size == 0:
        return 0.0
    f = f.copy()
    f[0] = 1.0
    below = np.nonzero(f < threshold)[0]
    if below.size == 0:
        return float(rg[-1])
    i = int(below[0])
    f0, f1 = f[i - 1], f[i]
    t = (f0 - threshold) / (f0 - f1) if f0 != f1 else 0.0
    return float(rg[i - 1] + t * (rg[i] - rg[i - 1]))


def frc50(img1, img2, apodize=False) -> float:
    """FRC crossing at 0.5 (cycles per image width)."""
    _, f = frc_curve(img1, img2, apodize=apodize)
    return frc_threshold_crossing(f, 0.5)


def frc_1_7(img1, img2, apodize=False) -> float:
    """FRC crossing at 1/7 (cycles per image width)."""
    _, f = frc_curve(img1, img2, apodize=apodize)
    return frc_threshold_crossing(f, 1.0 / 7.0)
