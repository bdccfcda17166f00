"""Does a stitched reconstruction show steps on a regular grid, where neighbouring patches disagree?

A network reconstruction is stitched from the central crops of many patches. When neighbouring patches
disagree (each predicts its own smooth level), the stitched image is a mosaic of tiles: smooth inside,
with steps at the tile edges. This script measures that on the ``recon.npz`` of a ``ptycho-exp score``
folder (or of a job's ``recon.npz``; keys ``recon`` and ``gt``, same frame): for each period ``p`` it
averages ``|amplitude difference|`` between neighbouring pixels over the columns (rows) in each phase
``k mod p``. The **seam index** is the largest of those means over their median: about 1 for an image
without a grid (the truth), well above 1 where steps repeat every ``p`` pixels at one phase.

    python bench/diagnostics/seams.py [LABEL=]SCORE_DIR_OR_RECON_NPZ [...] [--periods 5 10 20] [--name seams]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/_common.py
from _common import result_name, write_result  # noqa: E402


def seam_index(image: np.ndarray, period: int, axis: int) -> tuple[float, int]:
    """Largest over median of the mean ``|diff|`` along ``axis`` per position modulo ``period``.

    Parameters
    ----------
    image : (H, W) real array
    period : int
        Grid period in pixels (>= 2).
    axis : int
        0: steps between rows; 1: steps between columns.

    Returns
    -------
    (index, phase): the ratio and the position modulo ``period`` where the largest mean steps lie.
    """
    d = np.abs(np.diff(np.asarray(image, np.float64), axis=axis))
    d = d if axis == 1 else d.T
    per_phase = np.array([d[:, k::period].mean() for k in range(period)])
    return float(per_phase.max() / np.median(per_phase)), int(per_phase.argmax())


def describe(arg: str, periods: list[int]) -> dict:
    label, _, path = arg.rpartition("=")
    path = Path(path)
    f = path / "recon.npz" if path.is_dir() else path
    with np.load(f, allow_pickle=False) as z:
        recon, gt = np.abs(z["recon"]), np.abs(z["gt"])
    out = {"label": label or str(path), "file": str(f), "mean_abs_step": float(np.abs(np.diff(recon, axis=1)).mean()),
           "gt_mean_abs_step": float(np.abs(np.diff(gt, axis=1)).mean()), "periods": {}}
    for p in periods:
        row = {}
        for name, img in (("recon", recon), ("gt", gt)):
            (iy, ky), (ix, kx) = seam_index(img, p, 0), seam_index(img, p, 1)
            row[name] = {"rows": round(iy, 3), "cols": round(ix, 3), "phase_rows": ky, "phase_cols": kx}
        out["periods"][str(p)] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recons", nargs="+", help="score folders or recon.npz files, each optionally LABEL=PATH")
    p.add_argument("--periods", type=int, nargs="+", default=[5, 10, 20])
    p.add_argument("--name", type=result_name, default="seams")
    args = p.parse_args(argv)
    rows = [describe(r, args.periods) for r in args.recons]
    for r in rows:
        cells = "  ".join(f"p={k}: {v['recon']['rows']:.2f}/{v['recon']['cols']:.2f} (truth {v['gt']['rows']:.2f}/"
                          f"{v['gt']['cols']:.2f})" for k, v in r["periods"].items())
        print(f"{r['label']}\n  seam index rows/cols  {cells}\n  mean |step| {r['mean_abs_step']:.4f} "
              f"(truth {r['gt_mean_abs_step']:.4f})")
    write_result(args.name, {"periods": args.periods, "recons": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
