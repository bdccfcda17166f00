"""Sub-pixel registration of a reconstruction to ground truth (docs/CONTRACT.md §6.2).

Sign convention
---------------
All shifts are ``(dy, dx)`` in pixels and follow the project translation
convention: shifting an image by ``t`` moves its content by ``+t``
(``out[k] = in[k - t]``). :func:`register_images` returns the shift that must be
*applied to* ``moving`` to align it with ``reference``; :func:`align_to_reference`
returns the shift it applied to ``recon``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger("ptycho_exp.evaluate")

__all__ = ["register_images", "apply_shift", "trim", "align_to_reference"]


def _tukey2d(shape, alpha):
    from scipy.signal.windows import tukey

    return np.outer(tukey(shape[0], alpha), tukey(shape[1], alpha))


def register_images(
    reference,
    moving,
    upsample_factor: int = 50,
    normalization: str | None = None,
    window: float = 0.5,
):
    """Sub-pixel shift that aligns ``moving`` to ``reference``.

    Uses :func:`skimage.registration.phase_cross_correlation` (upsampled-DFT
    peak refinement) on the amplitudes (``abs``) of both images, after
    subtracting each image's mean and multiplying by a 2-D Tukey window.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W)
        Real or complex images of equal shape.
    upsample_factor : int, optional
        Sub-pixel precision ``1 / upsample_factor`` px (default 50).
    normalization : {None, 'phase'}, optional
        Passed to ``phase_cross_correlation``. Default ``None`` (plain
        cross-correlation): whitened phase correlation (``'phase'``) is
        unreliable for smooth/band-limited objects (empty frequency bands
        dominate after whitening) and for crops whose frame edge is common to
        both images; tests showed errors of several pixels in such cases where
        the windowed plain correlation is accurate to < 0.05 px.
    window : float, optional
        Tukey ``alpha`` of the apodisation window (0 = none; default 0.5).

    Returns
    -------
    tuple of float
        ``(dy, dx)``: ``apply_shift(moving, (dy, dx))`` is aligned with
        ``reference``. ``(0.0, 0.0)`` if the correlation is undefined (a
        constant or non-finite image).

    Notes
    -----
    If the reference amplitude has no contrast (pure phase object), the
    complex images are registered instead.
    """
    from skimage.registration import phase_cross_correlation

    ref_c = np.asarray(reference)
    mov_c = np.asarray(moving)
    if ref_c.shape != mov_c.shape:
        raise ValueError(f"shape mismatch: {ref_c.shape} vs {mov_c.shape}")
    if not (np.all(np.isfinite(ref_c)) and np.all(np.isfinite(mov_c))):
        return (0.0, 0.0)
    ref = np.abs(ref_c).astype(np.float64)
    mov = np.abs(mov_c).astype(np.float64)
    scale = max(float(np.max(ref)), 1e-300)
    if np.ptp(ref) <= 1e-9 * scale and (np.iscomplexobj(ref_c) or np.iscomplexobj(mov_c)):
        ref, mov = ref_c.astype(np.complex128), mov_c.astype(np.complex128)
    if ref.size == 0 or np.all(ref == ref.flat[0]) or np.all(mov == mov.flat[0]):
        return (0.0, 0.0)
    ref = ref - ref.mean()
    mov = mov - mov.mean()
    if window and window > 0:
        w = _tukey2d(ref.shape, float(window))
        ref = ref * w
        mov = mov * w
    with np.errstate(all="ignore"):
        shift, _, _ = phase_cross_correlation(
            ref, mov, upsample_factor=int(upsample_factor), normalization=normalization
        )
    shift = np.asarray(shift, dtype=np.float64)
    if not np.all(np.isfinite(shift)):
        return (0.0, 0.0)
    return (float(shift[0]), float(shift[1]))


def apply_shift(image, shift, pad: int | None = None):
    """Fourier (sub-pixel) shift of a real or complex image.

    The image is mirror-padded before the FFT (so content entering at an edge
    is a reflection of the nearby image, not the opposite edge) and cropped
    back afterwards.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Real or complex image.
    shift : tuple of float
        ``(dy, dx)``; content moves by ``+shift`` (``out[k] = image[k - shift]``).
    pad : int, optional
        Mirror padding per side (default ``ceil(max|shift|) + 8``); 0 gives a
        plain circular Fourier shift.

    Returns
    -------
    ndarray, shape (H, W)
        Complex128 for complex input, float64 for real input.
    """
    img = np.asarray(image)
    dy, dx = float(shift[0]), float(shift[1])
    is_complex = np.iscomplexobj(img)
    if dy == 0.0 and dx == 0.0:
        return img.astype(np.complex128 if is_complex else np.float64)
    if pad is None:
        pad = int(math.ceil(max(abs(dy), abs(dx)))) + 8
    pad = int(pad)
    H, W = img.shape
    work = np.pad(img.astype(np.complex128), pad, mode="symmetric") if pad else img.astype(np.complex128)
    fy = np.fft.fftfreq(work.shape[0])[:, None]
    fx = np.fft.fftfreq(work.shape[1])[None, :]
    out = np.fft.ifft2(np.fft.fft2(work) * np.exp(-2j * np.pi * (dy * fy + dx * fx)))
    out = out[pad : pad + H, pad : pad + W]
    return out if is_complex else out.real


def trim(image, px: int = 2):
    """Remove ``px`` pixels from every border of a 2-D image.

    Parameters
    ----------
    image : ndarray, shape (H, W)
    px : int, optional
        Border width (default 2); ``0`` returns the image unchanged.

    Returns
    -------
    ndarray
        View of shape ``(H - 2 px, W - 2 px)``.
    """
    px = int(px)
    if px <= 0:
        return image
    if 2 * px >= min(image.shape[:2]):
        raise ValueError(f"cannot trim {px} px from an image of shape {image.shape}")
    return image[px:-px, px:-px]


def align_to_reference(gt, recon, upsample_factor: int = 50, trim_px: int = 2,
                       max_shift_fraction: float = 0.25):
    """Register ``recon`` to ``gt``, shift it, and trim both.

    Parameters
    ----------
    gt, recon : ndarray, shape (H, W)
        Ground truth and reconstruction on the same pixel grid (complex or real).
    upsample_factor : int, optional
        Registration precision ``1 / upsample_factor`` px.
    trim_px : int, optional
        Border trimmed from both images after the shift. The border actually
        trimmed is ``max(trim_px, ceil(max(|dy|, |dx|)))`` so that pixels
        filled in by the shift never enter the metrics.

    max_shift_fraction : float, optional
        A registered shift larger than this fraction of the smaller image side
        is implausible (a failed reconstruction correlates with nothing): the
        reconstruction is then scored unshifted and ``shift`` is NaN, so the
        job records a failed registration instead of crashing on the trim.

    Returns
    -------
    gt_aligned, recon_aligned : ndarray
        Trimmed ground truth and shifted, trimmed reconstruction.
    shift : tuple of float
        ``(dy, dx)`` applied to ``recon`` (content moved by ``+shift``); NaN when
        the registration was rejected.
    """
    gt = np.asarray(gt)
    recon = np.asarray(recon)
    if gt.shape != recon.shape:
        raise ValueError(f"gt and recon must have the same shape: {gt.shape} vs {recon.shape}")
    shift = register_images(gt, recon, upsample_factor=upsample_factor)
    limit = max_shift_fraction * min(gt.shape)
    if max(abs(shift[0]), abs(shift[1])) > limit:
        logger.warning("registration shift (%.2f, %.2f) px exceeds %.0f px (%.0f%% of the image): rejected, "
                       "the reconstruction is scored unshifted", shift[0], shift[1], limit,
                       100 * max_shift_fraction)
        return trim(gt, trim_px), trim(recon, trim_px), (math.nan, math.nan)
    moved = apply_shift(recon, shift)
    t = max(int(trim_px), int(math.ceil(max(abs(shift[0]), abs(shift[1])))))
    return trim(gt, t), trim(moved, t), shift
