"""Does a reconstruction disagree with the truth at large scales or in the detail?

One far-field pattern fixes neither the constant phase of its patch (``|FFT(P o e^{ic})| = |FFT(P o)|``) nor,
under a real centro-symmetric probe, the choice between the patch and its twin ``conj(o(-r))``, whose phase is
negated and point-reflected. A gridsize-1 network therefore learns each patch's phase offset only from what
the training data teach it (e.g. how phase follows amplitude); nothing in its loss pins the offsets. In the
stitched image those offsets make up the large-scale phase, on the scale of the scan step and above.

This script splits the phase (and amplitude) of a ``ptycho-exp score`` folder's ``recon.npz`` (keys ``recon``
and ``gt``, same frame) with a Gaussian low-pass of ``--sigma`` px into a **low band** (the per-pattern
levels) and a **high band** (the rest), and gives the Pearson r with the truth in each band and the ratio of
the low bands' standard deviations. Phase is taken after removing the global phase that best aligns the
reconstruction with the truth. Reading: low-band r near 1 with detail r well below is a working
reconstruction; low-band r near 0 with a small sd ratio means the offsets were lost (each patch near zero
mean phase); low-band r near -1 means the large-scale phase is inverted, as the twin's is.

    python bench/diagnostics/phase_bands.py [LABEL=]SCORE_DIR_OR_RECON_NPZ [...] [--sigma 8] [--name phase_bands]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/_common.py
from _common import result_name, write_result  # noqa: E402

from ptycho_exp.evaluate.metrics import pearson  # noqa: E402  (the job's own r: 0 where either image is constant)


def band_scores(recon: np.ndarray, truth: np.ndarray, sigma: float) -> dict:
    """Pearson r with the truth in the low band (Gaussian low-pass, ``sigma`` px), the high band and overall.

    Parameters
    ----------
    recon, truth : (H, W) real arrays in the same frame
    sigma : float
        Low-pass width in px; pick it near the scan step so the low band holds the per-pattern levels.

    Returns
    -------
    dict with ``r``, ``r_low``, ``r_high`` and ``low_sd_ratio`` (sd of the reconstruction's low band over
    the truth's).
    """
    recon, truth = np.asarray(recon, np.float64), np.asarray(truth, np.float64)
    low_r, low_t = gaussian_filter(recon, sigma), gaussian_filter(truth, sigma)
    sd_t = float(low_t.std())
    return {"r": pearson(recon, truth), "r_low": pearson(low_r, low_t),
            "r_high": pearson(recon - low_r, truth - low_t),
            "low_sd_ratio": float(low_r.std()) / sd_t if sd_t > 0 else float("nan")}


def aligned_phase(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Phase of ``recon`` after the global phase that best aligns it with ``truth`` is removed."""
    recon = np.asarray(recon, np.complex128)
    return np.angle(recon * np.exp(-1j * np.angle(np.vdot(truth, recon))))


def recon_file(arg: str) -> Path:
    """The ``recon.npz`` named by ``[LABEL=]SCORE_DIR_OR_RECON_NPZ``."""
    path = Path(arg.rpartition("=")[2])
    return path / "recon.npz" if path.is_dir() else path


def describe(arg: str, sigma: float) -> dict:
    label, _, path = arg.rpartition("=")
    f = recon_file(arg)
    with np.load(f, allow_pickle=False) as z:
        recon, gt = z["recon"], z["gt"]
    out = {"label": label or str(path), "file": str(f),
           "amplitude": band_scores(np.abs(recon), np.abs(gt), sigma)}
    phase_gt = np.angle(gt)
    out["phase"] = (band_scores(aligned_phase(recon, gt), phase_gt, sigma) if np.ptp(phase_gt) > 1e-6
                    else None)  # a flat truth phase has no correlation to measure
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recons", nargs="+", help="score folders or recon.npz files, each optionally LABEL=PATH")
    p.add_argument("--sigma", type=float, default=8.0, help="low-pass width in px (default 8)")
    p.add_argument("--name", type=result_name, default="phase_bands")
    args = p.parse_args(argv)
    missing = [str(recon_file(r)) for r in args.recons if not recon_file(r).is_file()]
    if missing:
        p.error(f"no such reconstruction: {', '.join(missing)} (pass ptycho-exp score folders or their recon.npz)")
    if not args.sigma > 0:
        p.error(f"--sigma {args.sigma}: use a low-pass width above 0 px (e.g. the scan step)")
    rows = [describe(r, args.sigma) for r in args.recons]
    print(f"{'label':<32} {'phase r  low  high  sd':>26}   {'amplitude r  low  high  sd':>28}")
    for r in rows:
        cells = []
        for key in ("phase", "amplitude"):
            s = r[key]
            cells.append("not scored (flat truth)" if s is None else
                         f"{s['r']:6.3f} {s['r_low']:6.3f} {s['r_high']:6.3f} {s['low_sd_ratio']:5.2f}")
        print(f"{r['label']:<32} {cells[0]:>26}   {cells[1]:>28}")
    write_result(args.name, {"sigma_px": args.sigma, "recons": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
