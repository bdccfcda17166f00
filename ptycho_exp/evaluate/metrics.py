"""Image-quality metrics for amplitude and phase (docs/CONTRACT.md §6.3-6.4).

All functions take real 2-D arrays ``(gt, pred)`` (ground truth first) and
return python ``float``; :func:`compute_metrics` takes two aligned complex
images and returns the flat metric dictionary used in result tables.

Conventions
-----------
* ``data_range`` defaults to the ground-truth range ``gt.max() - gt.min()``;
  if that is 0 (constant ground truth) the fallback is ``max|gt|`` or 1.
* PSNR is capped at 200 dB (the MSE is floored at ``1e-20 * data_range**2``)
  so identical images give a finite number.
* Headline scores (``amp_*`` and ``phase_*``) use the ground truth's own
  range, after amplitude scaling and phase-plane / offset removal
  (:func:`normalise_pair`). A weak-phase object spanning +-0.1 rad is thus
  scored on a 0.2 rad scale, so a flat phase image scores low.
* The convention of the reference publication (phase mapped to
  ``(phi + pi) / (2 pi)`` with ``data_range = 1``) is kept for comparison
  with published tables as ``phase_ssim_ref`` and ``phase_ms_ssim_ref``;
  ``phase_psnr255`` is its fixed-peak PSNR. On that scale any image of a
  weak-phase object scores near 1.
* A ground truth that is (nearly) constant in the scored region cannot rank
  reconstructions: the metrics of that channel are NaN
  (:func:`ground_truth_problems` says why), never a perfect score.
* :data:`METRICS` lists every metric name with its direction;
  :func:`higher_is_better` answers for any name, including the ``null_``
  (best constant image) and ``ref_`` (iterative reference) prefixes.
"""

from __future__ import annotations

import math

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
    "ms_ssim_scales",
    "pearson",
    "phase_to_unit",
    "compute_metrics",
    "headline_ssims",
    "null_reconstruction",
    "null_metrics",
    "ground_truth_problems",
    "higher_is_better",
    "METRICS",
    "MS_SSIM_WEIGHTS",
    "NULL_PREFIX",
    "REF_PREFIX",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, as tf.image
MS_SSIM_WINDOW = 11  # Gaussian window side (px), as tf.image.ssim_multiscale
MS_SSIM_SIGMA = 1.5  # its standard deviation (px)
NULL_PREFIX = "null_"  # metrics of the best constant reconstruction, scored like the job's
REF_PREFIX = "ref_"  # metrics of the iterative reference reconstruction against ground truth

# Per-channel metric -> True if higher is better.
_CHANNEL_METRICS = {
    "mae": False,
    "mse": False,
    "psnr": True,
    "psnr255": True,
    "ssim": True,
    "ms_ssim": True,
    "frc50": True,
    "frc_1_7": True,
    "pearson": True,
}
#: Every metric :func:`compute_metrics` returns -> True if higher is better (one home for the
#: direction of a metric; prefixed ``null_``/``ref_`` names follow their base metric).
METRICS: dict[str, bool] = {
    **{f"{c}_{m}": hib for c in ("amp", "phase") for m, hib in _CHANNEL_METRICS.items()},
    "phase_ssim_ref": True,
    "phase_ms_ssim_ref": True,
}
#: What the metric names mean in a result.json: 2 = headline phase SSIM / MS-SSIM / PSNR on the ground truth's own
#: range, the published convention as ``*_ref`` (records without it used the published convention for phase_ssim).
METRICS_VERSION = 2
_DARK_FRACTION = 1e-9  # |recon| at or below this fraction of its maximum has no defined phase
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
    # where the reconstruction is zero its phase is undefined: angle(0) = 0 above would copy the ground
    # truth's phase there, so those pixels get a flat phase (an all-zero image scores like a flat one)
    dark = np.abs(r) <= _DARK_FRACTION * (float(np.abs(r).max()) or 1.0)
    pred_raw = np.where(dark, 0.0, pred_raw)
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


def _gauss_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps (the separable factor of tf.image's 2-D window)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _gauss_filter_valid(a, g):
    """Separable correlation of ``a`` with ``g`` (both axes), keeping only the 'valid' region."""
    from scipy.ndimage import correlate1d

    p = (g.size - 1) // 2
    out = correlate1d(correlate1d(a, g, axis=0, mode="constant"), g, axis=1, mode="constant")
    return out[p : a.shape[0] - p, p : a.shape[1] - p]


def _ssim_gauss(x, y, data_range, win_size, sigma, K1=0.01, K2=0.03):
    """Mean SSIM and mean contrast-structure term with a Gaussian window, 'valid' region only.

    The local statistics of ``tf.image.ssim`` (biased, window-weighted variances; ``C1 = (K1 R)**2``,
    ``C2 = (K2 R)**2``; no border beyond the window's reach).
    """
    g = _gauss_1d(win_size, sigma)
    ux, uy = _gauss_filter_valid(x, g), _gauss_filter_valid(y, g)
    sxx = _gauss_filter_valid(x * x, g) - ux * ux
    syy = _gauss_filter_valid(y * y, g) - uy * uy
    sxy = _gauss_filter_valid(x * y, g) - ux * uy
    C1 = (K1 * data_range) ** 2
    C2 = (K2 * data_range) ** 2
    lum = (2 * ux * uy + C1) / (ux * ux + uy * uy + C1)
    cs = (2 * sxy + C2) / (sxx + syy + C2)
    return float(np.mean(lum * cs)), float(np.mean(cs))


def _down2(a):
    """2x2 mean pooling; an odd side first repeats its last row/column (tf.image's SYMMETRIC pad)."""
    H, W = a.shape
    if H % 2 or W % 2:
        a = np.pad(a, ((0, H % 2), (0, W % 2)), mode="symmetric")
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def ms_ssim_scales(shape, win_size: int = MS_SSIM_WINDOW, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Number of scales :func:`ms_ssim` uses for an image of ``shape``.

    The largest ``S <= max_scales`` whose coarsest image (each halving rounds the size up, as
    tf.image's padding does) is still at least ``win_size`` px on its shorter side; 1 when the image
    is smaller than the window. Five scales need a side of at least 161 px (``ceil(side / 16) >= 11``).
    """
    m = int(min(shape))
    s = 1
    while s < max_scales and -(-m // 2**s) >= win_size:
        s += 1
    return s


def ms_ssim(gt, pred, data_range=None, weights=MS_SSIM_WEIGHTS, win_size: int = MS_SSIM_WINDOW,
            sigma: float = MS_SSIM_SIGMA, K1: float = 0.01, K2: float = 0.03) -> float:
    """Multi-scale SSIM (Wang et al. 2003), equal to ``tf.image.ssim_multiscale``.

    ``MS-SSIM = prod_{j < S-1} relu(cs_j)**w_j * relu(ssim_{S-1})**w_{S-1}`` where ``cs_j`` is the
    mean contrast-structure term at scale ``j`` and ``ssim_{S-1}`` the full SSIM (luminance
    included) at the coarsest scale. As in TensorFlow: 11x11 Gaussian window with sigma 1.5
    (``win_size``, ``sigma``), biased window-weighted statistics, only the 'valid' region of the
    window (no padding), ``K1 = 0.01``, ``K2 = 0.03``, the same ``data_range`` at every scale
    (default: the ground-truth range), and scales made by 2x2 mean pooling after repeating the last
    row/column of an odd side. With the default weights ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``
    (used as published, although they sum to 1.0001) it equals
    ``tf.image.ssim_multiscale(gt, pred, max_val=data_range)`` for images with a shorter side of
    at least 161 px (to float32 round-off: TensorFlow computes in float32, this in float64).

    Smaller images (TensorFlow refuses them): ``S`` = :func:`ms_ssim_scales` scales, those that
    still fit the window, weighted by the first ``S`` weights renormalised to sum to 1 -- i.e.
    ``tf.image.ssim_multiscale`` with ``power_factors = w[:S] / sum(w[:S])``. An image smaller than
    the window (under 11 px) is scored at one scale with the largest odd window that fits
    (at least 3 px) and the same sigma.

    Returns
    -------
    float in ``[0, 1]`` for finite input (NaN if the input holds NaN).
    """
    gt, pred = _check_pair(gt, pred)
    dr = _safe_range(gt, data_range)
    win = int(win_size)
    if min(gt.shape) < win:
        win = _win_for(gt.shape, win)
    n_scales = ms_ssim_scales(gt.shape, win, len(weights))
    wts = np.asarray(weights[:n_scales], dtype=np.float64)
    if n_scales < len(weights):  # the standard weights sum to 1.0001: used as published when all fit
        wts = wts / wts.sum()
    x, y = gt, pred
    val = 1.0
    for j in range(n_scales):
        if j:
            x, y = _down2(x), _down2(y)
        s, cs = _ssim_gauss(x, y, dr, win, sigma, K1, K2)
        term = s if j == n_scales - 1 else cs
        val *= max(term, 0.0) ** wts[j]
    return float(val)


# ----------------------------------------------------------------- all metrics
def _channel_metrics(gt, pred, frc_apodize=False, reference_scale=False):
    """Metrics of one real channel; ``reference_scale`` adds the (phi+pi)/2pi SSIM / MS-SSIM."""
    dr = _safe_range(gt)
    out = {
        "mae": mae(gt, pred),
        "mse": mse(gt, pred),
        "psnr": psnr(gt, pred, data_range=dr),
        "psnr255": psnr255(gt, pred),
        "ssim": ssim(gt, pred, data_range=dr),
        "ms_ssim": ms_ssim(gt, pred, data_range=dr),
    }
    if reference_scale:
        unit_gt, unit_pred = phase_to_unit(gt), phase_to_unit(pred)
        out["ssim_ref"] = ssim(unit_gt, unit_pred, data_range=1.0)
        out["ms_ssim_ref"] = ms_ssim(unit_gt, unit_pred, data_range=1.0)
    rings, f = frc_curve(gt, pred, apodize=frc_apodize)
    out["frc50"] = frc_threshold_crossing(f, 0.5, rings)
    out["frc_1_7"] = frc_threshold_crossing(f, 1.0 / 7.0, rings)
    out["pearson"] = pearson(gt, pred)
    return out, f


# A channel of the ground truth counts as constant when its standard deviation in the scored region
# is below this: relative to the mean amplitude, absolute (radians) for the plane-removed phase.
CONSTANT_RTOL = 1e-6
CONSTANT_PHASE_ATOL = 1e-6


def _flat_if_roundoff(pred, gt, rtol=1e-9):
    """``pred`` made exactly constant (its mean) when it varies less than ``rtol`` times ``gt`` does.

    A constant reconstruction picks up float round-off in the normalisation (branch alignment,
    plane fit); left in, that noise would give a flat image a random correlation or FRC.
    """
    sg, sp = float(np.std(gt)), float(np.std(pred))
    if np.isfinite(sp) and sp <= rtol * sg:
        return np.full(pred.shape, float(np.mean(pred)))
    return pred


def ground_truth_problems(gt_complex) -> dict[str, str]:
    """Why a channel of the ground truth cannot rank reconstructions (``{}`` when both can).

    A (nearly) constant channel in the scored region -- e.g. a scan off the object (all zeros), or
    a pure-phase object's amplitude -- makes every reconstruction with the right mean look perfect
    (or arbitrarily bad). Amplitude is constant when its standard deviation is at most
    ``CONSTANT_RTOL`` times its mean (or the mean is 0); phase when the standard deviation of the
    plane-removed ground-truth phase is at most ``CONSTANT_PHASE_ATOL`` rad, or the amplitude is 0
    everywhere (phase undefined).

    Returns
    -------
    dict
        ``{'amp' | 'phase': reason}`` for each unusable channel.
    """
    g = np.asarray(gt_complex).astype(np.complex128)
    amp = np.abs(g)
    out: dict[str, str] = {}
    if amp.size == 0:
        return {"amp": "the scored region is empty", "phase": "the scored region is empty"}
    mean, std = float(np.mean(amp)), float(np.std(amp))
    if not mean > 0 or std <= CONSTANT_RTOL * mean:
        out["amp"] = (f"amplitude ground truth is constant in the scored region (mean {mean:.4g}, std "
                      f"{std:.3g}): amplitude metrics undefined")
    if not mean > 0:
        out["phase"] = "ground truth is zero in the scored region (off the object?): phase metrics undefined"
    else:
        ph_std = float(np.std(remove_phase_plane(np.angle(g))))
        if ph_std <= CONSTANT_PHASE_ATOL:
            out["phase"] = (f"phase ground truth is flat in the scored region (std {ph_std:.3g} rad after "
                            "plane removal): phase metrics undefined")
    return out


def compute_metrics(gt_complex, recon_complex, frc_apodize=False, return_frc=False):
    """All docs/CONTRACT.md §6 image metrics for an aligned (registered, trimmed) pair.

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
        Flat python-float metrics, the names of :data:`METRICS`: ``amp_mae, amp_mse, amp_psnr,
        amp_psnr255, amp_ssim, amp_ms_ssim, amp_frc50, amp_frc_1_7, amp_pearson``, the same with
        the ``phase_`` prefix, and ``phase_ssim_ref``, ``phase_ms_ssim_ref``. Amplitude is scaled
        by ``mean(gt)/mean(pred)``; phases are branch-aligned to ground truth and have a fitted
        plane removed (see :func:`normalise_pair`). Headline SSIM, MS-SSIM and PSNR of both
        channels use the ground truth's own range; the ``_ref`` scores use the reference
        publication's ``(phi+pi)/(2pi)`` with data_range 1. The metrics of a channel whose ground
        truth is constant (:func:`ground_truth_problems`) are NaN.
        With ``return_frc``: ``(metrics, frc_dict)``.
    """
    gt_amp, pred_amp, gt_ph, pred_ph = normalise_pair(gt_complex, recon_complex)
    pred_amp, pred_ph = _flat_if_roundoff(pred_amp, gt_amp), _flat_if_roundoff(pred_ph, gt_ph)
    return _score(gt_amp, pred_amp, gt_ph, pred_ph, ground_truth_problems(gt_complex), frc_apodize, return_frc)


def headline_ssims(gt_amp, pred_amp, gt_ph, pred_ph, problems) -> tuple[float, float]:
    """``amp_ssim`` and ``phase_ssim`` of :func:`compute_metrics` alone, for a pair already through
    :func:`normalise_pair` (what a figure title shows without paying for every metric).

    Parameters
    ----------
    gt_amp, pred_amp, gt_ph, pred_ph : ndarray
        The four arrays :func:`normalise_pair` returns.
    problems : collection of str
        :func:`ground_truth_problems` of the ground truth: a channel named there scores NaN.
    """
    out = []
    for channel, gt, pred in (("amp", gt_amp, pred_amp), ("phase", gt_ph, pred_ph)):
        pred = _flat_if_roundoff(pred, gt)
        out.append(math.nan if channel in problems else float(ssim(gt, pred, data_range=_safe_range(gt))))
    return out[0], out[1]


def null_metrics(gt_complex, frc_apodize=False) -> dict:
    """:func:`compute_metrics` of the best constant reconstruction (:func:`null_reconstruction`).

    Scored directly as amplitude ``mean|gt|`` and phase 0 against the normalised ground truth
    (amplitude ``|gt|``, plane-removed phase), i.e. without the 2*pi branch alignment of
    :func:`normalise_pair`, which would give a constant image 2*pi jumps where the ground-truth
    phase is more than pi from the constant.
    """
    g = np.asarray(gt_complex).astype(np.complex128)
    gt_amp = np.abs(g)
    gt_ph = remove_phase_plane(np.angle(g))
    pred_amp = np.full(g.shape, float(np.mean(gt_amp)) if g.size else 0.0)
    return _score(gt_amp, pred_amp, gt_ph, np.zeros(g.shape), ground_truth_problems(g), frc_apodize, False)


def _score(gt_amp, pred_amp, gt_ph, pred_ph, problems, frc_apodize, return_frc):
    res = {}
    amp, f_amp = _channel_metrics(gt_amp, pred_amp, frc_apodize)
    ph, f_ph = _channel_metrics(gt_ph, pred_ph, frc_apodize, reference_scale=True)
    for channel, values in (("amp", amp), ("phase", ph)):
        for k, v in values.items():
            res[f"{channel}_{k}"] = math.nan if channel in problems else float(v)
    if return_frc:
        rings = np.arange(f_amp.size, dtype=np.float64)
        return res, {"rings": rings, "amp": f_amp, "phase": f_ph}
    return res


def null_reconstruction(gt_complex) -> np.ndarray:
    """The best constant reconstruction of ``gt_complex``: ``mean|gt|`` everywhere, phase 0.

    After the scoring normalisation (:func:`normalise_pair`) a constant image becomes the
    ground truth's mean amplitude (the constant with least squared error) and, after global-phase
    alignment and plane removal, a zero phase (the plane-removed ground truth's own mean), so any
    constant scores the same. A reconstruction that does not beat it has learnt nothing about the
    object.
    """
    g = np.asarray(gt_complex)
    return np.full(g.shape, float(np.mean(np.abs(g))) if g.size else 0.0, dtype=np.complex128)


def higher_is_better(name: str) -> bool:
    """Direction of a metric: True if higher is better.

    Accepts every name of :data:`METRICS` and the same with a ``null_`` or ``ref_`` prefix.

    Raises
    ------
    KeyError
        For a name that is not a metric.
    """
    base = str(name)
    for prefix in (NULL_PREFIX, REF_PREFIX):
        if base.startswith(prefix):
            base = base[len(prefix):]
            break
    if base not in METRICS:
        raise KeyError(f"unknown metric {name!r}: known are {', '.join(METRICS)} (optionally prefixed "
                       f"{NULL_PREFIX!r} or {REF_PREFIX!r})")
    return METRICS[base]
