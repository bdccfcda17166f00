"""How much of a reconstruction's phase error is patches whose constant phases disagree?

One pattern leaves its patch's constant phase free, so a gridsize-1 network's neighbouring patches may carry
levels that disagree, and stitching averages them. This script scores the same patches twice with the job's
evaluation (:func:`ptycho_exp.evaluate.pipeline.evaluate_reconstruction`, defaults of ``eval``): as predicted,
and after :func:`ptycho_exp.evaluate.phase_sync.align_patch_phases` has given each patch the constant phase
that best matches its overlapping neighbours (the data alone fix those relative levels). A large gain means
the network got each patch's shape right but not its level; no gain, that the patches themselves are wrong
(a twin, or lost detail). It also gives how far the alignment moved the levels (circular standard deviation
of the factors, rad; smooth phase ramps add to it, so it is a rough size) and the alignment's own time
(``align_s``, what it adds to a reconstruction).

Input: a job folder (its saved network predicts the test file's patches, as ``twin_patches.py`` does) or an
NPZ of any code's patches (keys ``patches`` (M, N, N) complex and ``positions`` (M, 2) [y, x]). ``--test`` is
a contract NPZ with ``objectGuess`` (e.g. from ``ptycho-exp data export``). For a job, its own recorded
metrics are listed beside the "as predicted" ones, which should equal them.

With labels of the form ``ARM_s<seed>`` the result also has a ``summary`` per arm (mean, sd and values of
each score, as predicted and aligned) and, with ``--versus ARM``, every other arm's seeds against that arm's
(pairs won and the two-sided Mann-Whitney U test, ``scipy.stats.mannwhitneyu``; for MAE lower wins).

    python bench/diagnostics/phase_sync.py [LABEL=]JOB_DIR_OR_PATCHES_NPZ [...] --test TEST.npz \
        [--window 20] [--versus ARM] [--name phase_sync]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
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
    t0 = time.perf_counter()
    aligned, u = align_patch_phases(patches, pos, window)
    align_s = time.perf_counter() - t0
    spread = float(np.sqrt(-2.0 * np.log(min(1.0, abs(np.mean(u))))))
    row = {"label": label or str(path), "source": str(path), "n_patches": int(len(pos)),
           "window": int(window or default_crop(patches.shape[-1])), "level_shift_circular_sd_rad": round(spread, 4),
           "align_s": round(align_s, 4),
           "as_predicted": _scores(patches, pos, obj), "aligned": _scores(aligned, pos, obj)}
    if path.is_dir() and (path / "result.json").is_file():
        rec = json.loads((path / "result.json").read_text())
        row["job_recorded"] = {k: round(float(rec["metrics"][k]), 4) for k in SHOWN if k in rec["metrics"]}
        row["job_inference_s"] = rec.get("timings", {}).get("inference_s")  # beside align_s (same scan)
    return row


def summarise(rows: list[dict], versus: str | None) -> dict:
    """Per-arm statistics of the ``ARM_s<seed>`` rows, and each arm against ``versus``."""
    from scipy.stats import mannwhitneyu

    arms: dict[str, list[dict]] = {}
    for r in rows:
        m = re.fullmatch(r"(.+)_s(\d+)", r["label"])
        if m:
            arms.setdefault(m.group(1), []).append(r)
    out: dict = {"arms": {}}
    for arm, rs in arms.items():
        out["arms"][arm] = {stage: {} for stage in ("as_predicted", "aligned")}
        for stage, k in ((stage, k) for stage in ("as_predicted", "aligned") for k in SHOWN):
            v = [r[stage][k] for r in rs]
            out["arms"][arm][stage][k] = {"values": v, "mean": round(float(np.mean(v)), 4),
                                          "sd": round(float(np.std(v, ddof=1)), 4) if len(v) > 1 else None}
        out["arms"][arm]["seeds"] = [int(re.fullmatch(r".+_s(\d+)", r["label"]).group(1)) for r in rs]
    if versus in arms:
        out["versus"] = {"arm": versus, "what": "every seed of the arm against every seed of the compared arm: "
                         "pairs the arm wins (phase_mae: lower wins) and the two-sided Mann-Whitney U p"}
        for arm in arms:
            if arm == versus:
                continue
            out["versus"][arm] = {}
            for stage in ("as_predicted", "aligned"):
                res = {}
                for k in SHOWN:
                    a = [r[stage][k] for r in arms[arm]]
                    b = [r[stage][k] for r in arms[versus]]
                    sign = -1.0 if k.endswith("mae") else 1.0
                    won = sum(sign * (x - y) > 0 for x in a for y in b)
                    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
                    res[k] = {"pairs": len(a) * len(b), "pairs_won": int(won), "mann_whitney_p": round(p, 3)}
                out["versus"][arm][stage] = res
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="[LABEL=]JOB_DIR or [LABEL=]PATCHES.npz")
    ap.add_argument("--test", required=True, type=Path, help="contract NPZ with objectGuess")
    ap.add_argument("--window", type=int, default=None, help="central part compared (default: the stitching crop)")
    ap.add_argument("--versus", help="arm (label prefix before _s<seed>) the other arms are compared with")
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
    summary = summarise(rows, args.versus)
    for arm, st in summary["arms"].items():
        print(f"{arm} (seeds {st['seeds']}): " + ", ".join(
            f"{k} {st['as_predicted'][k]['mean']:.3f} -> {st['aligned'][k]['mean']:.3f}" for k in SHOWN))
    write_result(args.name, {"test": str(args.test), "results": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
