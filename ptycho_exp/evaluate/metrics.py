"""Image-quality metrics for amplitude and phase (SPEC §6.3-6.4).

All functions take real 2-D arrays ``(gt, pred)`` (ground truth first) and
return python ``float``; :func:`compute_metrics` takes two aligned complex
images and returns the flat metric dictionary used in result tables.

Conventions
-----------
* ``data_range`` defaults to the ground-truth range ``gt.max() - gt.min()``;
  if that is 0 (constant ground truth) the fallback is ``max|gt|`` or 1.
* PSNR is capped at 200 dB (the MSE is floored at ``1e-20 * data_range**2``)
  so identical images give a finite number.
* Phase images are mapped to ``(phi + pi) / (2 pi)`` with ``data_range = 1``
  for SSIM and MS-SSIM; amplitude SSIM uses the ground-truth range.
"""

from __future__ import annotations

import numpy as np

from .frc import frc_curve, frc_threshold_crossing

__all__ = [
    "remove_phase_plane",
    "scale_amplitude",
    "align_global_phase",
    "normalise_pair",
    "mae",
    "mse",
    "psnr",
    "psnr255",
    "ssim",
    "ms_ssim",
    "pearson",
    "phase_to_unit",
    "compute_metrics",
    "MS_SSIM_WEIGHTS",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_PSNR_MSE_FLOOR = 1e-20  # relative to data_range**2 -> PSNR <= 200 dB


def _f(a):
    return np.asarray(a, dtype=np.float64)


def _check_pair(gt, pred):
    gt, pred = _f(gt), _f(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: {gt.shape} vs {pred.shape}")
    return gt, pred


def _safe_range(gt, data_range=None) -> float:
    if data_range is not None:
        dr = float(data_range)
        if dr > 0 and np.isfinite(dr):
            return dr
    dr = float(np.max(gt) - np.min(gt)) if gt.size else 0.0
    if dr > 0 and np.isfinite(dr):
        return dr
    m = float(np.max(np.abs(gt))) if gt.size else 0.0
    return m if m > 0 and np.isfinite(m) else 1.0


# ----------------------------------------------------------------- preprocessing
def remove_phase_plane(phase, mask=None):
    """Subtract the least-squares plane ``a*x + b*y + c`` from a phase image.

    Parameters
    ----------
    phase : ndarray, shape (H, W)
        Phase in radians (not re-wrapped afterwards).
    mask : ndarray of bool, shape (H, W), optional
        Pixels used for the fit (default: all). The plane is subtracted
        everywhere.

    Returns
    -------
    ndarray, float64, shape (H, W)
    """
    ph = _f(phase)
    H, W = ph.shape
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    y -= (H - 1) / 2.0
    x -= (W - 1) / 2.0
    sel = np.ones(ph.shape, bool) if mask is None else np.asarray(mask, bool)
    sel = sel & np.isfinite(ph)
    if sel.sum() < 3:
        return ph - (np.mean(ph[sel]) if sel.any() else 0.0)
    A = np.stack([x[sel], y[sel], np.ones(sel.sum())], axis=1)
    coef, *_ = np.linalg.lstsq(A, ph[sel], rcond=None)
    return ph - (coef[0] * x + coef[1] * y + coef[2])


def scale_amplitude(pred_amp, gt_amp):
    """Scale a predicted amplitude by ``mean(gt) / mean(pred)``.

    Returns ``pred_amp`` unchanged (as float64) if ``mean(pred)`` is 0 or
    non-finite.
    """
    pred, gt = _f(pred_amp), _f(gt_amp)
    mp = float(np.mean(pred))
    if mp == 0 or not np.isfinite(mp):
        return pred.copy()
    return pred * (float(np.mean(gt)) / mp)


def align_global_phase(gt_complex, recon_complex):
    """Multiply ``recon`` by ``exp(-i c)``, ``c = angle(sum(recon * conj(gt)))``.

    Removes the global phase ambiguity *before* ``angle`` wraps the phase. It
    only changes the phase by a constant, which the plane removal would
    subtract anyway, but it prevents a constant offset near ``+-pi`` from
    wrapping the reconstruction's phase.
    """
    g = np.asarray(gt_complex)
    r = np.asarray(recon_complex)
    s = np.sum(r * np.conj(g))
    if s == 0 or not np.isfinite(s):
        return r.astype(np.complex128)
    return r * np.exp(-1j * np.angle(s))


def normalise_pair(gt_complex, recon_complex):
    """Amplitude and phase images exactly as they are scored.

    Amplitude: ``|recon|`` scaled by ``mean|gt| / mean|recon|``.

    Phase:

    1. the reconstruction's global phase is aligned to ground truth
       (:func:`align_global_phase`);
    2. its phase is taken on the 2*pi branch closest to the ground-truth
       phase, ``phi_pred = angle(gt) + angle(recon * conj(gt))`` (phase is only
       defined modulo 2*pi; this equals ``angle(recon)`` wherever the two
       differ by less than pi without wrapping, and removes spurious 2*pi
       jumps, e.g. for ground-truth phases close to -pi);
    3. a fitted plane is removed from each phase separately
       (:func:`remove_phase_plane`).

    Returns
    -------
    gt_amp, pred_amp, gt_phase, pred_phase : ndarray, float64
    """
    g = np.asarray(gt_complex).astype(np.complex128)
    r = np.asarray(recon_complex).astype(np.complex128)
    if g.shape != r.shape:
        raise ValueError(f"shape mismatch: {g.shape} vs {r.shape}")
    gt_amp = np.abs(g)
    pred_amp = scale_amplitude(np.abs(r), gt_amp)
    gt_raw = np.angle(g)
    pred_raw = gt_raw + np.angle(align_global_phase(g, r) * np.conj(g))
    return gt_amp, pred_amp, remove_phase_plane(gt_raw), remove_phase_plane(pred_raw)


def phase_to_unit(phase):
    """Map phase (rad) to ``(phase + pi) / (2 pi)`` (``[-pi, pi] -> [0, 1]``)."""
    return (_f(phase) + np.pi) / (2.0 * np.pi)


# ----------------------------------------------------------------- pixel metrics
def mae(gt, pred) -> float:
    """Mean absolute error."""
    gt, pred = _check_pair(gt, pred)
    return float(np.mean(np.abs(gt - pred)))


def mse(gt, pred) -> float:
    """Mean squared error."""
    gt, pred = _check_pair(gt, pred)
    return float(np.mean((gt - pred) ** 2))


def psnr(gt, pred, data_range=None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB.

    Parameters
    ----------
    gt, pred : ndarray
    data_range : float, optional
        Default ``gt.max() - gt.min()`` (fallback ``max|gt|`` or 1 if 0).

    Notes
    -----
    Equals :func:`skimage.metrics.peak_signal_noise_ratio` with the same
    ``data_range``, except that it is capped at 200 dB.
    """
    gt, pred = _check_pair(gt, pred)
    dr = _safe_range(gt, data_range)
    m = max(float(np.mean((gt - pred) ** 2)), _PSNR_MSE_FLOOR * dr * dr)
    return float(10.0 * np.log10(dr * dr / m))


def psnr255(gt, pred) -> float:
    """PtychoPINN-compatible PSNR: fixed peak 255 on the *unmapped* values.

    ``10 log10(255**2 / MSE(gt, pred))`` with the images as given (after
    amplitude scaling / phase-plane removal), i.e. the semantics of
    ``cv2.PSNR(gt, pred)`` (default ``R = 255``) that PtychoPINN's evaluation
    uses; values are therefore not comparable to :func:`psnr` and depend on
    the absolute scale of the images. (Mapping both images to ``[0, 255]`` by
    the ground-truth range would reproduce :func:`psnr` exactly, so it is not
    done.) Capped at 200 dB above ``20 log10(255)``.
    """
    gt, pred = _check_pair(gt, pred)
    m = max(float(np.mean((gt - pred) ** 2)), _PSNR_MSE_FLOOR * 255.0**2)
    return float(10.0 * np.log10(255.0**2 / m))


def pearson(gt, pred) -> float:
    """Pearson correlation coefficient; 0.0 if either image is constant (to 1e-12 relative)."""
    gt, pred = _check_pair(gt, pred)
    a = gt.ravel() - gt.mean()
    b = pred.ravel() - pred.mean()
    sa, sb = np.sqrt(np.mean(a * a)), np.sqrt(np.mean(b * b))
    # constant up to round-off (relative 1e-12) counts as constant
    if sa <= 1e-12 * abs(gt.mean()) or sb <= 1e-12 * abs(pred.mean()):
        return 0.0
    den = np.sqrt(np.sum(a * a) * np.sum(b * b))
    if den == 0 or not np.isfinite(den):
        return 0.0
    return float(np.clip(np.sum(a * b) / den, -1.0, 1.0))


# ----------------------------------------------------------------- SSIM family
def _win_for(shape, win_size=7):
    m = min(shape)
    if m < 3:
        raise ValueError(f"image too small for SSIM: {shape}")
    w = min(int(win_size), m if m % 2 else m - 1)
    return max(w, 3)


def ssim(gt, pred, data_range=None, win_size: int = 7) -> float:
    """Structural similarity (scikit-image, default parameters).

    Calls :func:`skimage.metrics.structural_similarity` with an explicit
    ``data_range`` (default: ground-truth range) and ``win_size`` 7, reduced to
    the largest odd size that fits for images smaller than 7 px.
    """
    from skimage.metrics import structural_similarity

    gt, pred = _check_pair(gt, pred)
    dr = _safe_range(gt, data_range)
    w = _win_for(gt.shape, win_size)
    return float(structural_similarity(gt, pred, data_range=dr, win_size=w))


def _ssim_terms(x, y, data_range, win_size, K1=0.01, K2=0.03):
    """Mean luminance*cs (SSIM) and mean contrast-structure term.

    Reproduces scikit-image's ``structural_similarity`` internals (uniform
    window, sample covariance, border of ``(win - 1) // 2`` excluded) so the
    single-scale value equals :func:`ssim`.
    """
    from scipy.ndimage import uniform_filter

    ndim = x.ndim
    NP = win_size**ndim
    cov_norm = NP / (NP - 1)
    ux = uniform_filter(x, size=win_size)
    uy = uniform_filter(y, size=win_size)
    uxx = uniform_filter(x * x, size=win_size)
    uyy = uniform_filter(y * y, size=win_size)
    uxy = uniform_filter(x * y, size=win_size)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    C1 = (K1 * data_range) ** 2
    C2 = (K2 * data_range) ** 2
    lum = (2 * ux * uy + C1) / (ux * ux + uy * uy + C1)
    cs = (2 * vxy + C2) / (vx + vy + C2)
    p = (win_size - 1) // 2
    sl = tuple(slice(p, s - p) for s in x.shape)
    return float(np.mean((lum * cs)[sl])), float(np.mean(cs[sl]))


def _down2(a):
    H, W = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    a = a[:H, :W]
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def ms_ssim(gt, pred, data_range=None, win_size: int = 7, weights=MS_SSIM_WEIGHTS) -> float:
    """Multi-scale SSIM (Wang et al. 2003), 5 scales by default.

    ``MS-SSIM = prod_{j < S-1} max(cs_j, 0)**w_j * max(ssim_{S-1}, 0)**w_{S-1}``
    where ``cs_j`` is the mean contrast-structure term at scale ``j`` and
    ``ssim_{S-1}`` the full SSIM (luminance included) at the coarsest scale;
    scales are produced by 2x2 averaging. Local statistics follow
    scikit-image's SSIM (uniform ``win_size`` window, K1=0.01, K2=0.03); the
    ``data_range`` (default ground-truth range) is the same at every scale.

    Small images: the number of scales ``S`` is the largest (<= len(weights))
    with ``min(H, W) / 2**(S-1) >= win_size``; the first ``S`` weights are
    used, renormalised to sum to 1. Below ``win_size`` px a single scale with
    the largest odd window that fits is used. Negative terms are clipped to 0
    so the result is in ``[0, 1]`` for finite input (NaN only if the input
    contains NaN).
    """
    gt, pred = _check_pair(gt, pred)
    dr = _safe_range(gt, data_range)
    w = _win_for(gt.shape, win_size)
    m = min(gt.shape)
    n_scales = 1
    while n_scales < len(weights) and m / 2**n_scales >= w:
        n_scales += 1
    wts = np.asarray(weights[:n_scales], dtype=np.float64)
    wts = wts / wts.sum()
    x, y = gt, pred
    val = 1.0
    for j in range(n_scales):
        s, cs = _ssim_terms(x, y, dr, w)
        term = s if j == n_scales - 1 else cs
        val *= max(term, 0.0) ** wts[j]
        if j < n_scales - 1:
            x, y = _down2(x), _down2(y)
    return float(val)


# ----------------------------------------------------------------- all metrics
def _channel_metrics(gt, pred, data_range_ssim, frc_apodize=False):
    out = {
        "mae": mae(gt, pred),
        "mse": mse(gt, pred),
        "psnr": psnr(gt, pred),
        "psnr255": psnr255(gt, pred),
    }
    if data_range_ssim is None:
        ssim_gt, ssim_pred, dr = gt, pred, _safe_range(gt)
    else:
        ssim_gt, ssim_pred, dr = phase_to_unit(gt), phase_to_unit(pred), data_range_ssim
    out["ssim"] = ssim(ssim_gt, ssim_pred, data_range=dr)
    out["ms_ssim"] = ms_ssim(ssim_gt, ssim_pred, data_range=dr)
    rings, f = frc_curve(gt, pred, apodize=frc_apodize)
    out["frc50"] = frc_threshold_crossing(f, 0.5, rings)
    out["frc_1_7"] = frc_threshold_crossing(f, 1.0 / 7.0, rings)
    out["pearson"] = pearson(gt, pred)
    return out, f


def compute_metrics(gt_complex, recon_complex, frc_apodize=False, return_frc=False):
    """All SPEC §6 image metrics for an aligned (registered, trimmed) pair.

    Parameters
    ----------
    gt_complex, recon_complex : ndarray, complex, shape (H, W)
        Ground truth and reconstruction on the same pixel grid.
    frc_apodize : bool or str, optional
        Passed to :func:`~ptycho_exp.evaluate.frc.frc_curve` (default off).
    return_frc : bool, optional
        If true, also return ``{'rings', 'amp', 'phase'}`` FRC curves.

    Returns
    -------
    dict
        Flat python-float metrics ``amp_mae, amp_mse, amp_psnr, amp_psnr255,
        amp_ssim, amp_ms_ssim, amp_frc50, amp_frc_1_7, amp_pearson`` and the
        same with the ``phase_`` prefix. Amplitude is scaled by
        ``mean(gt)/mean(pred)``; phases are branch-aligned to ground truth and
        have a fitted plane removed (see :func:`normalise_pair`). Phase SSIM/MS-SSIM use ``(phi+pi)/(2pi)`` with
        data_range 1; amplitude SSIM uses the ground-truth amplitude range.
        With ``return_frc``: ``(metrics, frc_dict)``.
    """
    gt_amp, pred_amp, gt_ph, pred_ph = normalise_pair(gt_complex, recon_complex)
    res = {}
    amp, f_amp = _channel_metrics(gt_amp, pred_amp, None, frc_apodize)
    ph, f_ph = _channel_metrics(gt_ph, pred_ph, 1.0, frc_apodize)
    for k, v in amp.items():
        res[f"amp_{k}"] = float(v)
    for k, v in ph.items():
        res[f"phase_{k}"] = float(v)
    if return_frc:
        rings = np.arange(f_amp.size, dtype=np.float64)
        return res, {"rings": rings, "amp": f_amp, "phase": f_ph}
    return res
