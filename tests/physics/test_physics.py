"""Physics layer (docs/CONTRACT.md §1-3): forward model, noise, probes, objects, scans, extraction and grouping.

Pure numpy; no TensorFlow. Every figure asserted here is computed from the arrays, never hard-coded
output of the code under test.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ptycho_exp.config import SKIMAGE_OBJECTS
from ptycho_exp.physics import forward, objects, probe, scan


def _random_wave(rng, shape):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


# --------------------------------------------------------------------------- forward model

@pytest.mark.parametrize("N", [16, 64])
def test_parseval_holds_for_the_unitary_diffraction(N):
    rng = np.random.default_rng(0)
    psi = _random_wave(rng, (8, N, N)) * probe.make_probe("ideal_disk", N)
    X = forward.diffract(psi)
    assert X.shape == psi.shape and X.dtype == np.float32 and np.all(X >= 0)
    lhs = np.sum(X.astype(np.float64) ** 2, axis=(1, 2))
    rhs = np.sum(np.abs(psi.astype(np.complex128)) ** 2, axis=(1, 2))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-6)
    np.testing.assert_allclose(forward.pattern_energy(X), rhs, rtol=1e-6)


def test_zero_frequency_sits_at_the_centre_pixel():
    N = 32
    flat = np.full((N, N), 2.0 + 1.0j, dtype=np.complex64)
    X = forward.diffract(flat)
    assert np.unravel_index(np.argmax(X), X.shape) == (N // 2, N // 2)
    # all the energy of a constant wave is in the DC pixel: |sum psi| / N
    assert X[N // 2, N // 2] == pytest.approx(abs(2.0 + 1.0j) * N, rel=1e-6)
    assert np.sum(X ** 2) - X[N // 2, N // 2] ** 2 < 1e-6 * np.sum(X ** 2)
    # a tilt of one cycle per patch along x puts the peak one pixel right of the centre
    ramp = np.exp(2j * np.pi * np.arange(N) / N)[None, :] * np.ones((N, 1))
    X = forward.diffract(ramp)
    assert np.unravel_index(np.argmax(X), X.shape) == (N // 2, N // 2 + 1)


def test_diffract_matches_the_spec_formula():
    rng = np.random.default_rng(1)
    psi = _random_wave(rng, (3, 16, 16)).astype(np.complex128)
    expected = np.sqrt(np.fft.fftshift(np.abs(np.fft.fft2(psi)) ** 2, axes=(-2, -1)) / 16 ** 2)
    np.testing.assert_allclose(forward.diffract(psi), expected, rtol=1e-5, atol=1e-6)


def test_the_twin_image_has_the_same_pattern_under_a_real_symmetric_probe():
    # conj(O(-r)) under a real probe symmetric about pixel N/2 gives |FFT| of conj(psi(-r)), which is |FFT(psi)|:
    # one pattern cannot tell an object from its twin (the g=1 phase ambiguity); a different object can.
    rng = np.random.default_rng(3)
    N = 64
    P = probe.make_probe("ideal_disk", N)
    assert np.allclose(P.imag, 0) and np.allclose(P, np.roll(P[::-1, ::-1], 1, axis=(0, 1)))
    obj = _random_wave(rng, (N, N))
    twin = np.conj(np.roll(obj[::-1, ::-1], 1, axis=(0, 1)))
    X = forward.diffract(forward.exit_wave(P, obj))
    np.testing.assert_allclose(forward.diffract(forward.exit_wave(P, twin)), X, rtol=1e-4, atol=1e-4 * X.max())
    other = forward.diffract(forward.exit_wave(P, _random_wave(rng, (N, N))))
    assert np.abs(other - X).max() > 0.1 * X.max()


def _pattern_stack(n, N=64, seed=0):
    """n noise-free amplitudes of the ideal-disk probe over different patches of a lines object."""
    rng = np.random.default_rng(seed)
    obj = objects.make_object("lines", 160, rng, phase="tanh")
    pos = scan.random_positions(160, N, n, rng)
    pos = np.rint(pos)  # integer positions: plain crops (fast)
    return forward.diffract(forward.exit_wave(probe.make_probe("ideal_disk", N), scan.extract_patches(obj, pos, N)))


@pytest.mark.parametrize("nphotons", [1e4, 1e9])
def test_poisson_mean_counts_per_pattern_match_nphotons(nphotons):
    X = _pattern_stack(1000)
    s = forward.photon_scale(X, nphotons)
    noisy = forward.poisson_noise(X, nphotons, np.random.default_rng(2))
    assert noisy.shape == X.shape and noisy.dtype == np.float32
    counts = (noisy.astype(np.float64) * s) ** 2
    # the stored values are sqrt(counts)/s: whole photon counts once scaled back
    # (float32 storage: relative error <= 2**-24 on sqrt(counts), so <= 1.2e-7 on counts)
    assert np.all(np.abs(counts - np.rint(counts)) <= 1e-3 + 3e-7 * counts)
    mean_total = float(np.mean(np.sum(counts, axis=(1, 2))))
    assert abs(mean_total / nphotons - 1) < 0.01
    # the noise is unbiased on intensity at every pixel on average: mean noisy energy ≈ noise-free
    assert forward.mean_pattern_energy(noisy) == pytest.approx(forward.mean_pattern_energy(X), rel=0.01)


def test_poisson_variance_equals_mean_per_pixel():
    # one pattern repeated: each pixel's counts across repeats are Poisson(λ), so var ≈ mean
    X = np.repeat(_pattern_stack(1, N=32), 4000, axis=0)
    nphotons = 2e4
    s = forward.photon_scale(X, nphotons)
    counts = (forward.poisson_noise(X, nphotons, np.random.default_rng(3)).astype(np.float64) * s) ** 2
    lam = (X[0].astype(np.float64) * s) ** 2
    bright = lam > 20
    assert bright.sum() > 30
    mean, var = counts.mean(axis=0)[bright], counts.var(axis=0, ddof=1)[bright]
    np.testing.assert_allclose(mean, lam[bright], rtol=0.1)
    ratio = var / mean  # the Fano factor: 1 for Poisson; each estimate has sd ≈ sqrt(2/4000)
    assert abs(np.median(ratio) - 1) < 0.03
    assert np.all(np.abs(ratio - 1) < 0.2)
    slope = np.polyfit(mean, var, 1)[0]
    assert abs(slope - 1) < 0.05


def test_poisson_noise_is_seeded_and_rejects_empty_signal():
    X = _pattern_stack(20, N=32)
    a = forward.poisson_noise(X, 1e5, np.random.default_rng(7))
    b = forward.poisson_noise(X, 1e5, np.random.default_rng(7))
    c = forward.poisson_noise(X, 1e5, np.random.default_rng(8))
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    with pytest.raises(ValueError, match="zero"):
        forward.poisson_noise(np.zeros((2, 8, 8), np.float32), 1e4, np.random.default_rng(0))


def test_normalisation_uses_float64_sums_for_uint16():
    rng = np.random.default_rng(4)
    N = 32
    counts = rng.integers(30000, 65535, size=(50, N, N)).astype(np.uint16)  # Σx² overflows any 32-bit sum
    f = forward.normalisation_factor(counts, N)
    exact = np.mean(np.sum(counts.astype(np.float64) ** 2, axis=(1, 2)))
    assert f == pytest.approx((N / 2) / np.sqrt(exact), rel=1e-12)
    normed = counts.astype(np.float64) * f
    assert np.mean(np.sum(normed ** 2, axis=(1, 2))) == pytest.approx((N / 2) ** 2, rel=1e-9)
    assert forward.model_intensity_scale(1e4, 64) == pytest.approx(100 / 32)


# --------------------------------------------------------------------------- probes

def test_ideal_disk_probe_is_a_22px_real_disk_centred():
    P = probe.ideal_disk_probe(64)
    assert P.shape == (64, 64) and P.dtype == np.complex64
    assert np.all(P.imag == 0)
    assert abs(probe.probe_diameter(P) - 22) < 1.0
    mag = np.abs(P)
    yy, xx = np.mgrid[:64, :64]
    assert np.sum(yy * mag) / mag.sum() == pytest.approx(32, abs=1e-4)  # centred on (N/2, N/2)
    assert np.sum(xx * mag) / mag.sum() == pytest.approx(32, abs=1e-4)
    # flat top, smooth (σ=1 px) edge: the centre row crosses 1/2 within half a pixel of r = 11
    row = mag[32]
    assert row[32] == pytest.approx(1.0, abs=1e-6)
    half = np.nonzero(row > 0.5)[0]
    assert abs((half[-1] - half[0] + 1) - 22) <= 1
    # symmetric about the centre pixel
    np.testing.assert_allclose(mag[32, 32 - 15:32], mag[32, 33:33 + 15][::-1], atol=1e-6)


@pytest.mark.parametrize("name", ["ideal_disk", "gaussian", "defocused"])
@pytest.mark.parametrize("probe_scale", [4.0, 2.5])
def test_probe_normalisation_matches_spec(name, probe_scale):
    N = 64
    P = probe.make_probe(name, N, probe_scale=probe_scale, defocus=3.0)
    assert P.shape == (N, N) and P.dtype == np.complex64
    yy, xx = np.mgrid[:N, :N]
    M = np.hypot(yy - N / 2, xx - N / 2) < N / 4  # disk of radius N/4, computed independently
    assert np.mean(np.abs(P).astype(np.float64) * M) == pytest.approx(1.0 / probe_scale, rel=1e-5)


def test_probe_shapes_and_phases():
    N = 64
    disk = probe.ideal_disk_probe(N)
    gauss = probe.gaussian_probe(N)
    defocused = probe.defocused_probe(N, 3.0)
    # the Gaussian probe is real, centred, and exp(-r²/2σ²) with σ = N/(0.7π²)
    sigma = N / (0.7 * np.pi ** 2)
    assert np.all(gauss.imag == 0) and gauss[32, 32] == pytest.approx(1.0)
    assert gauss[32, 32 + 5].real == pytest.approx(np.exp(-25 / (2 * sigma ** 2)), rel=1e-5)
    # defocus only adds a quadratic phase: same modulus as the disk, phase ∝ r²
    np.testing.assert_allclose(np.abs(defocused), np.abs(disk), atol=1e-6)
    r_disk = probe.disk_radius(N)
    assert np.angle(defocused[32, 32 + 4]) == pytest.approx(3.0 * (4 / r_disk) ** 2, rel=1e-4)
    assert np.angle(defocused[32, 32]) == pytest.approx(0.0, abs=1e-7)
    assert np.ptp(np.angle(defocused[np.abs(defocused) > 0.5])) > 1.0  # structured: real phase
    with pytest.raises(ValueError, match="unknown probe"):
        probe.make_probe("airy", N)
    with pytest.raises(ValueError, match="centred"):
        probe.normalise_probe(np.pad(np.ones((4, 4)), ((0, 60), (0, 60))))


def test_probe_from_file_round_trips(tmp_path):
    N = 32
    P = probe.defocused_probe(N, 2.0) * 3.0
    path = tmp_path / "probe.npz"
    np.savez(path, probeGuess=P, other=np.arange(3))
    loaded = probe.load_probe(path)
    np.testing.assert_array_equal(loaded, P.astype(np.complex64))
    made = probe.make_probe("file", N, path=str(path))
    np.testing.assert_allclose(made, probe.normalise_probe(P), rtol=1e-6)


def _write(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return str(path)


def test_probe_file_errors_are_clear(tmp_path):
    N = 32
    good = np.ones((N, N), np.complex64)
    cases = {
        "missing": (str(tmp_path / "nope.npz"), FileNotFoundError, "does not exist"),
        "dir": (str(tmp_path), FileNotFoundError, "not a file"),
        "nokey": (_write(tmp_path / "a.npz", probe=good), ValueError, "probeGuess"),
        "shape": (_write(tmp_path / "b.npz", probeGuess=np.ones((N, N + 1))), ValueError, "square"),
        "ndim": (_write(tmp_path / "c.npz", probeGuess=np.ones(N)), ValueError, "square"),
        "nan": (_write(tmp_path / "d.npz", probeGuess=np.full((N, N), np.nan)), ValueError, "NaN"),
        "object": (_write(tmp_path / "e.npz", probeGuess=np.array([None, 1], dtype=object)), ValueError,
                   "pickle"),
        "text": (_write(tmp_path / "f.npz", probeGuess=np.full((N, N), "ab")), ValueError, "numeric"),
    }
    trunc = tmp_path / "g.npz"
    _write(trunc, probeGuess=np.ones((N, N), np.complex64))
    trunc.write_bytes(trunc.read_bytes()[:100])
    cases["truncated"] = (str(trunc), ValueError, "not a readable NPZ")
    notzip = tmp_path / "h.npz"
    notzip.write_text("hello")
    cases["notzip"] = (str(notzip), ValueError, "not a readable NPZ")
    npy = tmp_path / "i.npy"
    np.save(npy, good)
    cases["npy"] = (str(npy), ValueError, "single .npy array")
    for path, exc, needle in cases.values():
        with pytest.raises(exc, match=needle):
            probe.load_probe(path)
    with pytest.raises(ValueError, match="data.N"):
        probe.make_probe("file", 64, path=_write(tmp_path / "ok.npz", probeGuess=good))
    with pytest.raises(ValueError, match="probe_path"):
        probe.make_probe("file", N, path=None)


# --------------------------------------------------------------------------- objects

def test_lines_object_at_spec_size():
    obj = objects.make_object("lines", 392, np.random.default_rng(0), phase="none")
    assert obj.shape == (392, 392) and obj.dtype == np.complex64
    amp = np.abs(obj)
    assert amp.max() == pytest.approx(1.0, rel=1e-6) and amp.min() >= 0
    assert np.all(np.angle(obj) == 0)
    # textured, neither flat nor saturated
    assert amp.std() > 0.05 and 0.05 < np.mean(amp > 0.5 * amp.max()) < 0.95


@pytest.mark.parametrize("name", ["lines", "grf", "points", "diagonals"])
def test_synthetic_objects_are_deterministic_per_seed(name):
    a = objects.make_object(name, 96, np.random.default_rng(5))
    b = objects.make_object(name, 96, np.random.default_rng(5))
    c = objects.make_object(name, 96, np.random.default_rng(6))
    assert a.shape == (96, 96) and a.dtype == np.complex64
    assert a.tobytes() == b.tobytes()
    assert not np.allclose(a, c)
    amp = np.abs(a)
    assert 0 <= amp.min() and amp.max() <= 1 + 1e-6 and amp.std() > 0.01


def _orientation_score(amp):
    """Gradient-energy-weighted mean of cos(4θ) of the fine structure: -1 for edges at ±45°, ~0 isotropic."""
    from scipy.ndimage import gaussian_filter

    gy, gx = np.gradient(amp - gaussian_filter(amp, 3))
    return float(np.sum(gx ** 4 - 6 * gx ** 2 * gy ** 2 + gy ** 4) / np.sum((gx ** 2 + gy ** 2) ** 2))


def test_diagonals_run_at_45_degrees_and_lines_do_not():
    for seed in range(2):
        assert _orientation_score(objects.diagonals_amplitude(128, np.random.default_rng(seed))) < -0.4
        assert abs(_orientation_score(objects.lines_amplitude(128, np.random.default_rng(seed)))) < 0.2


def test_grf_has_a_power_law_spectrum():
    amp = objects.grf_amplitude(256, np.random.default_rng(0), power=3.0)
    ps = np.abs(np.fft.fft2(amp - amp.mean())) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij"))
    sel = (k > 0.02) & (k < 0.3)
    slope = np.polyfit(np.log(k[sel]), np.log(ps[sel]), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.3)


def test_skimage_object():
    assert "camera" in SKIMAGE_OBJECTS
    a = objects.make_object("camera", 64, np.random.default_rng(0), phase="tanh")
    b = objects.make_object("camera", 64, np.random.default_rng(1), phase="tanh")
    assert a.shape == (64, 64) and a.dtype == np.complex64
    np.testing.assert_array_equal(a, b)  # an image, not a random draw
    amp = np.abs(a)
    assert amp.min() == pytest.approx(0, abs=1e-6) and amp.max() == pytest.approx(1, abs=1e-6)
    with pytest.raises(ValueError, match="unknown object"):
        objects.make_object("nonsense", 64, np.random.default_rng(0))


def test_phase_modes():
    def rng():
        return np.random.default_rng(11)

    none = objects.make_object("grf", 64, rng(), phase="none")
    tanh = objects.make_object("grf", 64, rng(), phase="tanh")
    indep = objects.make_object("grf", 64, rng(), phase="independent")
    A = np.abs(none).astype(np.float64)
    np.testing.assert_allclose(np.abs(tanh), A, atol=1e-6)
    np.testing.assert_allclose(np.abs(indep), A, atol=1e-6)  # amplitude drawn first, unchanged
    assert np.all(np.angle(none) == 0)
    expected = np.pi * np.tanh((A - A.max() / 2) / (3 * A.mean()))
    lit = A > 1e-3  # the phase of a zero amplitude is undefined
    assert lit.mean() > 0.9
    np.testing.assert_allclose(np.angle(tanh)[lit], expected[lit], atol=1e-4)
    phi = np.angle(indep)
    assert phi.min() >= -np.pi / 2 - 1e-6 and phi.max() <= np.pi / 2 + 1e-6 and phi.std() > 0.1
    # independent: not a function of the amplitude
    assert abs(stats.spearmanr(A.ravel(), phi.ravel())[0]) < 0.5
    with pytest.raises(ValueError, match="phase mode"):
        objects.make_object("grf", 64, rng(), phase="random")


# --------------------------------------------------------------------------- scans

def test_spec_grid_counts_at_N64_S392():
    train = scan.grid_positions(392, 64, 4)
    test = scan.grid_positions(392, 64, 10)
    assert train.shape == (83 * 83, 2) and test.shape == (33 * 33, 2)
    for pos, stride in ((train, 4), (test, 10)):
        axis = np.unique(pos[:, 0])
        np.testing.assert_allclose(np.diff(axis), stride)
        # every patch fully inside the object, and the grid roughly centred
        assert pos.min() >= 32 and pos.max() <= 392 - 32
        assert abs((pos.min() - 32) - (392 - 32 - pos.max())) <= 1
    with pytest.raises(ValueError, match="stride"):
        scan.grid_positions(392, 64, 0)
    with pytest.raises(ValueError, match="smaller"):
        scan.grid_positions(32, 64, 4)


def test_random_scan_with_border_and_jitter_stays_inside():
    S, N, border = 128, 32, 6.0
    rng = np.random.default_rng(0)
    pos = scan.random_positions(S, N, 5000, rng, border=border)
    assert pos.shape == (5000, 2)
    assert pos.min() >= N / 2 + border and pos.max() <= S - N / 2 - border
    # uniform over the allowed box
    lo, hi = N / 2 + border, S - N / 2 - border
    assert stats.kstest((pos[:, 0] - lo) / (hi - lo), "uniform").pvalue > 1e-3
    jittered = scan.jitter_positions(pos, 3.0, rng, low=N / 2, high=S - N / 2)
    assert jittered.min() >= N / 2 and jittered.max() <= S - N / 2
    moved = np.abs(jittered - pos)
    assert np.std(jittered - pos) == pytest.approx(3.0, rel=0.1) and moved.max() > 0
    # jitter in the simulator keeps the patches inside too
    from ptycho_exp.data.simulate import simulate_positions

    fields = {"object_size": S, "N": N, "scan": "random", "n_random_positions": 400, "jitter": 5.0,
              "train_stride": 4.0, "test_stride": 10.0}
    p = simulate_positions(fields, "train", np.random.default_rng(1))
    assert p.shape == (400, 2) and p.min() >= N / 2 and p.max() <= S - N / 2
    with pytest.raises(ValueError, match="no room"):
        scan.random_positions(64, 32, 10, rng, border=20)


# --------------------------------------------------------------------------- translation convention

def test_shift_moves_content_by_plus_t():
    img = np.zeros((32, 32))
    img[10, 10] = 1.0
    out = scan.shift_image(img, (3, -2))
    assert np.unravel_index(np.argmax(out), out.shape) == (13, 8)
    # sub-pixel: the centroid of a smooth blob moves by exactly +t
    yy, xx = np.mgrid[:64, :64]
    blob = np.exp(-((yy - 30.0) ** 2 + (xx - 33.0) ** 2) / (2 * 3.0 ** 2))
    t = (0.3, -0.7)
    moved = scan.shift_image(blob, t)
    cy = np.sum(yy * moved) / np.sum(moved)
    cx = np.sum(xx * moved) / np.sum(moved)
    assert cy == pytest.approx(30.3, abs=1e-6) and cx == pytest.approx(32.3, abs=1e-6)
    # complex content keeps its dtype
    assert scan.shift_image(blob.astype(np.complex64), t).dtype == np.complex64


def test_extract_follows_the_position_convention():
    N = 16
    obj = np.zeros((64, 64), np.complex64)
    obj[30, 25] = 1.0
    patch = scan.extract_patches(obj, np.array([[28.0, 20.0]]), N)[0]
    # patch[i, j] = obj[y - N/2 + i, x - N/2 + j]
    assert np.unravel_index(np.argmax(np.abs(patch)), patch.shape) == (30 - 28 + 8, 25 - 20 + 8)
    # a larger position (+t) moves the content of the patch by -t
    later = scan.extract_patches(obj, np.array([[31.0, 20.0]]), N)[0]
    assert np.unravel_index(np.argmax(np.abs(later)), later.shape) == (30 - 31 + 8, 25 - 20 + 8)


def _blob_object(S, cy, cx, sigma=3.0):
    """Band-limited, compactly supported complex content on a constant background.

    Returns the analytic function f(y, x) and the object sampled on the integer S×S grid.
    """
    def f(y, x):
        g = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2))
        return (0.5 + 0.5 * g) * np.exp(1j * g)

    yy, xx = np.mgrid[:S, :S].astype(np.float64)
    return f, f(yy, xx)


def test_subpixel_extraction_samples_the_object_at_the_fractional_position():
    S, N = 128, 64
    f, obj = _blob_object(S, 64.2, 63.7)
    rng = np.random.default_rng(0)
    pos = 64 + rng.uniform(-4, 4, size=(12, 2))
    patches = scan.extract_patches(obj, pos, N)
    i = np.arange(N, dtype=np.float64)
    for k, (y, x) in enumerate(pos):
        expected = f(y - N / 2 + i[:, None], x - N / 2 + i[None, :])
        np.testing.assert_allclose(patches[k], expected, atol=1e-5)


def test_extract_then_reassemble_round_trips_on_the_overlap_for_subpixel_shifts():
    S, N = 128, 64
    _, obj = _blob_object(S, 64.2, 63.7)
    rng = np.random.default_rng(1)
    pos = 64 + rng.uniform(-4, 4, size=(16, 2))
    assert np.all(np.abs(pos - np.rint(pos)) > 1e-3)  # every position is sub-pixel
    patches = scan.extract_patches(obj, pos, N)
    img, count = scan.reassemble_patches(patches, pos, (S, S), return_counts=True)
    covered = count > 0
    assert covered.sum() > 60 * 60 and count.max() == 16
    np.testing.assert_allclose(img[covered], obj[covered], atol=1e-5)
    assert np.all(img[~covered] == 0)
    # real content comes back real, just as exactly
    amp = np.abs(obj)
    real = scan.reassemble_patches(scan.extract_patches(amp, pos, N).real, pos, (S, S))
    assert real.dtype == np.float32
    np.testing.assert_allclose(real[covered], amp[covered], atol=1e-5)


def test_round_trip_is_exact_at_integer_positions_for_any_content():
    S, N = 96, 32
    obj = objects.make_object("lines", S, np.random.default_rng(2), phase="tanh")
    pos = scan.grid_positions(S, N, 8)
    patches = scan.extract_patches(obj, pos, N)
    img, count = scan.reassemble_patches(patches, pos, (S, S), return_counts=True)
    np.testing.assert_array_equal(img[count > 0], obj[count > 0])
    # real patches come back real
    real = scan.reassemble_patches(np.abs(patches), pos, (S, S))
    assert real.dtype == np.float32


def test_subpixel_round_trip_on_generic_content_is_close():
    # no interpolation is exact for content that is not band-limited; bound the error (the contract's objects)
    S, N = 128, 32
    obj = objects.make_object("lines", S, np.random.default_rng(1), phase="tanh")
    pos = scan.grid_positions(S, N, 4)
    pos = pos + np.random.default_rng(0).uniform(-0.5, 0.5, size=pos.shape)
    img, count = scan.reassemble_patches(scan.extract_patches(obj, pos, N), pos, (S, S), return_counts=True)
    err = np.abs(img - obj)
    assert np.median(err[count > 0]) < 2e-3
    assert err[N // 2:-N // 2, N // 2:-N // 2].max() < 1e-2


# --------------------------------------------------------------------------- grouping

def test_groups_are_k_nearest_neighbours():
    pos = scan.grid_positions(160, 32, 4) + np.random.default_rng(0).normal(0, 0.3, size=(33 * 33, 2))
    k = 7
    centres = np.arange(0, len(pos), 7)
    groups = scan.group_around(pos, centres, 2, np.random.default_rng(1), k=k)
    assert groups.shape == (len(centres), 4) and groups.dtype == np.int64
    for row, centre in zip(groups, centres, strict=True):
        assert len(set(row)) == 4 and centre in row
        d = np.hypot(*(pos - pos[centre]).T)
        kth = np.sort(d)[k]  # distance of the k-th nearest other position
        assert np.all(d[row] <= kth + 1e-9)
        # channels in raster order of position: row (y) first, then column (x)
        p = np.round(pos[row], 3)
        assert [tuple(v) for v in p] == sorted(tuple(v) for v in p)
    # all C-1 = 3 of the k nearest get chosen with equal frequency (random choice, not the closest 3)
    offs = scan.relative_offsets(pos, groups)
    assert offs.shape == (len(centres), 4, 2)
    np.testing.assert_allclose(offs.mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(offs + pos[groups].mean(axis=1, keepdims=True), pos[groups])
    g1 = scan.group_around(pos, centres, 1, np.random.default_rng(1))
    np.testing.assert_array_equal(g1[:, 0], centres)
    with pytest.raises(ValueError, match="k_neighbors"):
        scan.group_around(pos, centres, 3, np.random.default_rng(1), k=4)


def test_neighbour_choice_is_random_among_the_k_nearest():
    pos = scan.grid_positions(128, 32, 4)
    centre = np.array([len(pos) // 2 + 6])
    counts = {}
    rng = np.random.default_rng(3)
    for _ in range(400):
        for j in scan.group_around(pos, centre, 2, rng, k=7)[0]:
            if j != centre[0]:
                counts[int(j)] = counts.get(int(j), 0) + 1
    assert len(counts) == 7  # every one of the 7 nearest is used, nothing else
    freq = np.array(list(counts.values()))
    assert stats.chisquare(freq).pvalue > 1e-3  # 3 of 7, uniformly


def test_order_channels_is_raster_order_of_position():
    pos = np.array([[10.0, 0.0], [0.0, 5.0], [0.0, -5.0], [10.0, -3.0], [4.0, 4.0]])
    groups = np.array([[0, 1, 2, 3], [4, 3, 1, 0]])
    out = scan.order_channels(pos, groups)
    np.testing.assert_array_equal(out, [[2, 1, 3, 0], [1, 4, 3, 0]])
    assert out.dtype == np.int64


def test_group_blocks_are_adjacent_grid_blocks_around_each_centre():
    step = 4.0
    pos = scan.grid_positions(128, 32, step)  # 25 x 25 grid
    n_side = int(np.sqrt(len(pos)))
    rng = np.random.default_rng(0)
    centres = np.arange(len(pos))
    groups = scan.group_blocks(pos, centres, 2, rng)
    assert groups.shape == (len(pos), 4) and groups.dtype == np.int64
    offs = scan.relative_offsets(pos, groups)
    # every group is a 2x2 block one step apart, channels in raster order: the same offsets everywhere
    np.testing.assert_allclose(offs, np.broadcast_to([[-2, -2], [-2, 2], [2, -2], [2, 2]], offs.shape))
    assert all(c in row for c, row in zip(centres, groups, strict=True))
    # an interior centre is each corner of its block equally often (the block is drawn, not fixed)
    inner = [i for i in range(len(pos)) if 0 < i // n_side < n_side - 1 and 0 < i % n_side < n_side - 1]
    corner = np.array([list(row).index(c) for c, row in zip(centres, groups, strict=True)])[inner]
    assert stats.chisquare(np.bincount(corner, minlength=4)).pvalue > 1e-3
    # gridsize 3: 3x3 blocks; a jittered grid still works; a random scan is refused with the fix named
    g3 = scan.group_blocks(pos, centres[:50], 3, rng)
    np.testing.assert_allclose(np.ptp(pos[g3], axis=1), 8.0)
    jittered = pos + rng.normal(0, 0.2, pos.shape)
    assert scan.group_blocks(jittered, centres[:50], 2, rng, step=step).shape == (50, 4)
    random = scan.random_positions(128, 32, 300, rng)
    with pytest.raises(ValueError, match="data.grouping=knn"):
        scan.group_blocks(random, np.arange(300), 2, rng)


def test_block_grid_positions_keeps_the_training_step_inside_blocks():
    N, size = 64, 392
    pos = scan.block_grid_positions(size, N, outer_stride=10, inner_stride=4, gridsize=2)
    blocks = pos.reshape(-1, 4, 2)
    assert blocks.shape[0] == 33 * 33  # the test grid's 33 x 33 blocks at N=64
    np.testing.assert_allclose(blocks - blocks[:, :1], np.broadcast_to([[0, 0], [0, 4], [4, 0], [4, 4]],
                                                                        blocks.shape))
    origins = blocks[:, 0]
    np.testing.assert_allclose(np.unique(np.diff(np.unique(origins[:, 0]))), [10.0])
    assert pos.min() >= N / 2 and pos.max() <= size - N / 2


def _quadrant_counts(p, lo, hi):
    mid = (lo + hi) / 2
    q = (p[:, 0] >= mid).astype(int) * 2 + (p[:, 1] >= mid).astype(int)
    return np.bincount(q, minlength=4)


def test_grouped_subsets_are_spatially_unbiased():
    pos = scan.grid_positions(392, 64, 4)  # 83² training grid
    lo, hi = pos.min(), pos.max()
    n = 256
    for seed in range(3):
        rng = np.random.default_rng(seed)
        groups = scan.group_neighbors(pos, 2, n, rng)
        assert groups.shape == (n, 4)
        # the centres the groups were drawn around (the same draw group_neighbors makes first)
        drawn = np.random.default_rng(seed).choice(len(pos), size=n, replace=False)
        assert all(c in row for c, row in zip(drawn, groups, strict=True))
        centres = pos[drawn]
        assert not np.array_equal(np.sort(drawn), np.arange(n))
        # centres cover the whole object: uniform in y and x, every quadrant its share
        for axis in (0, 1):
            assert stats.kstest((centres[:, axis] - lo) / (hi - lo), "uniform").pvalue > 1e-3
        assert stats.chisquare(_quadrant_counts(centres, lo, hi)).pvalue > 1e-3
        summary = scan.scan_summary(pos, 64, subset=groups)
        assert summary["subset_area_fraction"] > 0.8 and not summary["spatially_local"]
    # the same test rejects the first n in scan order (what the check is there to catch)
    first = pos[:n]
    assert stats.kstest((first[:, 0] - lo) / (hi - lo), "uniform").pvalue < 1e-6
    assert scan.scan_summary(pos, 64, subset=np.arange(n))["spatially_local"]
    with pytest.raises(ValueError, match="n_samples"):
        scan.group_neighbors(pos, 2, len(pos) + 1, np.random.default_rng(0))


def test_scan_summary_geometry():
    pos = scan.grid_positions(128, 32, 8)
    s = scan.scan_summary(pos, 32, beam_diameter=16.0)
    assert s["n_positions"] == len(pos)
    assert s["step"] == pytest.approx(8.0)
    assert s["patch_overlap"] == pytest.approx(1 - 8 / 32)
    assert s["beam_overlap"] == pytest.approx(1 - 8 / 16)
    assert s["extent"] == [pos[:, 0].min(), pos[:, 0].max(), pos[:, 1].min(), pos[:, 1].max()]
