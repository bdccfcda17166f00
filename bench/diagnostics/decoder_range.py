"""Range of a gridsize>1 PINN's raw decoder outputs: are the sigmoid and pi*tanh activations saturated?

Loads a finished PINN job (``model/`` and ``job_config.json``), rebuilds its test data, and prints
percentiles of the amplitude (sigmoid) and phase (pi*tanh) decoder outputs per channel, before the
merge, on the central ``--crop`` px of each patch (where the probe is strong), beside the ground truth
scaled by the job's normalisation factor (the amplitude the network must produce). Saturated outputs
(amplitude at 0 or 1, phase at +-pi) pass almost no gradient.

Usage::

    python bench/diagnostics/decoder_range.py multirun/.../pinn_g2 --name decoder_range_X
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/_common.py
from _common import load_pinn_job, write_result

PERCENTILES = (1, 10, 50, 90, 99)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job", type=Path, help="a finished gridsize>1 PINN job folder")
    p.add_argument("--samples", type=int, default=128, help="test samples (groups) used, evenly spaced")
    p.add_argument("--crop", type=int, default=12, help="central crop (px) of each patch")
    p.add_argument("--name", default="decoder_range")
    args = p.parse_args(argv)

    import keras
    import numpy as np

    model, meta, ds, pick = load_pinn_job(args.job, args.samples, min_gridsize=2)
    test = ds.test
    nf = float(meta["norm_factor"])
    raw = keras.Model(model.inputs, [model.get_layer("amp_act").output, model.get_layer("phase_act").output])
    amp, phase = raw.predict([(test.diffraction[pick] * nf).astype("float32"),
                              test.offsets[pick].astype("float32")], verbose=0)

    def centre(a):  # the central crop of (n, side, side, C) arrays: decoder outputs are N/2 wide, patches N
        lo = (a.shape[1] - args.crop) // 2
        return a[:, lo:lo + args.crop, lo:lo + args.crop]

    amp, phase = centre(amp), centre(phase)
    truth = centre(np.abs(test.patches[pick])) * nf
    rows = {"amplitude": amp, "phase": phase, "truth_amplitude_x_norm": truth}
    out = {k: dict(zip((f"p{q}" for q in PERCENTILES), np.percentile(v, PERCENTILES).round(3).tolist()))
           for k, v in rows.items()}
    out["phase_saturated_fraction"] = float(np.mean(np.abs(phase) > 0.95 * np.pi))
    for k, v in out.items():
        print(f"{k:24s} {v}")
    path = write_result(args.name, {"job": str(args.job), "crop": args.crop, "samples": len(pick), **out})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
