"""Where a trained PINN's loss sits: its Poisson NLL split by diffraction ring, against a blurred truth.

For a finished PINN job (its folder holds ``model/`` and ``job_config.json``) this rebuilds the job's test
data, predicts each position's patch, pushes it through the probe and the diffraction, and splits the
half Poisson deviance per pixel (the training loss, 0 at a perfect fit) by distance from the zero
frequency. The same is done for the true patches blurred by a Gaussian of σ = 0 … 3 px, which says what
quality a given loss in a given ring stands for. It also reports, per patch, the amplitude correlation
with the truth on the central crop and the error-to-signal power of that crop by spatial frequency, so
one sees whether the network misses detail in every patch or only after stitching.

Simulated data only (the truth is needed). Usage::

    python bench/diagnostics/residual_rings.py multirun/.../job_dir
    python bench/diagnostics/residual_rings.py JOB --samples 128 --crop 24 --name residual_rings_mine
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/_common.py
from _common import blur_amplitude, load_pinn_job, write_result

RING_EDGES = (0, 2, 4, 8, 12, 16, 20, 24, 28, 32, 46)


def ring_deviance(lam, k, edges=RING_EDGES):
    """Mean half Poisson deviance of counts ``k`` under rates ``lam`` (n, C, N, N), split by ring.

    Returns ``(total, parts)``: the mean over every pixel, and each ring's contribution to that mean
    (the parts sum to the total).
    """
    import numpy as np

    dev = lam - k - k * np.log((lam + 1e-6) / (k + 1e-6))
    N = lam.shape[-1]
    r = np.hypot(*np.meshgrid(np.arange(N) - N // 2, np.arange(N) - N // 2, indexing="ij"))
    parts = [float(dev[..., (r >= a) & (r < b)].sum(-1).mean() / (N * N)) for a, b in zip(edges[:-1], edges[1:])]
    return float(dev.mean()), parts


def error_power_ratio(pred, truth):
    """Per radial spatial frequency of square crops (n, M, M): mean |FFT(pred - truth)|² / mean |FFT(truth)|².

    Means are removed from every crop first; ring 0 is therefore 0/0 and left out.
    """
    import numpy as np

    def power(a):
        a = a - a.mean(axis=(-2, -1), keepdims=True)
        return (np.abs(np.fft.fftshift(np.fft.fft2(a), axes=(-2, -1))) ** 2).mean(0)

    m = truth.shape[-1]
    r = np.rint(np.hypot(*np.meshgrid(np.arange(m) - m // 2, np.arange(m) - m // 2, indexing="ij"))).astype(int)
    pe, pg = power(pred - truth), power(truth)
    return [float(pe[r == q].mean() / pg[r == q].mean()) for q in range(1, m // 2 + 1)]


def reflect(patches):
    """Point reflection of (..., N, N) patches about pixel (N/2, N/2), the zero of the scan frame."""
    import numpy as np

    return np.roll(patches[..., ::-1, ::-1], 1, axis=(-2, -1))


def twin_amplitudes(truth, offsets):
    """Amplitudes (n, C, N, N) of the twin solution, which fits the same patterns as ``truth``.

    With a real, centro-symmetric probe, the object point-reflected about a group's centroid gives at
    offset ``d`` the pattern the original gives at ``-d``. At gridsize 1 (``offsets`` None) that is the
    patch's own reflection, an exact ambiguity; at gridsize > 1 the twin's patch at ``d`` is the
    reflected true patch at ``-d``, and the overlap only tells the two apart by the patterns' differences.
    Channels without a partner within 0.5 px of ``-d`` get NaN.
    """
    import numpy as np

    amp = np.abs(truth)
    if offsets is None:
        return reflect(amp)
    out = np.full(amp.shape, np.nan)
    for c in range(amp.shape[1]):
        dist = np.abs(offsets + offsets[:, c:c + 1]).max(-1)  # (n, C): |d_j + d_c|
        partner = dist.argmin(1)
        ok = dist[np.arange(len(partner)), partner] <= 0.5
        out[ok, c] = reflect(amp[ok, partner[ok]])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("job", type=Path, help="a finished PINN job folder (with model/ and job_config.json)")
    p.add_argument("--samples", type=int, default=256, help="test samples (groups) used, evenly spaced")
    p.add_argument("--crop", type=int, default=24, help="central crop (px) for the per-patch comparisons")
    p.add_argument("--name", default="residual_rings")
    args = p.parse_args(argv)

    import numpy as np

    from ptycho_exp.models.fit import predict_patches
    from ptycho_exp.physics.forward import diffract, exit_wave

    model, meta, ds, pick = load_pinn_job(args.job, args.samples)
    test = ds.test
    x, truth = test.diffraction[pick], test.patches[pick]
    offsets = None if test.offsets is None else test.offsets[pick]
    nf, s = float(meta["norm_factor"]), float(meta["intensity_scale"])
    probe = ds.test_scan.probe
    N = probe.shape[-1]
    s0 = float(np.sqrt(meta["nphotons"]) / (N / 2))
    k = (s0 * nf * np.moveaxis(x, -1, 1).astype(np.float64)) ** 2

    def rates(patches, scale):
        return (scale * diffract(exit_wave(probe, np.moveaxis(patches, -1, 1)))).astype(np.float64) ** 2

    pred = predict_patches(model, x, nf, batch_size=64, offsets=offsets)
    rows = {"model": ring_deviance(rates(pred, s), k)}
    for sigma in (0, 1, 2, 3):
        rows[f"truth, blur σ={sigma}"] = ring_deviance(rates(blur_amplitude(truth, sigma, axes=(1, 2)) * nf, s0), k)

    lo = (N - args.crop) // 2
    c = slice(lo, lo + args.crop)
    a = np.abs(np.moveaxis(pred, -1, 1))[..., c, c].reshape(-1, args.crop, args.crop)
    g = (np.abs(np.moveaxis(truth, -1, 1)) * nf)[..., c, c].reshape(-1, args.crop, args.crop)
    twin = (twin_amplitudes(np.moveaxis(truth, -1, 1), offsets) * nf)[..., c, c].reshape(a.shape)
    corr = [float(np.corrcoef(ai.ravel(), gi.ravel())[0, 1]) for ai, gi in zip(a, g)]
    corr_twin = [float(np.corrcoef(ai.ravel(), ti.ravel())[0, 1]) for ai, ti in zip(a, twin) if np.isfinite(ti).all()]
    ratio = error_power_ratio(a, g)

    labels = [f"{lo_}-{hi}" for lo_, hi in zip(RING_EDGES[:-1], RING_EDGES[1:])]
    print(f"{args.job}: {len(pick)} test samples; half Poisson deviance per pixel, by diffraction ring (px)")
    print(f"{'':18s} {'total':>8s} | " + " ".join(f"{lab:>7s}" for lab in labels))
    for label, (total, parts) in rows.items():
        print(f"{label:18s} {total:8.1f} | " + " ".join(f"{v:7.1f}" for v in parts))
    print(f"per-patch amplitude r on the central {args.crop} px: median {np.median(corr):.3f} with the truth, "
          f"{np.median(corr_twin) if corr_twin else float('nan'):.3f} with its twin")
    print("error / signal power by spatial frequency (cycles per crop): "
          + " ".join(f"{q}:{v:.2f}" for q, v in enumerate(ratio, start=1)))
    write_result(args.name, {
        "job": str(args.job), "samples": int(len(pick)), "ring_edges_px": list(RING_EDGES),
        "deviance": {label: {"total": t, "by_ring": parts} for label, (t, parts) in rows.items()},
        "crop": args.crop, "patch_amp_r_median": float(np.median(corr)),
        "patch_amp_r_twin_median": float(np.median(corr_twin)) if corr_twin else None, "error_power_ratio": ratio,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
