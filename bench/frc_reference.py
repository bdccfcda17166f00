"""A job's amplitude FRC50 as docs/CONTRACT.md §6 defines it beside the way PtychoPINN's evaluation computes it.

docs/CONTRACT.md §6 (``ptycho_exp.evaluate.frc``): the real part of the ring-summed cross spectrum, rings of
width 1 in cycles per image width, the first crossing below 0.5 interpolated. PtychoPINN's
``evaluation.frc50``: the magnitude of the ring-summed cross spectrum over rings of rounded radius,
the curve smoothed by a Gaussian of σ = 2 rings, the first ring index below 0.5. The reference table
(docs/CONTRACT.md §7) was made that way, so this script says how much of a gap to it is the metric.

With ``--tiled W`` it also rebuilds both images the way PtychoPINN stitches a test scan: the central
W px of each test group (around the group's centroid, from its first channel), tiled without
averaging, for the prediction and for the true patches alike. That needs the saved network of a PINN
job on simulated data, and TensorFlow.

Usage::

    python bench/frc_reference.py JOB_DIR
    python bench/frc_reference.py JOB_DIR --tiled 10 --name frc_reference_full_cpu
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _common import write_result


def ring_index(shape) -> np.ndarray:
    """Rounded distance of each pixel of a centred (fftshifted) spectrum from the zero frequency."""
    yy, xx = np.indices(shape)
    return np.round(np.hypot(yy - shape[0] // 2, xx - shape[1] // 2)).astype(np.int64)


def frc_reference_style(img1, img2, sigma: float = 2.0):
    """FRC curve (magnitude of the ring-summed cross spectrum) and the first ring below 0.5 after smoothing.

    Parameters
    ----------
    img1, img2 : (n, n) real images
    sigma : Gaussian smoothing of the curve, in rings (0: none)

    Returns
    -------
    curve : (R,) the unsmoothed FRC per rounded ring radius 0 … R-1 (corners included)
    frc50 : int, the first ring whose smoothed FRC is below 0.5 (R when none is)
    """
    from scipy.ndimage import gaussian_filter1d

    f1 = np.fft.fftshift(np.fft.fft2(np.asarray(img1, dtype=np.float64)))
    f2 = np.fft.fftshift(np.fft.fft2(np.asarray(img2, dtype=np.float64)))
    idx = ring_index(f1.shape).ravel()
    cross = f1 * np.conj(f2)
    c = np.bincount(idx, cross.real.ravel()) + 1j * np.bincount(idx, cross.imag.ravel())
    p1 = np.bincount(idx, (np.abs(f1) ** 2).ravel())
    p2 = np.bincount(idx, (np.abs(f2) ** 2).ravel())
    curve = np.abs(c) / np.sqrt(np.maximum(p1 * p2, 1e-300))
    smooth = gaussian_filter1d(curve, sigma) if sigma > 0 else curve
    below = np.flatnonzero(smooth < 0.5)
    return curve, int(below[0]) if below.size else int(curve.size)


def tile_groups(patches: np.ndarray, positions: np.ndarray, width: int) -> np.ndarray:
    """Tile the central ``width`` px of each group (around its centroid, from channel 0) without averaging.

    Parameters
    ----------
    patches : (n, N, N, C) complex patches of n groups on a regular grid of centroids
    positions : (n, C, 2) absolute [y, x] positions of the groups' patterns
    width : tile side (px)

    Returns
    -------
    (rows * width, cols * width) complex image
    """
    N = patches.shape[1]
    centroid = positions.mean(axis=1)
    rows, cols = np.unique(centroid[:, 0]), np.unique(centroid[:, 1])
    out = np.zeros((rows.size * width, cols.size * width), dtype=np.complex128)
    for g in range(patches.shape[0]):
        cy, cx = np.round(N / 2 + centroid[g] - positions[g, 0]).astype(int)
        block = patches[g, cy - width // 2 : cy - width // 2 + width, cx - width // 2 : cx - width // 2 + width, 0]
        r, c = np.searchsorted(rows, centroid[g, 0]), np.searchsorted(cols, centroid[g, 1])
        out[r * width : (r + 1) * width, c * width : (c + 1) * width] = block
    return out


def _scores(gt_amp, rec_amp) -> dict:
    from ptycho_exp.evaluate.frc import frc50

    curve, ref50 = frc_reference_style(gt_amp, rec_amp)
    return {
        "frc50_spec": float(frc50(gt_amp, rec_amp)),
        "frc50_reference_style": ref50,
        "frc50_reference_style_unsmoothed": frc_reference_style(gt_amp, rec_amp, sigma=0)[1],
        "curve_every_8_rings": [round(float(v), 3) for v in curve[::8]],
        "shape": list(gt_amp.shape),
    }


def _tiled(job: Path, width: int) -> dict:
    from _common import load_pinn_job

    from ptycho_exp.models.fit import predict_patches

    model, meta, ds, _ = load_pinn_job(job, samples=1)
    test = ds.test
    pred = predict_patches(model, test.diffraction, meta["norm_factor"], batch_size=64, offsets=test.offsets)
    gt = np.abs(tile_groups(test.patches, test.positions, width))
    rec = np.abs(tile_groups(pred, test.positions, width))
    return _scores(gt, rec * gt.mean() / rec.mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job", type=Path, help="a finished job folder (with recon.npz)")
    p.add_argument("--tiled", type=int, metavar="W", help="also score W px tiles per group, as PtychoPINN stitches")
    p.add_argument("--name", help="results file stem (default: none written)")
    args = p.parse_args(argv)
    path = args.job / "recon.npz"
    if not path.is_file():
        sys.exit(f"{path} not found: give the folder of a finished job")
    with np.load(path, allow_pickle=False) as d:
        gt, rec = np.abs(d["gt"]), np.abs(d["recon"])
    out = {"job": str(args.job), "stitched_as_spec": _scores(gt, rec)}
    if args.tiled:
        out[f"tiled_{args.tiled}px"] = _tiled(args.job, args.tiled)
    for k, v in out.items():
        if isinstance(v, dict):
            print(
                f"{k:18} shape {v['shape']}: FRC50 CONTRACT §6 {v['frc50_spec']:.1f}, PtychoPINN-style "
                f"{v['frc50_reference_style']} (unsmoothed {v['frc50_reference_style_unsmoothed']})"
            )
            print(f"{'':18} FRC every 8 rings: {json.dumps(v['curve_every_8_rings'])}")
    if args.name:
        print(f"wrote {write_result(args.name, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
