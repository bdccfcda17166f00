"""Tests for ptycho_exp.evaluate (stitching, registration, metrics, FRC, pipeline)."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptycho_exp.evaluate.frc import frc50, frc_curve, frc_threshold_crossing
from ptycho_exp.evaluate.metrics import (
    METRICS,
    MS_SSIM_WEIGHTS,
    compute_metrics,
    ground_truth_problems,
    higher_is_better,
    mae,
    ms_ssim,
    ms_ssim_scales,
    mse,
    null_metrics,
    null_reconstruction,
    pearson,
    psnr,
    psnr255,
    remove_phase_plane,
    scale_amplitude,
    ssim,
)
from ptycho_exp.evaluate.pipeline import (
    EvalResult,
    evaluate_object,
    evaluate_reconstruction,
    metrics_validity,
    write_frc_csv,
)
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
] + ["phase_ssim_ref", "phase_ms_ssim_ref"]


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
    assert mae(camera, noisy) == pytest.approx(np.mean(np.abs(camera - noisy)))
    assert mse(camera, noisy) == pytest.approx(np.mean((camera - noisy) ** 2))
    assert psnr255(camera, noisy) == pytest.approx(10 * np.log10(255**2 / mse(camera, noisy)))
    assert math.isfinite(psnr(camera, camera)) and math.isfinite(psnr255(camera, camera))


def test_ms_ssim_basic_properties(camera):
    assert sum(MS_SSIM_WEIGHTS) == pytest.approx(1.0, abs=1e-3)
    assert ms_ssim(camera, camera) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(1)
    vals = [ms_ssim(camera, camera + s * rng.normal(size=camera.shape)) for s in (0.01, 0.05, 0.2)]
    assert 1.0 > vals[0] > vals[1] > vals[2] > 0.0
    # scales that fit an 11 px window after each (rounded-up) halving
    assert [ms_ssim_scales((n, n)) for n in (5, 11, 20, 21, 40, 41, 80, 81, 160, 161, 500)] == \
        [1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # below the window: one scale, the largest odd window that fits; finite and in [0, 1]
    for n in (40, 12, 5):
        a = camera[:n, :n]
        v = ms_ssim(a, a + 0.05 * rng.normal(size=a.shape))
        assert math.isfinite(v) and 0.0 <= v <= 1.0
        assert ms_ssim(a, a) == pytest.approx(1.0)


def _pair(shape, seed, noise=0.3):
    """A smooth image in [-0.5, 0.5] and a noisy copy. Zero-centred: TensorFlow computes in float32, and
    its local variances ``E[x^2] - E[x]^2`` lose ~1e-5 of precision on images far from zero mean."""
    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.normal(size=shape), 2)
    a = (a - a.min()) / (a.max() - a.min()) - 0.5
    return a, a + noise * gaussian_filter(rng.normal(size=shape), 1)


@pytest.mark.parametrize("shape", [(176, 176), (161, 190), (200, 183), (256, 256)])
def test_ms_ssim_equals_tensorflow(shape):
    """Five scales, standard weights: ms_ssim == tf.image.ssim_multiscale (TF computes in float32)."""
    tf = pytest.importorskip("tensorflow")
    for seed, noise in ((0, 0.05), (1, 0.4)):
        a, b = _pair(shape, seed, noise)
        dr = float(a.max() - a.min())
        want = float(tf.image.ssim_multiscale(a[..., None], b[..., None], max_val=dr))
        assert ms_ssim_scales(shape) == 5
        assert ms_ssim(a, b, data_range=dr) == pytest.approx(want, abs=1e-5)
        # the default data range is the ground truth's
        assert ms_ssim(a, b) == pytest.approx(want, abs=1e-5)
    assert 0.1 < want < 0.99  # a pair that exercises the formula


@pytest.mark.parametrize("shape", [(12, 12), (33, 40), (64, 80), (100, 100), (150, 170)])
def test_ms_ssim_small_images_use_fewer_renormalised_scales(shape):
    """Too small for five scales (TF refuses them): the scales that fit, with the first weights
    renormalised -- i.e. tf.image.ssim_multiscale with those power factors."""
    tf = pytest.importorskip("tensorflow")
    a, b = _pair(shape, 2, 0.3)
    dr = float(a.max() - a.min())
    s = ms_ssim_scales(shape)
    assert s < 5
    w = np.asarray(MS_SSIM_WEIGHTS[:s]) / np.sum(MS_SSIM_WEIGHTS[:s])
    want = float(tf.image.ssim_multiscale(a[..., None], b[..., None], max_val=dr, power_factors=list(w)))
    assert ms_ssim(a, b, data_range=dr) == pytest.approx(want, abs=1e-5)
    # and not what the unnormalised truncated weights would give
    raw = float(tf.image.ssim_multiscale(a[..., None], b[..., None], max_val=dr,
                                         power_factors=list(MS_SSIM_WEIGHTS[:s])))
    assert abs(raw - want) > 1e-3


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
    # amplitude-only ground truth and a flat reconstruction: amplitude finite, phase undefined (NaN)
    amp_only = np.abs(obj).astype(np.complex128)
    flat = compute_metrics(amp_only, np.ones_like(amp_only))
    assert all(math.isfinite(v) for k, v in flat.items() if k.startswith("amp_"))
    assert all(math.isnan(v) for k, v in flat.items() if k.startswith("phase_"))
    assert flat["amp_pearson"] == 0.0
    assert set(ground_truth_problems(amp_only)) == {"phase"}
    # a strong phase (+-3 rad): the null stays a constant image, phase correlation exactly 0
    strong = np.abs(obj) * np.exp(3j * np.angle(obj) / np.abs(np.angle(obj)).max())
    assert null_metrics(strong)["phase_pearson"] == 0.0 and null_metrics(strong)["amp_pearson"] == 0.0
    assert "phase" in ground_truth_problems(amp_only)["phase"]


def _weak_phase_object(S=128, peak=0.1, seed=4):
    """Constant amplitude 1, smooth phase spanning +-peak rad."""
    rng = np.random.default_rng(seed)
    ph = gaussian_filter(rng.normal(size=(S, S)), 3, mode="wrap")
    ph = peak * (2 * (ph - ph.min()) / (ph.max() - ph.min()) - 1)
    return np.exp(1j * ph)


def test_flat_phase_of_a_weak_phase_object_scores_low_on_the_headline_scale():
    """A +-0.1 rad object: a flat reconstruction looks excellent on the reference publication's
    (phi+pi)/2pi scale, and poor on the ground truth's own range (the headline)."""
    obj = _weak_phase_object(peak=0.1)
    flat = compute_metrics(obj, np.ones_like(obj))
    assert flat["phase_ssim"] < 0.2 and flat["phase_ms_ssim"] < 0.3
    assert flat["phase_ssim_ref"] > 0.9 and flat["phase_ms_ssim_ref"] > 0.9
    assert flat["phase_pearson"] == 0.0
    # a faithful reconstruction scores high on both scales, so the headline is not simply harsher
    noisy = obj * np.exp(1j * 0.005 * gaussian_filter(np.random.default_rng(1).normal(size=obj.shape), 1))
    good = compute_metrics(obj, noisy)
    assert good["phase_ssim"] > 0.9 and good["phase_ssim_ref"] > 0.99
    assert good["phase_ms_ssim"] > 0.9
    # headline phase PSNR is on the ground-truth range too: flat = 10 log10(range^2 / mean(phase^2))
    gt_ph = remove_phase_plane(np.angle(obj))
    expected = 10 * np.log10(np.ptp(gt_ph) ** 2 / np.mean(gt_ph**2))
    assert flat["phase_psnr"] == pytest.approx(expected, abs=0.05)


def test_constant_ground_truth_gives_nan_with_a_reason_never_a_perfect_score():
    zeros = np.zeros((64, 64), complex)  # a scan off the object: ground truth all zeros
    for recon in (zeros, np.ones_like(zeros), _bl_object(64, 8)):
        m = compute_metrics(zeros, recon)
        assert all(math.isnan(v) for v in m.values()), m
    reasons = ground_truth_problems(zeros)
    assert set(reasons) == {"amp", "phase"} and "off the object" in reasons["phase"]
    # nearly constant: std 1e-9 of a mean of 1
    almost = 1.0 + 1e-9 * np.random.default_rng(0).normal(size=(64, 64)) + 0j
    assert "amp" in ground_truth_problems(almost)
    assert math.isnan(compute_metrics(almost, almost)["amp_ssim"])
    # the pipeline: ground truth that is zero where the scan is -> metrics invalid, with the reason
    obj = _bl_object(128, 10)
    pos = _grid(40, 88, 8)
    P = _extract(obj, pos, 32)
    ev = evaluate_reconstruction(P, pos, np.zeros_like(obj), crop=10)
    assert math.isnan(ev.metrics["amp_ssim"]) and math.isnan(ev.metrics["phase_ssim"])
    assert math.isnan(ev.metrics["null_amp_ssim"])
    valid, reason = metrics_validity(ev)
    assert not valid and "constant" in reason and "off the object" in reason
    assert set(ev.notes) == {"amp", "phase"}


def test_low_coverage_marks_the_metrics_invalid():
    base = {"amp_ssim": 0.9, "phase_ssim": 0.9}
    ok = EvalResult(metrics={**base, "coverage": 0.8}, recon=np.zeros((2, 2)), gt=np.zeros((2, 2)))
    assert metrics_validity(ok, 0.5) == (True, None)
    low = EvalResult(metrics={**base, "coverage": 0.3}, recon=np.zeros((2, 2)), gt=np.zeros((2, 2)))
    valid, reason = metrics_validity(low, 0.5)
    assert not valid and "30%" in reason and "eval.min_coverage=0.5" in reason
    assert metrics_validity(low, 0.25)[0]
    # one unusable channel alone leaves the job valid (its metrics are NaN, the note says why)
    one = EvalResult(metrics={**base, "coverage": 1.0}, recon=np.zeros((2, 2)), gt=np.zeros((2, 2)),
                     notes={"phase": "flat"})
    assert metrics_validity(one)[0]


def test_null_reference_is_scored_on_the_same_pixels(scan):
    obj, pos, N, P = scan
    ev = evaluate_reconstruction(P, pos, obj, 20)
    m = ev.metrics
    assert {f"null_{k}" for k in METRIC_KEYS} <= set(m)
    # the null is the best constant image on the job's scored pixels
    direct = null_metrics(ev.gt)
    for k, v in direct.items():
        assert m[f"null_{k}"] == pytest.approx(v, abs=1e-12), k
    # and equals scoring the constant image through the normal path (no phase wrap in this object)
    through = compute_metrics(ev.gt, null_reconstruction(ev.gt))
    for k, v in direct.items():
        assert through[k] == pytest.approx(v, abs=1e-9), k
    # any constant scores the same as the null (scale and global phase are normalised away)
    other = compute_metrics(ev.gt, np.full(ev.gt.shape, 3.0 * np.exp(0.7j)))
    for k in ("amp_ssim", "amp_mae", "phase_ssim", "phase_mae", "amp_pearson"):
        assert other[k] == pytest.approx(direct[k], abs=1e-9), k
    # a perfect reconstruction beats it by far in both channels; the null knows nothing of the object
    for ch in ("amp", "phase"):
        assert m[f"{ch}_ssim"] > 0.99 and m[f"null_{ch}_ssim"] < 0.3
        assert m[f"{ch}_mae"] < 0.1 * m[f"null_{ch}_mae"]
        assert m[f"null_{ch}_pearson"] == 0.0
    # the iterative path carries the null too
    assert "null_amp_ssim" in evaluate_object(obj, (0, 0), pos, obj, crop=20).metrics


def test_metric_directions_have_one_home():
    assert set(METRIC_KEYS) <= set(METRICS)
    assert not higher_is_better("amp_mae") and not higher_is_better("phase_mse")
    assert higher_is_better("phase_ssim") and higher_is_better("phase_ssim_ref")
    assert higher_is_better("amp_frc50") and higher_is_better("phase_psnr255")
    assert not higher_is_better("null_amp_mae") and higher_is_better("ref_phase_ms_ssim")
    with pytest.raises(KeyError):
        higher_is_better("train_s")


def test_scan_off_the_object_is_refused(tmp_path):
    from ptycho_exp.config import ConfigError
    from ptycho_exp.validate import check_npz_scan_on_object, check_scan_on_object, window_extent
    from ptycho_exp.data.npz import contract_header

    pos = _grid(16, 112, 16)  # 32 px windows on a 128 px object: edge to edge
    assert window_extent(pos, 32) == (0.0, 128.0, 0.0, 128.0)
    check_scan_on_object(pos, 32, (128, 128), "data.test_path='t.npz'")
    for shift, axis in ((60.0, 1), (1e6, 1), (-20.0, 0)):
        moved = pos.copy()
        moved[:, axis] += shift
        with pytest.raises(ConfigError) as info:
            check_scan_on_object(moved, 32, (128, 128), "data.test_path='t.npz'")
        msg = str(info.value)
        assert "data.test_path='t.npz'" in msg and "xcoords/ycoords" in msg and "128×128" in msg
        assert "\n" not in msg and "fix:" in msg
    # the NPZ check reads only the coordinates and the header
    obj = _bl_object(128, 10).astype(np.complex64)
    arrays = {"diffraction": np.ones((len(pos), 32, 32), np.float32), "probeGuess": np.ones((32, 32), np.complex64),
              "objectGuess": obj, "ycoords": pos[:, 0], "xcoords": pos[:, 1]}
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, **arrays)
    np.savez(bad, **{**arrays, "xcoords": pos[:, 1] + 1e6})
    check_npz_scan_on_object(str(good), contract_header(good))
    with pytest.raises(ConfigError, match="off the object"):
        check_npz_scan_on_object(str(bad), contract_header(bad))


def test_scan_off_the_object_exits_2_before_any_job(tmp_path):
    """data=npz with a test scan moved off its objectGuess: one line naming the coordinates, exit 2,
    no ok result and no job output."""
    import json

    from tests.helpers.cli import run_cli

    pos = _grid(16, 112, 8)
    obj = _bl_object(128, 10).astype(np.complex64)
    rng = np.random.default_rng(0)
    arrays = {"diffraction": rng.random((len(pos), 32, 32)).astype(np.float32),
              "probeGuess": np.ones((32, 32), np.complex64), "objectGuess": obj,
              "ycoords": pos[:, 0], "xcoords": pos[:, 1] + 60.0}
    path = tmp_path / "shifted.npz"
    np.savez(path, **arrays)
    run = tmp_path / "run"
    proc = run_cli(["data=npz", f"data.train_path={path}", f"data.test_path={path}", "data.N=32", "data.n_train=16",
                    "eval.figures=false", f"hydra.run.dir={run}"], tmp_path, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "data.test_path" in lines[0] and "xcoords/ycoords" in lines[0], proc.stderr
    files = sorted(p.name for p in run.rglob("*") if p.is_file()) if run.exists() else []
    # only Hydra's own records and the failed result: no job ran (no job config, scores or reconstruction)
    assert set(files) <= {"config.yaml", "hydra.yaml", "overrides.yaml", "job.log", "result.json"}, files
    if "result.json" in files:
        res = json.loads((run / "result.json").read_text())
        assert res["status"] == "failed" and res["error_type"] == "ConfigError"


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


def test_figure_panel_scores_are_the_job_metrics_and_none_for_a_flat_truth():
    """A panel title must never show a score the job does not report (a flat phase scores ~1 by SSIM)."""
    from ptycho_exp.evaluate.figures import panel_scores

    rng = np.random.default_rng(3)
    amp = 0.5 + 0.3 * gaussian_filter(rng.random((60, 60)), 2)
    phase = gaussian_filter(rng.normal(size=(60, 60)), 3)
    noisy = lambda a: a * (1 + 0.05 * rng.normal(size=a.shape))  # noqa: E731
    # amplitude-only truth: the recon's phase is near flat too, and raw SSIM would call it near perfect
    gt = amp.astype(np.complex128)
    rec = noisy(amp) * np.exp(1j * 1e-3 * rng.normal(size=amp.shape))
    sa, sp = panel_scores(gt, rec)
    m = compute_metrics(gt, rec)
    assert math.isnan(sp) and math.isnan(m["phase_ssim"])
    assert sa == m["amp_ssim"] and 0.0 < sa < 0.999
    # a phase object: both panels carry exactly the scored values
    gt = amp * np.exp(1j * phase)
    rec = noisy(amp) * np.exp(1j * (phase + 0.1 * rng.normal(size=amp.shape)))
    m = compute_metrics(gt, rec)
    assert panel_scores(gt, rec) == (m["amp_ssim"], m["phase_ssim"])
    assert 0.0 < m["phase_ssim"] < 1.0


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


def test_an_all_zero_reconstruction_scores_no_better_than_a_flat_image():
    """angle(0) is 0: a zero reconstruction must not inherit the ground truth's phase."""
    from scipy.ndimage import gaussian_filter

    from ptycho_exp.evaluate.metrics import compute_metrics

    rng = np.random.default_rng(0)
    amp = 0.6 + 0.4 * gaussian_filter(rng.normal(size=(96, 96)), 3)
    gt = amp * np.exp(3j * gaussian_filter(rng.normal(size=(96, 96)), 3))
    flat = compute_metrics(gt, np.full_like(gt, 0.8))
    for recon in (np.zeros_like(gt), np.where(rng.random(gt.shape) < 0.5, 0.8 + 0j, 0j)):
        m = compute_metrics(gt, recon)
        assert m["phase_ssim"] <= flat["phase_ssim"] + 0.05 and m["phase_pearson"] < 0.2
        assert m["phase_mae"] >= 0.9 * flat["phase_mae"]
