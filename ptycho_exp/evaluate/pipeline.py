"""One scoring path for every reconstruction (docs/CONTRACT.md §6).

Networks (which predict patches) go through :func:`evaluate_reconstruction`
(or, patches stitched batch by batch onto the :func:`scored_canvas`, :func:`evaluate_stitched`);
iterative engines (which return a whole object) go through
:func:`evaluate_object`. Both cut ground truth and reconstruction to the same
box, :func:`~.stitch.covered_box` (the scanned box shrunk to the rectangle
fully covered by the cropped patches; a function of positions and crop only),
and then share :func:`_evaluate_boxes`:
register (amplitude phase correlation, upsample 50) -> Fourier shift ->
trim -> amplitude scaling / phase-plane removal -> metrics and FRC curves.
The best constant image (:func:`~.metrics.null_metrics`) is scored on the same
pixels with the same metrics (``null_*``), so every score comes with the score of
a reconstruction that knows nothing about the object. :func:`metrics_validity` decides
whether a job's scores can be used at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .metrics import NULL_PREFIX, compute_metrics, ground_truth_problems, null_metrics
from .register import align_to_reference
from .stitch import Stitched, covered_box, crop_to_box, default_crop, scan_weight, stitch_patches

__all__ = ["EvalResult", "evaluate_reconstruction", "evaluate_stitched", "scored_canvas", "evaluate_object",
           "metrics_validity", "write_frc_csv"]


@dataclass
class EvalResult:
    """Outcome of one evaluation.

    Attributes
    ----------
    metrics : dict
        Flat python floats: ``amp_*`` and ``phase_*`` metrics of
        :func:`~.metrics.compute_metrics`, the same with the ``null_`` prefix
        (the best constant image scored on the same pixels), plus ``reg_dy``,
        ``reg_dx`` (shift applied to the reconstruction, px) and ``coverage``
        (fraction of the scanned box that the reconstruction covers, before
        trimming).
    recon : ndarray, complex128
        Reconstruction after registration and trimming (raw amplitude and
        phase; the scoring normalisation is :func:`~.metrics.normalise_pair`).
    gt : ndarray, complex
        Ground truth on the same pixels.
    frc : dict
        ``{'rings', 'amp', 'phase'}`` float64 arrays (rings in cycles per
        image width of the scored square).
    origin : tuple of int
        Object coordinate of ``gt[0, 0]`` / ``recon[0, 0]`` (GT pixel frame).
    notes : dict
        ``{'amp' | 'phase': reason}`` for each channel whose metrics are NaN
        because the ground truth cannot rank reconstructions there
        (:func:`~.metrics.ground_truth_problems`).
    """

    metrics: dict
    recon: np.ndarray
    gt: np.ndarray
    frc: dict = field(default_factory=dict)
    origin: tuple = (0, 0)
    notes: dict = field(default_factory=dict)


def _evaluate_boxes(gt_box, recon_box, box_origin, covered, upsample_factor, trim_px, frc_apodize):
    gt_al, rec_al, shift = align_to_reference(
        gt_box, recon_box, upsample_factor=upsample_factor, trim_px=trim_px
    )
    metrics, frc = compute_metrics(gt_al, rec_al, frc_apodize=frc_apodize, return_frc=True)
    null = null_metrics(gt_al, frc_apodize=frc_apodize)
    metrics.update({f"{NULL_PREFIX}{k}": v for k, v in null.items()})
    metrics["reg_dy"] = float(shift[0])
    metrics["reg_dx"] = float(shift[1])
    metrics["coverage"] = float(np.mean(covered)) if np.size(covered) else 0.0
    t = (gt_box.shape[0] - gt_al.shape[0]) // 2
    origin = (int(box_origin[0]) + t, int(box_origin[1]) + t)
    return EvalResult(metrics=metrics, recon=rec_al, gt=gt_al, frc=frc, origin=origin,
                      notes=ground_truth_problems(gt_al))


def metrics_validity(ev: EvalResult, min_coverage: float = 0.5) -> tuple[bool, str | None]:
    """Whether an evaluation's scores can be used, and why not.

    Invalid when the reconstruction covers less than ``min_coverage`` of the scored box
    (``metrics['coverage']``), or when neither channel of the ground truth can rank
    reconstructions (:attr:`EvalResult.notes`: e.g. a region off the object). One unusable
    channel alone leaves the job valid; its metrics are NaN and the reason is in ``notes``.

    Returns
    -------
    valid : bool
    reason : str or None
    """
    reasons = []
    coverage = float(ev.metrics.get("coverage", 1.0))
    if not coverage >= float(min_coverage):
        reasons.append(f"the reconstruction covers {coverage:.0%} of the scored region, below "
                       f"eval.min_coverage={float(min_coverage):g}")
    if {"amp", "phase"} <= set(ev.notes):
        reasons.append("; ".join(ev.notes[c] for c in ("amp", "phase")))
    return (not reasons), ("; ".join(reasons) if reasons else None)


def evaluate_reconstruction(
    patches_pred,
    positions,
    gt_object,
    crop: int | None = None,
    upsample_factor: int = 50,
    trim_px: int = 2,
    frc_apodize=False,
) -> EvalResult:
    """Score predicted object patches against a ground-truth object.

    Parameters
    ----------
    patches_pred : ndarray, complex, shape (M, N, N)
        Predicted object patches (one per scan position).
    positions : array_like, shape (M, 2)
        Patch centres ``[y, x]`` in ground-truth object pixels.
    gt_object : ndarray, complex, shape (H, W)
        Ground-truth object (``gt_object[0, 0]`` at object coordinate (0, 0)).
    crop : int, optional
        Central crop kept from each patch (default :func:`~.stitch.default_crop`).
    upsample_factor : int, optional
        Registration precision (1/upsample_factor px).
    trim_px : int, optional
        Border trimmed after the registration shift (at least ``ceil|shift|``).
    frc_apodize : bool or str, optional
        FRC apodisation (default off).

    Returns
    -------
    EvalResult
        Scored on :func:`~.stitch.covered_box`. If the scan has interior
        holes, the whole scanned box is used and uncovered pixels stay 0 in
        the reconstruction (scored as such); see ``metrics['coverage']``.
    """
    patches_pred = np.asarray(patches_pred)
    N = patches_pred.shape[-1]
    crop, origin, shape = scored_canvas(positions, N, crop)
    st = stitch_patches(patches_pred, positions, crop, shape=shape, origin=origin)
    return evaluate_stitched(st, gt_object, upsample_factor, trim_px, frc_apodize)


def scored_canvas(positions, N: int, crop: int | None = None) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """``(crop, origin, shape)`` of the canvas :func:`evaluate_reconstruction` stitches patches on.

    For stitching patches batch by batch (:class:`~.stitch.StitchAccumulator`) onto the canvas that
    :func:`evaluate_stitched` scores, the way :func:`evaluate_reconstruction` does with all of them at once.
    """
    crop = default_crop(N) if crop is None else int(crop)
    origin, shape = covered_box(positions, crop, N)
    return crop, origin, shape


def evaluate_stitched(st: Stitched, gt_object, upsample_factor: int = 50, trim_px: int = 2,
                      frc_apodize=False) -> EvalResult:
    """Score an object stitched on the canvas of :func:`scored_canvas` against a ground-truth object.

    Parameters
    ----------
    st : Stitched
        The stitched patches (origin and shape from :func:`scored_canvas`).
    gt_object, upsample_factor, trim_px, frc_apodize
        As in :func:`evaluate_reconstruction`.

    Returns
    -------
    EvalResult
        What :func:`evaluate_reconstruction` returns for the same patches.
    """
    gt_box = crop_to_box(np.asarray(gt_object), st.origin, st.image.shape)
    return _evaluate_boxes(
        gt_box, st.image, st.origin, st.weight > 0, upsample_factor, trim_px, frc_apodize
    )


def evaluate_object(
    recon_object,
    recon_origin,
    positions,
    gt_object,
    crop: int | None = None,
    upsample_factor: int = 50,
    trim_px: int = 2,
    patch_size: int | None = None,
    frc_apodize=False,
) -> EvalResult:
    """Score a whole reconstructed object (iterative engines) like the networks.

    Parameters
    ----------
    recon_object : ndarray, complex, shape (H1, W1)
        Reconstructed object.
    recon_origin : tuple of float
        Ground-truth object coordinate ``(row, col)`` of ``recon_object[0, 0]``
        (rounded to integer pixels; ``(0, 0)`` when the engine works in the
        ground-truth frame).
    positions : array_like, shape (M, 2)
        Scan positions ``[y, x]`` in ground-truth object pixels.
    gt_object : ndarray, complex, shape (H, W)
        Ground-truth object.
    crop : int, optional
        The stitching crop the networks are scored with; defines the same
        scored box (:func:`~.stitch.covered_box`). Default ``default_crop(patch_size)``.
    upsample_factor, trim_px, frc_apodize
        As in :func:`evaluate_reconstruction`.
    patch_size : int, optional
        Patch size ``N`` (needed only when ``crop`` is None; its parity
        defines the box for odd ``N``).

    Returns
    -------
    EvalResult
    """
    if crop is None:
        if patch_size is None:
            raise ValueError("evaluate_object needs crop or patch_size")
        crop = default_crop(int(patch_size))
    origin, shape = covered_box(positions, int(crop), patch_size)
    recon_object = np.asarray(recon_object)
    gt_box = crop_to_box(np.asarray(gt_object), origin, shape)
    rec_box = crop_to_box(recon_object.astype(np.complex128), origin, shape, image_origin=recon_origin)
    inside = crop_to_box(np.ones(recon_object.shape, bool), origin, shape,
                         image_origin=recon_origin, fill=False)
    covered = inside & (scan_weight(positions, int(crop), origin, shape, patch_size)[0] > 0)
    return _evaluate_boxes(gt_box, rec_box, origin, covered, upsample_factor, trim_px, frc_apodize)


def write_frc_csv(path, frc) -> None:
    """Write FRC curves as CSV (columns ``ring,frc_amp,frc_phase``), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; written atomically (:func:`ptycho_exp.files.atomic_write_text`).
    frc : dict
        ``{'rings', 'amp', 'phase'}`` arrays of equal length (e.g.
        ``EvalResult.frc``).
    """
    path = os.fspath(path)
    rings = np.asarray(frc["rings"], dtype=np.float64)
    amp = np.asarray(frc["amp"], dtype=np.float64)
    phase = np.asarray(frc["phase"], dtype=np.float64)
    if not (rings.shape == amp.shape == phase.shape):
        raise ValueError("frc arrays must have equal length")
    from ptycho_exp.files import atomic_write_text

    lines = ["ring,frc_amp,frc_phase\n"] + [f"{r:g},{a:.8g},{p:.8g}\n" for r, a, p in zip(rings, amp, phase)]
    atomic_write_text(path, "".join(lines))
