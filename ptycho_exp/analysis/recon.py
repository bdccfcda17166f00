"""Reading jobs' reconstructions (``recon.npz``) and putting several on one pixel grid.

Shared by the seed ensembles (:mod:`ptycho_exp.analysis.ensemble`) and the comparison figures
(:mod:`ptycho_exp.report.compare`). numpy at import; scipy and scikit-image inside :func:`align_to`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_exp.files import RECON_FILE

__all__ = ["load_recon_file", "align_to", "common_frame"]

log = logging.getLogger(__name__)


def align_to(reference: np.ndarray, image: np.ndarray, upsample_factor: int = 20) -> np.ndarray:
    """``image`` shifted (sub-pixel, Fourier) and phase-rotated to best match ``reference``."""
    from scipy.ndimage import fourier_shift
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(np.abs(reference), np.abs(image), upsample_factor=upsample_factor)
    if np.any(np.abs(shift) > 0):
        image = np.fft.ifftn(fourier_shift(np.fft.fftn(image), shift))
    c = np.vdot(image, reference)  # sum(conj(image) * reference)
    if abs(c) > 0:
        image = image * (c / abs(c))
    return image


def load_recon_file(job_dir: Path | str) -> dict[str, Any] | None:
    """``recon``, ``gt`` (complex128), ``origin`` ((2,) int or None) and ``reference`` (str) of a job,
    or None when its ``recon.npz`` is absent or unreadable (no pickles)."""
    path = Path(job_dir) / RECON_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            rec, gt = np.asarray(z["recon"]), np.asarray(z["gt"])
            origin = np.asarray(z["origin"], dtype=np.int64).reshape(-1) if "origin" in z.files else None
            reference = str(z["reference"]) if "reference" in z.files else "ground_truth"
    except (OSError, KeyError, ValueError) as exc:
        log.warning("unreadable %s: %s", path, exc)
        return None
    if rec.ndim != 2 or rec.shape != gt.shape:
        log.warning("%s: recon %s and gt %s must be equal 2-D shapes; skipped", path, rec.shape, gt.shape)
        return None
    if origin is not None and origin.shape != (2,):
        origin = None
    return {"recon": rec.astype(np.complex128), "gt": gt.astype(np.complex128), "origin": origin,
            "reference": reference}


def _centre_crop(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    r0 = (a.shape[0] - shape[0]) // 2
    c0 = (a.shape[1] - shape[1]) // 2
    return a[r0:r0 + shape[0], c0:c0 + shape[1]]


def common_frame(items: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ground truth and every reconstruction on one common grid.

    With an ``origin`` for every item (object coordinate of ``gt[0, 0]``), all are cut to the intersection
    of their boxes and the first item's ``gt`` is the ground truth. Otherwise they are centre-cropped to
    the smallest shape and each reconstruction is aligned to the first ground truth.

    Returns
    -------
    gt : (H, W) complex
    recons : list of (H, W) complex, in the order of ``items``
    """
    if not items:
        raise ValueError("common_frame needs at least one reconstruction")
    if all(it["origin"] is not None for it in items):
        lo = np.max([it["origin"] for it in items], axis=0)
        hi = np.min([it["origin"] + np.asarray(it["gt"].shape) for it in items], axis=0)
        if np.all(hi - lo >= 8):
            def cut(it: dict[str, Any], key: str) -> np.ndarray:
                a, b = lo - it["origin"], hi - it["origin"]
                return it[key][a[0]:b[0], a[1]:b[1]]

            return cut(items[0], "gt"), [cut(it, "recon") for it in items]
        log.warning("reconstructions do not overlap on a common box; aligning them by correlation")
    shape = tuple(int(v) for v in np.min([it["gt"].shape for it in items], axis=0))
    gt = _centre_crop(items[0]["gt"], shape)
    recons = []
    for it in items:
        rec = _centre_crop(it["recon"], shape)
        this_gt = _centre_crop(it["gt"], shape)
        # put the reconstruction in the frame of the first ground truth: align via this job's own gt
        if it is not items[0] and not np.allclose(this_gt, gt):
            rec = align_to(gt, rec)
        recons.append(rec)
    return gt, recons
