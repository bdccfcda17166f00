"""How much of a reconstruction's phase error is patches whose constant phases disagree?

One pattern leaves its patch's constant phase free, so a gridsize-1 network's neighbouring patches may carry
levels that disagree, and stitching averages them. This script scores the same patches twice with the job's
evaluation (:func:`ptycho_exp.evaluate.pipeline.evaluate_reconstruction`, defaults of ``eval``): as predicted,
and after :func:`ptycho_exp.evaluate.phase_sync.align_patch_phases` has given each patch the constant phase
that best matches its overlapping neighbours (the data alone fix those relative levels). A large gain means
the network got each patch's shape right but not its level; no gain, that the patches themselves are wrong
(a twin, or lost detail). It also gives how far the alignment moved the levels (circular standard deviation
of the factors, rad).

Input: a job folder (its saved network predicts the test file's patches, as ``twin_patches.py`` does) or an
NPZ of any code's patches (keys ``patches`` (M, N, N) complex and ``positions`` (M, 2) [y, x]). ``--test`` is
a contract NPZ with ``objectGuess`` (e.g. from ``ptycho-exp data export``). For a job, its own recorded
metrics are listed beside the "as predicted" ones, which should equal them.

    python bench/diagnostics/phase_sync.py [LABEL=]JOB_DIR_OR_PATCHES_NPZ [...] --test TEST.npz \
        [--window 20] [--name phase_sync]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/_common.py
from _common import result_name, write_result  # noqa: E402
from twin_patches import job_patches, npz_patches, truth_and_inputs  # noqa: E402

from ptycho_exp.evaluate.phase_sync import align_patch_phases  # noqa: E402
from ptycho_exp.evaluate.pipeline import evaluate_reconstruction  # noqa: E402
from ptycho_exp.evaluate.stitch import default_crop  # noqa: E402

SHOWN = ("amp_ssim", "amp_frc50", "phase_ssim", "phase_pearson", "phase_mae", "phase_frc50")


def _scores(patches: np.ndarray, positions: np.ndarray, obj: np.ndarray) -> dict:
    m = evaluate_reconstruction(patches, positions, obj).metrics
    return {k: round(float(m[k]), 4) for k in SHOWN}


def describe(arg: str, obj: np.ndarray, test: Path, window: int | None) -> dict:
    label, _, path = arg.rpartition("=")
    path = Path(path)
    patches, pos, _ = job_patches(path, test) if path.is_dir() else npz_patches(path)
    aligned, u = align_patch_phases(patches, pos, window)
    spread = float(np.sqrt(-2.0 * np.log(min(1.0, abs(np.mean(u))))))
    row = {"label": label or str(path), "source": str(path), "n_patches": int(len(pos)),
           "window": int(window or default_crop(patches.shape[-1])), "level_shift_circular_sd_rad": round(spread, 4),
           "as_predicted": _scores(patches, pos, obj), "aligned": _scores(aligned, pos, obj)}
    if path.is_dir() and (path / "result.json").is_file():
        m = json.loads((path / "result.json").read_text())["metrics"]
        row["job_recorded"] = {k: round(float(m[k]), 4) for k in SHOWN if k in m}
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="[LABEL=]JOB_DIR or [LABEL=]PATCHES.npz")
    ap.add_argument("--test", required=True, type=Path, help="contract NPZ with objectGuess")
    ap.add_argument("--window", type=int, default=None, help="central part compared (default: the stitching crop)")
    ap.add_argument("--name", type=result_name, default="phase_sync")
    args = ap.parse_args(argv)
    obj = truth_and_inputs(args.test, args.inputs)
    if obj is None:
        return 2
    rows = [describe(a, obj, args.test, args.window) for a in args.inputs]
    for r in rows:
        b, a = r["as_predicted"], r["aligned"]
        print(f"{r['label']}: levels moved by {r['level_shift_circular_sd_rad']:.2f} rad (circular sd); "
              + ", ".join(f"{k} {b[k]:.3f} -> {a[k]:.3f}" for k in SHOWN))
    write_result(args.name, {"test": str(args.test), "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
