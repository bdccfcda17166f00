"""Tests for ptycho_exp.evaluate.phase_sync: per-patch constant phases recovered from the overlaps."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptycho_exp.evaluate.phase_sync import align_patch_phases, patch_phase_factors
from ptycho_exp.evaluate.stitch import stitch_patches
from ptycho_exp.physics.scan import extract_patches

N = 32


def _object(size: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amp = 0.5 + 0.5 * gaussian_filter(rng.random((size, size)), 3) / 0.6
    phase = 2.0 * gaussian_filter(rng.standard_normal((size, size)), 6) * 6
    return amp * np.exp(1j * phase)


def _grid(start: int, stop: int, step: int) -> np.ndarray:
    g = np.arange(start, stop, step, dtype=np.float64)
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def _global_phase_removed(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return a * np.exp(-1j * np.angle(np.vdot(ref, a)))


def test_random_patch_phases_are_undone_up_to_one_global_phase():
    obj = _object()
    pos = _grid(24, 97, 6)
    truth = extract_patches(obj, pos, N)
    rng = np.random.default_rng(1)
    offset = np.exp(1j * rng.uniform(-np.pi, np.pi, len(pos)))
    aligned, u = align_patch_phases(truth * offset[:, None, None], pos)
    np.testing.assert_allclose(_global_phase_removed(aligned, truth), truth, atol=1e-9)
    # the factors are the offsets themselves, up to the same global phase
    np.testing.assert_allclose(np.abs(u), 1.0)
    ratio = u / offset
    np.testing.assert_allclose(ratio, ratio[0], atol=1e-9)
    # the global phase is fixed (the first patch keeps its own), so the same patches give the same factors
    assert u[0] == 1.0
    np.testing.assert_array_equal(align_patch_phases(truth * offset[:, None, None], pos)[1], u)
    # the central windows alone give the factors of the whole patches
    w = 12
    a = N // 2 - w // 2
    windows = (truth * offset[:, None, None])[:, a:a + w, a:a + w]
    np.testing.assert_allclose(patch_phase_factors(windows, pos, window=w), patch_phase_factors(
        truth * offset[:, None, None], pos, window=w), atol=1e-12)


def test_stitched_phase_of_misaligned_patches_is_restored():
    """Averaging patches with disagreeing levels flattens the phase; aligned, the stitch is the object again."""
    obj = _object()
    pos = _grid(24, 97, 6)
    truth = extract_patches(obj, pos, N)
    offset = np.exp(1j * np.random.default_rng(2).uniform(-np.pi, np.pi, len(pos)))
    ref = stitch_patches(truth, pos, crop=12).image
    bad = stitch_patches(truth * offset[:, None, None], pos, crop=12).image
    good = stitch_patches(align_patch_phases(truth * offset[:, None, None], pos)[0], pos, crop=12).image
    covered = np.abs(ref) > 0
    assert np.abs(_global_phase_removed(bad, ref) - ref)[covered].max() > 0.3
    np.testing.assert_allclose(_global_phase_removed(good, ref)[covered], ref[covered], atol=1e-9)


def test_consistent_patches_are_left_as_they_are():
    obj = _object(seed=3)
    pos = _grid(24, 97, 8)
    truth = extract_patches(obj, pos, N).astype(np.complex64)
    aligned, u = align_patch_phases(truth, pos)
    assert aligned.dtype == np.complex64
    np.testing.assert_allclose(u / u[0], 1.0, atol=1e-5)


def test_separate_groups_align_within_themselves_and_a_lone_patch_is_untouched():
    obj = _object(size=240, seed=4)
    left, right = _grid(24, 61, 6), _grid(24, 61, 6) + [0, 150]
    lone = np.array([[200.0, 200.0]])
    pos = np.concatenate([left, right, lone])
    truth = extract_patches(obj, pos, N)
    offset = np.exp(1j * np.random.default_rng(5).uniform(-np.pi, np.pi, len(pos)))
    aligned, u = align_patch_phases(truth * offset[:, None, None], pos)
    for part in (slice(0, len(left)), slice(len(left), len(left) + len(right))):
        np.testing.assert_allclose(_global_phase_removed(aligned[part], truth[part]), truth[part], atol=1e-9)
    assert u[-1] == 1.0
    np.testing.assert_array_equal(aligned[-1], truth[-1] * offset[-1])


def test_window_limits_the_compared_part():
    """Only the central window is compared: garbage outside it does not disturb the factors."""
    obj = _object(seed=6)
    pos = _grid(24, 97, 6)
    truth = extract_patches(obj, pos, N)
    offset = np.exp(1j * np.random.default_rng(7).uniform(-np.pi, np.pi, len(pos)))
    noisy = truth * offset[:, None, None]
    rim = np.ones((N, N), bool)
    rim[N // 4:3 * N // 4, N // 4:3 * N // 4] = False
    noisy[:, rim] = 5.0  # a constant, phase-0 border, as padding would be
    _, u = align_patch_phases(noisy, pos, window=N // 2)
    np.testing.assert_allclose(u / offset, (u / offset)[0], atol=1e-9)
    _, u_all = align_patch_phases(noisy, pos, window=N)
    assert np.abs(u_all / offset - (u_all / offset)[0]).max() > 0.1


@pytest.mark.parametrize("patches, positions, window", [
    (np.ones((4, N, N - 1), complex), np.zeros((4, 2)), None),
    (np.ones((4, N, N), complex), np.zeros((3, 2)), None),
    (np.ones((4, N, N), complex), np.zeros((4, 2)), N + 1),
])
def test_bad_shapes_are_refused(patches, positions, window):
    with pytest.raises(ValueError):
        align_patch_phases(patches, positions, window)
