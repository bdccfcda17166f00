"""Tests for ptycho_exp.evaluate (stitching, registration, metrics, FRC, pipeline)."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptycho_exp.evaluate.frc import frc50, frc_curve, frc_threshold_crossing
from ptycho_exp.evaluate.metrics import (
    MS_SSIM_WEIGHTS,
    _ssim_terms,
    compute_metrics,
    mae,
    ms_ssim,
    mse,
    pearson,
    psnr,
    psnr255,
    remove_phase_plane,
    scale_amplitude,
    ssim,
)
from ptycho_exp.evaluate.pipeline import evaluate_object, evaluate_reconstruction, write_frc_csv
from ptycho_exp.evaluate.register import align_to_reference, apply_shift, register_images, trim
from ptycho_exp.evaluate.stitch import (
    covered_box,
    crop_to_scanned_box,
    default_crop,
    scan_weight,
    scanned_box,
    stitch_patches,
)

METRIC_KEYS = [
    f"{c}_{m}"
    for c in ("amp", "phase")
    for m in ("mae", "mse", "psnr", "psnr255", "ssim", "ms_ssim", "frc50", "frc_1_7", "pearson")
]


# ----------------------------------------------------------------------------- helpers
def _bl_object(S=128, kmax=12, seed=0):
    """Smooth, band-limited, periodic complex object (amp 0.5..0.9, phase +-1 rad)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(S) * S
    mask = np.hypot(k[:, None], k[None, :]) <= kmax
    F = np.zeros((S, S), complex)
    F[mask] = rng.normal(size=mask.sum()) + 1j * rng.normal(size=mask.sum())
    f = np.fft.ifft2(F)
    re = f.real / np.abs(f.real).max()
    im = f.imag / np.abs(f.imag).max()
    return (0.7 + 0.2 * re) * np.exp(1j * im)


def _extract(obj, positions, N):
    """patch[i, j] = obj[y - N/2 + i, x - N/2 + j] via an exact periodic Fourier shift."""
    S0, S1 = obj.shape
    F = np.fft.fft2(obj)
    ky = np.fft.fftfreq(S0)[:, None]
    kx = np.fft.fftfreq(S1)[None, :]
    out = np.empty((len(positions), N, N), np.complex64)
    for m, (y, x) in enumerate(positions):
        a = np.array([y - N / 2, x - N / 2])
        r = np.floor(a)
        fr = a - r
        sh = np.fft.ifft2(F * np.exp(2j * np.pi * (fr[0] * ky + fr[1] * kx)))  # sh[k] = obj[k + fr]
        out[m] = np.roll(sh, (-int(r[0]), -int(r[1])), axis=(0, 1))[:N, :N]
    return out


def _grid(lo, hi, step, jitter=0.0, seed=0):
    g = np.arange(lo, hi + 1e-9, step, dtype=float)
    pos = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    if jitter:
        pos = pos + np.random.default_rng(seed).uniform(-jitter, jitter, pos.shape)
    return pos


@pytest.fixture(scope="module")
def camera():
    from skimage import data

    return data.camera()[::4, ::4].astype(np.float64) / 255.0  # 128 x 128


@pytest.fixture(scope="module")
def scan():
    obj = _bl_object(128, 14, seed=3)
    N = 64
    pos = _grid(24, 104, 6, jitter=0.8, seed=1)
    return obj, pos, N, _extract(obj, pos, N)


# ----------------------------------------------------------------------------- stitch
def test_default_crop():
    assert default_crop(64) == 20
    assert default_crop(128) == 40
    assert default_crop(32) == 10


def test_stitch_integer_positions_exact():
    obj = _bl_object(96, 10, seed=1)
    pos = _grid(30, 66, 4)
    P = _extract(obj, pos, 32)
    st = stitch_patches(P, pos, 10)
    gt = crop_to_scanned_box(obj, pos, 10)
    assert st.image.shape == gt.shape == st.weight.shape
    assert np.all(st.weight > 0)
    assert st.origin == (25, 25)
    np.testing.assert_allclose(st.image, gt, atol=1e-6)


def test_stitch_subpixel_reproduces_object(scan):
    obj, pos, N, P = scan
    st = stitch_patches(P, pos, 20, chunk=50)  # several chunks
    gt = crop_to_scanned_box(obj, pos, 20)
    assert st.image.dtype == np.complex128 and st.image.shape == gt.shape
    cov = st.weight > 0
    assert cov.mean() > 0.9
    err = np.abs(st.image - gt)[cov].max() / np.abs(gt).max()
    assert err < 1e-3
    # explicit canvas: same result in a larger frame
    o, s = scanned_box(pos, 20)
    big = stitch_patches(P, pos, 20, shape=(s[0] + 4, s[1] + 6), origin=(o[0] - 2, o[1] - 3))
    np.testing.assert_allclose(big.image[2 : 2 + s[0], 3 : 3 + s[1]], st.image, atol=1e-12)
    assert big.origin == (o[0] - 2, o[1] - 3)
    # geometry-only weight equals the stitch weight; covered box is fully covered
    w, wo = scan_weight(pos, 20)
    assert wo == st.origin
    np.testing.assert_array_equal(w, st.weight)
    co, cs = covered_box(pos, 20)
    r0, c0 = co[0] - o[0], co[1] - o[1]
    assert np.all(st.weight[r0 : r0 + cs[0], c0 : c0 + cs[1]] > 0)
    assert cs[0] * cs[1] > 0.9 * s[0] * s[1]


# ----------------------------------------------------------------------------- register
def test_registration_recovers_known_shift():
    img = np.abs(_bl_object(128, 20, seed=5))  # textured, periodic
    moved = apply_shift(img, (0.3, -1.7), pad=0)  # exact circular shift
    dy, dx = register_images(img, moved, upsample_factor=50)
    assert abs(dy + 0.3) < 0.05 and abs(dx - 1.7) < 0.05  # shift that undoes it


def test_registration_camera_mirror_shift(camera):
    moved = apply_shift(camera, (0.3, -1.7))
    dy, dx = register_images(camera, moved)
    assert abs(dy + 0.3) < 0.05 and abs(dx - 1.7) < 0.05


def test_apply_shift_complex_and_roundtrip():
    obj = _bl_object(64, 8, seed=2)
    out = apply_shift(obj, (2.0, -3.0), pad=0)
    np.testing.assert_allclose(out, np.roll(obj, (2, -3), axis=(0, 1)), atol=1e-10)
    back = apply_shift(apply_shift(obj, (0.4, 0.7), pad=0), (-0.4, -0.7), pad=0)
    np.testing.assert_allclose(back, obj, atol=1e-10)
    assert np.isrealobj(apply_shift(np.abs(obj), (0.5, 0.5)))
    assert trim(np.zeros((10, 12)), 2).shape == (6, 8)


def test_align_to_reference_sign_convention():
    obj = _bl_object(96, 14, seed=4)
    recon = apply_shift(obj, (0.6, -0.9), pad=0)
    gt_a, rec_a, (dy, dx) = align_to_reference(obj, recon, trim_px=2)
    assert abs(dy + 0.6) < 0.02 and abs(dx - 0.9) < 0.02
    assert gt_a.shape == rec_a.shape == (92, 92)
    assert np.abs(gt_a - rec_a).mean() < 5e-3  # limited by the 1/50 px registration grid


# ----------------------------------------------------------------------------- metrics
def test_ssim_psnr_match_skimage(camera):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    noisy = camera + 0.05 * np.random.default_rng(0).normal(size=camera.shape)
    dr = camera.max() - camera.min()
    assert ssim(camera, noisy) == pytest.approx(structural_similarity(camera, noisy, data_range=dr), abs=1e-12)
    assert psnr(camera, noisy) == pytest.approx(peak_signal_noise_ratio(camera, noisy, data_range=dr), abs=1e-10)
    assert psnr(camera, noisy, data_range=1.0) == pytest.approx(
        peak_signal_noise_ratio(camera, noisy, data_range=1.0), abs=1e-10
    )
    # our SSIM pieces reproduce scikit-image at one scale
    assert _ssim_terms(camera, noisy, dr, 7)[0] == pytest.approx(ssim(camera, noisy), abs=1e-12)
    assert mae(camera, noisy) == pytest.approx(np.mean(np.abs(camera - noisy)))
    assert mse(camera, noisy) == pytest.approx(np.mean((camera - noisy) ** 2))
    assert psnr255(camera, noisy) == pytest.approx(10 * np.log10(255**2 / mse(camera, noisy)))
    assert math.isfinite(psnr(camera, camera)) and math.isfinite(psnr255(camera, camera))


def test_ms_ssim(camera):
    assert sum(MS_SSIM_WEIGHTS) == pytest.approx(1.0, abs=1e-3)
    assert ms_ssim(camera, camera) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(1)
    vals = [ms_ssim(camera, camera + s * rng.normal(size=camera.shape)) for s in (0.01, 0.05, 0.2)]
    assert 1.0 > vals[0] > vals[1] > vals[2] > 0.0
    # small images: fewer scales / smaller window, still finite and in [0, 1]
    for n in (40, 12, 5):
        a = camera[:n, :n]
        v = ms_ssim(a, a + 0.05 * rng.normal(size=a.shape))
        assert math.isfinite(v) and 0.0 <= v <= 1.0
        assert ms_ssim(a, a) == pytest.approx(1.0)


def test_phase_plane_removal():
    flat = np.angle(_bl_object(64, 6, seed=7))
    yy, xx = np.mgrid[0:64, 0:64]
    ramp = 0.03 * xx - 0.02 * yy + 0.7
    np.testing.assert_allclose(remove_phase_plane(flat + ramp), remove_phase_plane(flat), atol=1e-6)
    assert np.abs(remove_phase_plane(ramp)).max() < 1e-9
    m = np.zeros((64, 64), bool)
    m[10:40, 5:50] = True
    assert np.abs(remove_phase_plane(ramp, mask=m)).max() < 1e-9


def test_scale_amplitude_and_pearson():
    a = np.linspace(1, 2, 100).reshape(10, 10)
    assert np.mean(scale_amplitude(3 * a, a)) == pytest.approx(np.mean(a))
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, np.ones_like(a)) == 0.0  # flat collapse: finite, no NaN


def test_compute_metrics_keys_finite():
    obj = _bl_object(64, 10, seed=8)
    noisy = obj + 0.05 * np.random.default_rng(2).normal(size=obj.shape)
    m = compute_metrics(obj, noisy)
    assert set(METRIC_KEYS) <= set(m)
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    perfect = compute_metrics(obj, 2.0 * obj * np.exp(1j * 2.5))  # scale + global phase
    assert perfect["amp_ssim"] == pytest.approx(1.0) and perfect["phase_ssim"] == pytest.approx(1.0)
    assert perfect["amp_mae"] < 1e-9 and perfect["phase_mae"] < 1e-9
    assert all(math.isfinite(v) for v in perfect.values())
    # amplitude-only ground truth and a flat reconstruction: still finite
    amp_only = np.abs(obj).astype(np.complex128)
    flat = compute_metrics(amp_only, np.ones_like(amp_only))
    assert all(math.isfinite(v) for v in flat.values())
    assert flat["amp_pearson"] == 0.0


# ----------------------------------------------------------------------------- FRC
def test_frc_self_and_noise():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(128, 128))
    rings, f = frc_curve(a, a)
    assert rings.shape == f.shape == (65,)
    np.testing.assert_allclose(f, 1.0, atol=1e-12)
    assert frc_threshold_crossing(f, 0.5) == 64.0  # never drops: Nyquist
    b = rng.normal(size=(128, 128))
    assert frc50(a, b) <= 2.0
    _, fa = frc_curve(a, a, apodize="hann")
    np.testing.assert_allclose(fa[1:], 1.0, atol=1e-12)
    _, fr = frc_curve(rng.normal(size=(60, 80)), rng.normal(size=(60, 80)))  # non-square
    assert fr.shape == (31,)


def test_frc_crossing_interpolation():
    f = np.array([1.0, 0.9, 0.7, 0.3, 0.1])
    assert frc_threshold_crossing(f, 0.5) == pytest.approx(2.5)
    assert frc_threshold_crossing(f, 1 / 7) == pytest.approx(3 + (0.3 - 1 / 7) / 0.2)
    # ring 0 (DC, fixed by normalisation) never decides: uncorrelated from ring 1 on -> crossing in (0, 1)
    assert 0.0 < frc_threshold_crossing(np.array([0.2, 0.1]), 0.5) < 1.0
    assert frc_threshold_crossing(np.array([-1.0, 0.9, 0.8]), 0.5) == 2.0


def test_frc50_ignores_the_sign_of_the_dc_term():
    """Two plane-removed phases with near-zero means of opposite sign: ring 0 is -1, FRC50 still high."""
    rng = np.random.default_rng(3)
    img = gaussian_filter(rng.normal(size=(96, 96)), 2)
    a, b = img - img.mean() + 1e-6, img - img.mean() - 1e-6
    _, curve = frc_curve(a, b)
    assert curve[0] < 0
    assert frc50(a, b) > 40


# ----------------------------------------------------------------------------- pipeline
def test_evaluate_reconstruction_perfect_and_noisy(scan, tmp_path):
    obj, pos, N, P = scan
    res = evaluate_reconstruction(P, pos, obj, 20)
    m = res.metrics
    assert set(METRIC_KEYS + ["reg_dy", "reg_dx"]) <= set(m)
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert abs(m["reg_dy"]) < 0.05 and abs(m["reg_dx"]) < 0.05
    assert m["amp_ssim"] > 0.999 and m["phase_ssim"] > 0.999
    assert m["amp_ms_ssim"] > 0.999 and m["amp_pearson"] > 0.999
    assert res.recon.shape == res.gt.shape
    assert set(res.frc) == {"rings", "amp", "phase"}

    rng = np.random.default_rng(5)
    noise = (rng.normal(size=P.shape) + 1j * rng.normal(size=P.shape)) * 0.1
    res_n = evaluate_reconstruction((P + noise).astype(np.complex64), pos, obj, 20)
    mn = res_n.metrics
    assert all(math.isfinite(v) for v in mn.values())
    assert mn["amp_ssim"] < m["amp_ssim"] - 0.01 and mn["phase_ssim"] < m["phase_ssim"] - 0.01
    assert mn["amp_mae"] > m["amp_mae"]

    path = tmp_path / "frc.csv"
    write_frc_csv(path, res.frc)
    lines = path.read_text().splitlines()
    assert lines[0] == "ring,frc_amp,frc_phase" and len(lines) == 1 + len(res.frc["rings"])
    assert not (tmp_path / "frc.csv.tmp").exists()


def test_evaluate_object_same_path(scan):
    obj, pos, N, P = scan
    # whole-object reconstruction shifted by a known amount, in a larger frame
    shifted = apply_shift(obj, (0.4, -0.6), pad=0)
    big = np.zeros((140, 140), complex)
    big[5:133, 7:135] = shifted
    res = evaluate_object(big, (-5, -7), pos, obj, crop=20)
    assert res.metrics["reg_dy"] == pytest.approx(-0.4, abs=0.05)
    assert res.metrics["reg_dx"] == pytest.approx(0.6, abs=0.05)
    assert res.metrics["amp_ssim"] > 0.99
    # the iterative path and the patch path score the same box identically for perfect data
    ref = evaluate_reconstruction(P, pos, obj, 20)
    same = evaluate_object(obj, (0, 0), pos, obj, crop=20)
    assert same.gt.shape == ref.gt.shape and same.origin == ref.origin
    assert same.metrics["amp_ssim"] == pytest.approx(ref.metrics["amp_ssim"], abs=1e-3)


def test_figures_smoke(scan, tmp_path):
    from ptycho_exp.evaluate.figures import plot_comparison, plot_frc

    obj, pos, N, P = scan
    res = evaluate_reconstruction(P[:, ::1], pos, obj, 20)
    p1 = tmp_path / "cmp.png"
    plot_comparison(p1, res.gt, {"PINN": res.recon, "baseline": res.recon * 0.9})
    p2 = tmp_path / "frc.png"
    plot_frc(p2, res.frc)
    plot_frc(tmp_path / "frc2.png", {"PINN": res.frc, "baseline": res.frc})
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_implausible_registration_is_rejected_not_a_crash():
    """A reconstruction unrelated to the ground truth (here a far-shifted copy) must not crash the trim."""
    rng = np.random.default_rng(0)
    gt = gaussian_filter(rng.normal(size=(42, 106)), 2)
    far = np.roll(gt, (19, 40), axis=(0, 1))
    g, r, shift = align_to_reference(gt, far, upsample_factor=10)
    assert np.isnan(shift[0]) and np.isnan(shift[1])
    assert g.shape == r.shape == (38, 102)
    g, r, shift = align_to_reference(gt, np.roll(gt, (2, -3), axis=(0, 1)), upsample_factor=10)
    assert shift == pytest.approx((-2.0, 3.0), abs=0.1)
