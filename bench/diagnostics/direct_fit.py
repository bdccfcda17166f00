"""Where is the PINN's quality floor: the physics or the network? Fit free object patches, no network.

The CPU-protocol PINN plateaus at a validation loss of ~750 (a stitched image like a 3 px blur of the
truth). This script optimises free per-sample decoder outputs (amplitude logits and, unless
``--phase zero``, phase) through the PINN's own physics layers (per-group merge -> re-extract -> probe
-> diffract) with the same Poisson NLL, on gridsize-2 lines samples (2x2 blocks 4 px apart, 1e9
photons). It prints the loss and the amplitude Pearson r of each patch's central 24 px against the
ground truth as it goes, and writes ``bench/results/<name>.json``.

First it calibrates the loss against image quality: the NLL of the true patches blurred by a
Gaussian of sigma px (training samples, same physics layers) and the stitched test-object metrics of
the blurred true test patches (the job's evaluation, crop 20).

- If free patches cannot go below ~750 either, the floor is in the physics layers.
- If they reach the noise floor quickly, the network's learning is the limit; the r reached then
  says whether the data of one group fixes the object (r -> 1) or leaves it ambiguous.

Usage::

    python bench/diagnostics/direct_fit.py                      # 16 groups, 1,500 Adam steps, free phase
    python bench/diagnostics/direct_fit.py --phase zero         # amplitude-only patches (phase fixed at 0)
    python bench/diagnostics/direct_fit.py --steps 0 --name direct_fit_calibration   # the calibration only
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/_common.py
from _common import blur_amplitude, write_result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16, help="groups (samples) fitted")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--phase", choices=["free", "zero"], default="free")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--every", type=int, default=250, help="print every this many steps")
    p.add_argument("--name", default=None, help="result name (default direct_fit_<phase>)")
    args = p.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.evaluate.pipeline import evaluate_reconstruction
    from ptycho_exp.models import layers as L
    from ptycho_exp.models import losses
    from ptycho_exp.models.fit import compute_norm_factor

    N, nphotons = 64, 1e9
    data = {"object": "lines", "object_phase": "none", "N": N, "nphotons": nphotons, "gridsize": 2,
            "grouping": "block", "n_train": args.n, "probe": "ideal_disk"}
    with tempfile.TemporaryDirectory() as cache:
        ds = build_datasets(data, seed=args.seed, cache_dir=cache)
    tr = ds.train
    nf = compute_norm_factor(tr.diffraction)
    x = tf.constant(tr.diffraction * nf, tf.float32)
    offsets = tf.constant(tr.offsets, tf.float32)
    merge, extract = L.MergeGroup(N // 2, 2 * N, align_phase=True), L.ExtractGroup(N)
    illuminate, diffract = L.ProbeIllumination(N, ds.train_scan.probe, trainable=False), L.Diffract()
    s0 = math.sqrt(nphotons) / (N / 2)
    k = tf.square(s0 * x)
    rng = np.random.default_rng(args.seed)
    shape = (args.n, N // 2, N // 2, 4)
    amp_logit = tf.Variable(rng.normal(0, 0.1, shape).astype(np.float32))
    phase_raw = tf.Variable(rng.normal(0, 0.1, shape).astype(np.float32))
    variables = [amp_logit] + ([phase_raw] if args.phase == "free" else [])
    opt = tf.keras.optimizers.Adam(args.lr)
    pad = [[0, 0], [N // 4, N // 4], [N // 4, N // 4], [0, 0]]
    truth = np.abs(tr.patches) * nf
    c = slice(N // 2 - 12, N // 2 + 12)

    def forward():
        amp = tf.pad(tf.sigmoid(amp_logit), pad)
        phase = tf.pad(math.pi * tf.tanh(phase_raw), pad) if args.phase == "free" else tf.zeros_like(amp)
        patches = extract([merge([L.complex_from_amp_phase(amp, phase), offsets]), offsets])
        return patches, losses.poisson_nll(tf.square(s0 * diffract(illuminate(patches))), k)

    calibration = []
    test_patches = np.moveaxis(ds.test.patches, -1, 1).reshape(-1, N, N)

    for sigma in (0.0, 1.0, 2.0, 3.0):
        amp = diffract(illuminate(tf.constant(blur_amplitude(tr.patches, sigma, axes=(1, 2)).astype(np.complex64))))
        nll = float(losses.poisson_nll(tf.square(s0 * nf * amp), k))
        ev = evaluate_reconstruction(blur_amplitude(test_patches, sigma, axes=(1, 2)), ds.test.positions.reshape(-1, 2),
                                     ds.test_scan.object, crop=20)
        row = {"sigma_px": sigma, "nll": nll,
               **{m: float(ev.metrics[m]) for m in ("amp_ssim", "amp_frc50", "amp_pearson")}}
        calibration.append(row)
        print(f"truth blurred by sigma {sigma:.0f} px: NLL {nll:8.1f}  stitched amp SSIM {row['amp_ssim']:.3f}"
              f"  FRC50 {row['amp_frc50']:.1f}  r {row['amp_pearson']:.3f}", flush=True)

    curve = []
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        with tf.GradientTape() as tape:
            patches, loss = forward()
        if step % args.every == 0 or step == args.steps:
            a = np.abs(patches.numpy())[:, c, c]
            r = [np.corrcoef(a[i, ..., j].ravel(), truth[i, c, c, j].ravel())[0, 1]
                 for i in range(args.n) for j in range(4)]
            curve.append({"step": step, "loss": float(loss), "amp_r_median": float(np.median(r))})
            print(f"step {step:5d}  loss {float(loss):10.2f}  amplitude r (central 24 px) {np.median(r):.3f}",
                  flush=True)
        if step < args.steps:
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    name = args.name or f"direct_fit_{args.phase}"
    write_result(name, {"config": vars(args), "noise_floor_note": "half Poisson deviance; ~0.5 at the truth",
                        "calibration": calibration, "curve": curve, "seconds": time.perf_counter() - t0})
    print(f"wrote bench/results/{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
