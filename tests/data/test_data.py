"""Data layer (docs/CONTRACT.md §3-4): seeded simulation, the dataset cache, the NPZ contract and the data CLI.

No TensorFlow. Simulations use tiny configs (N=16, S=64) except where the point is a spec size.
"""
from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from ptycho_exp.config import ConfigError, DataConfig
from ptycho_exp.data import cache, simulate
from ptycho_exp.data.container import ScanData
from ptycho_exp.data.datasets import build_datasets
from ptycho_exp.data.npz import DataContractError, DataPathError, load_contract_npz, save_contract_npz
from ptycho_exp.physics.forward import diffract, exit_wave
from ptycho_exp.physics.probe import make_probe

ROOT = Path(__file__).resolve().parents[2]

# A tiny simulated scan: 13² training and 7² test grid positions of 16×16 patterns.
TINY = {"N": 16, "object_size": 64, "train_stride": 4.0, "test_stride": 8.0, "n_train": 32,
        "nphotons": 1e4}


def _fields(**over):
    return {**TINY, **over}


def _digest(scan: ScanData) -> str:
    h = hashlib.sha256()
    for arr in (scan.diffraction, scan.positions, scan.probe, scan.object, scan.patches):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- simulation

def test_simulated_scan_follows_the_forward_model():
    scan = simulate.simulate_object_scan(_fields(noise=False), "train")
    assert scan.diffraction.shape == (169, 16, 16) and scan.diffraction.dtype == np.float32
    assert scan.positions.shape == (169, 2) and scan.positions.dtype == np.float64
    assert scan.probe.dtype == np.complex64 and scan.object.shape == (64, 64)
    # noise-free diffraction is exactly diffract(probe * patch)
    np.testing.assert_allclose(scan.diffraction, diffract(exit_wave(scan.probe, scan.patches)), rtol=1e-6)
    np.testing.assert_allclose(scan.probe, make_probe("ideal_disk", 16), rtol=1e-6)
    # the photon scale turns amplitudes into counts with mean nphotons per pattern
    counts = scan.meta["photon_scale"] ** 2 * np.sum(scan.diffraction.astype(np.float64) ** 2, axis=(1, 2))
    assert counts.mean() == pytest.approx(1e4, rel=1e-6)


def test_spec_grid_scan_sizes_through_the_simulator():
    fields = simulate.resolve_data_fields(DataConfig())  # the defaults: lines, N=64, S=392
    assert (fields["N"], fields["object_size"]) == (64, 392)
    rng = np.random.default_rng(0)
    assert simulate.simulate_positions(fields, "train", rng).shape == (83 * 83, 2)
    assert simulate.simulate_positions(fields, "test", rng).shape == (33 * 33, 2)


def test_same_config_and_seed_give_byte_identical_data():
    a = simulate.simulate_object_scan(_fields(), "train")
    b = simulate.simulate_object_scan(_fields(), "train")
    assert _digest(a) == _digest(b)
    c = simulate.simulate_object_scan(_fields(train_seed=1), "train")
    assert not np.array_equal(a.diffraction, c.diffraction)
    assert not np.array_equal(a.object, c.object)
    test = simulate.simulate_object_scan(_fields(), "test")
    assert not np.array_equal(a.object, test.object)  # the held-out object is a different draw
    # independent streams: turning the noise off keeps the object and the positions
    quiet = simulate.simulate_object_scan(_fields(noise=False), "train")
    np.testing.assert_array_equal(quiet.object, a.object)
    np.testing.assert_array_equal(quiet.positions, a.positions)
    assert not np.array_equal(quiet.diffraction, a.diffraction)


def test_resolve_data_fields_rejects_unknown_keys_and_canonicalises_numbers():
    with pytest.raises(KeyError, match="nphoton"):
        simulate.resolve_data_fields({"nphoton": 1e4})
    a = simulate.resolve_data_fields({"nphotons": 1000000000})
    b = simulate.resolve_data_fields({"nphotons": 1e9})
    assert a == b and isinstance(a["nphotons"], float)
    assert cache.dataset_key(a, "train") == cache.dataset_key(b, "train")


# --------------------------------------------------------------------------- datasets and cache

def test_build_datasets_is_reproducible_and_a_second_build_is_a_cache_hit(tmp_path):
    cfg = _fields(gridsize=2)
    first = build_datasets(cfg, seed=3, cache_dir=tmp_path / "c1")
    assert first.info["train_cache"]["hit"] is False and first.info["test_cache"]["hit"] is False
    assert first.train.diffraction.shape == (32, 16, 16, 4)
    assert first.test.diffraction.shape == (49, 16, 16, 4)  # every test position is a centre
    again = build_datasets(cfg, seed=3, cache_dir=tmp_path / "c1")
    assert again.info["train_cache"]["hit"] is True and again.info["test_cache"]["hit"] is True
    assert again.info["train_cache"]["key"] == first.info["train_cache"]["key"]
    fresh = build_datasets(cfg, seed=3, cache_dir=tmp_path / "c2")  # simulated again from scratch
    assert fresh.info["train_cache"]["hit"] is False
    for other in (again, fresh):
        for split in ("train", "test"):
            x, y = getattr(first, split), getattr(other, split)
            assert x.diffraction.tobytes() == y.diffraction.tobytes()
            assert x.groups.tobytes() == y.groups.tobytes() and x.offsets.tobytes() == y.offsets.tobytes()
            assert x.patches.tobytes() == y.patches.tobytes()
    # another job seed: another training subset of the same cached scan; the test set is unchanged
    other_seed = build_datasets(cfg, seed=4, cache_dir=tmp_path / "c1")
    assert other_seed.info["train_cache"]["hit"] is True
    assert not np.array_equal(other_seed.train.groups, first.train.groups)
    assert other_seed.test.diffraction.tobytes() == first.test.diffraction.tobytes()
    assert first.info["spatially_local"] is False and first.info["has_ground_truth"] is True
    counts = first.info["train"]["photons"]["mean_counts_per_pattern"]
    assert counts == pytest.approx(1e4, rel=0.01)


@pytest.mark.parametrize("grouping", ["knn", "block"])
def test_several_training_objects_lie_side_by_side_and_no_group_spans_two(tmp_path, grouping):
    one = build_datasets(_fields(gridsize=2, grouping=grouping), seed=3, cache_dir=tmp_path)
    two = build_datasets(_fields(gridsize=2, grouping=grouping, n_train_objects=2, n_train=200), seed=3,
                         cache_dir=tmp_path)
    m, S, N = one.train_scan.n_positions, TINY["object_size"], TINY["N"]
    scan = two.train_scan
    assert scan.n_positions == 2 * m and scan.object.shape == (S, 2 * S + N)
    assert two.info["train"]["n_objects"] == 2 and two.info["train"]["n_positions"] == 2 * m
    # object 0 is the single-object scan (its cache entry is reused); object 1 is another object
    assert two.info["train_cache"]["hit"] is False
    assert two.info["train_cache"]["keys"][0] == one.info["train_cache"]["key"]
    assert scan.diffraction[:m].tobytes() == one.train_scan.diffraction.tobytes()
    np.testing.assert_array_equal(scan.object[:, :S], one.train_scan.object)
    assert not np.allclose(scan.object[:, S + N:], one.train_scan.object)
    assert np.all(scan.object[:, S:S + N] == 0)
    # positions sit on their own object, and each patch is that object's patch at that position
    np.testing.assert_allclose(scan.positions[m:], one.train_scan.positions + [0, S + N])
    from ptycho_exp.physics.scan import extract_patches

    np.testing.assert_allclose(extract_patches(scan.object, scan.positions[m + 5:m + 6], N), scan.patches[m + 5:m + 6])
    # groups never mix the objects, and the samples are drawn over both
    on_second = two.train.groups >= m
    assert np.all(on_second.all(axis=1) | (~on_second).all(axis=1))
    assert 0.3 < on_second[:, 0].mean() < 0.7
    # the photon statistics cover all patterns; the test set is unchanged
    assert two.info["train"]["photons"]["mean_counts_per_pattern"] == pytest.approx(1e4, rel=0.01)
    assert two.test.diffraction.tobytes() == one.test.diffraction.tobytes()
    again = build_datasets(_fields(gridsize=2, grouping=grouping, n_train_objects=2, n_train=200), seed=3,
                           cache_dir=tmp_path)
    assert again.info["train_cache"]["hit"] is True
    assert again.train.groups.tobytes() == two.train.groups.tobytes()


def test_too_many_samples_for_the_objects_name_the_fields(tmp_path):
    m = simulate.simulate_object_scan(_fields(), "train").n_positions
    with pytest.raises(ConfigError, match=r"data\.n_train=.*data\.n_train_objects"):
        build_datasets(_fields(n_train=m + 1), seed=0, cache_dir=tmp_path)
    assert build_datasets(_fields(n_train=m + 1, n_train_objects=2), seed=0, cache_dir=tmp_path).train.n == m + 1
    with pytest.raises(ValueError, match="index"):
        simulate.simulate_object_scan(_fields(), "test", index=1)


def test_block_grouping_keeps_the_training_step_between_test_neighbours(tmp_path):
    knn = build_datasets(_fields(gridsize=2), seed=3, cache_dir=tmp_path)
    block = build_datasets(_fields(gridsize=2, grouping="block"), seed=3, cache_dir=tmp_path)
    half = TINY["train_stride"] / 2
    square = [[-half, -half], [-half, half], [half, -half], [half, half]]
    for split in (block.train, block.test):  # 2x2 blocks one training step apart, raster order
        np.testing.assert_allclose(split.offsets, np.broadcast_to(square, split.offsets.shape))
    # the test scan is 2x2 blocks placed on the test grid, each predicted once
    from ptycho_exp.physics.scan import grid_positions

    n_blocks = len(grid_positions(TINY["object_size"] - 4, TINY["N"], TINY["test_stride"]))
    assert block.test.n == n_blocks and block.test_scan.n_positions == 4 * n_blocks
    assert len(np.unique(block.test.groups.ravel())) == block.test_scan.n_positions
    # the training scan is shared with knn (a cache hit); the block test scan is keyed apart
    assert block.info["train_cache"]["hit"] is True
    assert block.info["test_cache"]["key"] != knn.info["test_cache"]["key"]
    assert block.train.diffraction.shape == knn.train.diffraction.shape
    # knn test neighbours are a test step apart
    assert np.abs(knn.test.offsets).max() >= TINY["test_stride"] / 2


def test_training_subsets_are_spatially_unbiased():
    from scipy import stats

    from ptycho_exp.data.datasets import heldout_groups, training_groups
    from ptycho_exp.physics.scan import grid_positions

    pos = grid_positions(392, 64, 4)  # the 83² spec training grid
    scan = ScanData(diffraction=np.zeros((len(pos), 2, 2), np.float32), positions=pos,
                    probe=np.ones((2, 2), np.complex64))
    lo, hi = pos.min(), pos.max()
    pvalues = []
    for seed in range(4):
        groups = training_groups(scan, 128, 2, 7, seed)
        assert groups.shape == (128, 4)
        drawn = np.random.default_rng(seed).choice(len(pos), size=128, replace=False)  # training_groups' draw
        assert all(c in row for c, row in zip(drawn, groups, strict=True))
        centres = pos[drawn]
        for axis in (0, 1):
            pvalues.append(stats.kstest((centres[:, axis] - lo) / (hi - lo), "uniform").pvalue)
        half = (centres >= (lo + hi) / 2).astype(int)
        quadrants = np.bincount(half[:, 0] * 2 + half[:, 1], minlength=4)
        pvalues.append(stats.chisquare(quadrants).pvalue)
        # neighbours are near their centre: within the k=7 nearest on a 4-px grid (<= 2 steps)
        assert np.all(np.abs(pos[groups] - centres[:, None]) <= 8 + 1e-9)
    assert min(pvalues) > 1e-3
    # different job seeds choose different subsets; the test groups depend only on the test seed
    assert not np.array_equal(training_groups(scan, 128, 2, 7, 0), training_groups(scan, 128, 2, 7, 1))
    np.testing.assert_array_equal(heldout_groups(scan, 50, 2, 7, 5), heldout_groups(scan, 50, 2, 7, 5))
    everything = heldout_groups(scan, None, 1, 7, 5)
    np.testing.assert_array_equal(everything[:, 0], np.arange(len(pos)))


def test_too_many_training_samples_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.n_train=500"):
        build_datasets(_fields(n_train=500), seed=0, cache_dir=tmp_path)


# Every DataConfig field must be listed here: either how to change it (it must change the cache key
# of the scans it affects) or why it does not change the simulated arrays (checked by simulating).
KEYED_CHANGES = {
    "object": ("grf", "both"), "object_phase": ("none", "both"), "object_size": (72, "both"),
    "N": (32, "both"), "nphotons": (2e4, "both"), "noise": (False, "both"), "probe": ("gaussian", "both"),
    "probe_scale": (3.0, "both"), "scan": ("random", "both"), "jitter": (0.5, "both"),
    "train_seed": (7, "train"), "test_seed": (7, "test"), "train_stride": (5.0, "train"),
    "test_stride": (9.0, "test"),
}
# fields that only matter under another choice: (field, new value, the choice that makes it matter)
CONDITIONAL_CHANGES = {
    "probe_defocus": (2.0, {"probe": "defocused"}),
    "n_random_positions": (100, {"scan": "random"}),
    "probe_path": (None, {"probe": "file"}),  # by content, see test_probe_file_enters_the_key_by_content
}
# (grouping=block with gridsize > 1 does change the *test* scan: see the block grouping test)
NOT_KEYED = {"kind": "npz", "gridsize": 2, "n_train": 16, "n_train_objects": 2, "n_test": 10, "k_neighbors": 9,
             "train_path": "/x.npz", "test_path": "/y.npz", "grouping": "block",
             "train_on": "test", "labels": "iterative", "reader": {"bin": 2}}


def test_every_data_field_is_classified_for_the_cache_key():
    names = {f.name for f in dataclasses.fields(DataConfig)}
    assert names == set(KEYED_CHANGES) | set(CONDITIONAL_CHANGES) | set(NOT_KEYED)


@pytest.mark.parametrize("name", sorted(KEYED_CHANGES))
def test_cache_key_changes_with_every_data_field(name):
    value, affected = KEYED_CHANGES[name]
    base = _fields()
    for which in ("train", "test"):
        changed = cache.dataset_key({**base, name: value}, which) != cache.dataset_key(base, which)
        assert changed == (affected in ("both", which)), (name, which)


def test_conditional_fields_change_the_key_when_they_matter():
    base = _fields()
    for name, (value, context) in CONDITIONAL_CHANGES.items():
        if value is None:
            continue
        assert cache.dataset_key({**base, name: value}, "train") == cache.dataset_key(base, "train")
        ctx = {**base, **context}
        assert cache.dataset_key({**ctx, name: value}, "train") != cache.dataset_key(ctx, "train"), name
    # the other scan's seed and stride do not matter, nor does a sampling field; they leave the data alone
    ref = simulate.simulate_object_scan(base, "train")
    for name, value in {**NOT_KEYED, "test_seed": 99, "test_stride": 12.0, "probe_defocus": 2.0,
                        "n_random_positions": 10, "probe_path": "/nowhere.npz"}.items():
        assert cache.dataset_key({**base, name: value}, "train") == cache.dataset_key(base, "train"), name
        assert _digest(simulate.simulate_object_scan({**base, name: value}, "train")) == _digest(ref), name


def test_probe_file_enters_the_key_by_content(tmp_path):
    path = tmp_path / "probe.npz"
    np.savez(path, probeGuess=make_probe("defocused", 16, defocus=1.0))
    fields = _fields(probe="file", probe_path=str(path))
    key = cache.dataset_key(fields, "train")
    np.savez(path, probeGuess=make_probe("defocused", 16, defocus=2.0))  # same path, new content
    assert cache.dataset_key(fields, "train") != key
    moved = tmp_path / "elsewhere.npz"
    os.replace(path, moved)  # same content, another path
    assert cache.dataset_key(_fields(probe="file", probe_path=str(moved)), "train") == \
        cache.dataset_key(fields | {"probe_path": str(moved)}, "train")


def test_cache_key_changes_with_the_simulator_version(monkeypatch):
    key = cache.dataset_key(_fields(), "train")
    monkeypatch.setattr(cache, "SIMULATOR_VERSION", simulate.SIMULATOR_VERSION + "-next")
    assert cache.dataset_key(_fields(), "train") != key
    assert cache.key_fields(_fields(), "train")["simulator_version"].endswith("-next")


def test_a_corrupt_cache_file_is_simulated_again(tmp_path):
    scan, hit, key = cache.load_or_simulate(tmp_path, _fields(), "test")
    path = Path(cache.cache_path(tmp_path, key))
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated, e.g. a job killed by an old writer
    again, hit, _ = cache.load_or_simulate(tmp_path, _fields(), "test")
    assert hit is False and _digest(again) == _digest(scan)
    assert load_contract_npz(path).diffraction.tobytes() == scan.diffraction.tobytes()


def test_a_cache_file_with_flipped_data_bytes_is_simulated_again(tmp_path):
    """A hit skips the value scans (NaN, sign) of its own files; the zip CRC still catches damaged data."""
    scan, _, key = cache.load_or_simulate(tmp_path, _fields(), "test")
    path = Path(cache.cache_path(tmp_path, key))
    raw = bytearray(path.read_bytes())
    start = raw.index(b"diffraction.npy") + 4096  # well inside the (uncompressed) diffraction member
    raw[start:start + 8] = np.full(2, np.nan, dtype=np.float32).tobytes()  # NaN where data was: a bad CRC
    path.write_bytes(bytes(raw))
    again, hit, _ = cache.load_or_simulate(tmp_path, _fields(), "test")
    assert hit is False and _digest(again) == _digest(scan)
    assert np.isfinite(load_contract_npz(path).diffraction).all()


def _cache_worker(cache_dir, fields, barrier, queue):
    barrier.wait()
    scan, hit, key = cache.load_or_simulate(cache_dir, fields, "train")
    queue.put((hit, key, _digest(scan)))


def test_concurrent_writers_of_one_cache_key_do_not_corrupt_it(tmp_path):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    fields = _fields(N=32, object_size=128, train_stride=2.0)  # 2,401 patterns: the writers overlap
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_cache_worker, args=(str(tmp_path), fields, barrier, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    hits = sorted(r[0] for r in results)
    assert hits == [False, True, True]  # simulated once; the others waited for it and hit
    assert len({r[1] for r in results}) == 1 and len({r[2] for r in results}) == 1
    npz = [f for f in os.listdir(tmp_path) if f.endswith(".npz")]
    assert npz == [f"{results[0][1]}.npz"]  # no temp files left behind
    stored = load_contract_npz(tmp_path / npz[0])
    assert stored.diffraction.shape == (49 * 49, 32, 32)
    assert _digest(stored) == results[0][2] == _digest(simulate.simulate_object_scan(fields, "train"))


# --------------------------------------------------------------------------- NPZ contract

M, N = 12, 16


def _valid_arrays(seed=0):
    scan = simulate.simulate_object_scan(_fields(test_stride=16.0), "test")
    assert scan.n_positions >= M
    sub = scan.subset(np.arange(M))
    return {"xcoords": sub.positions[:, 1].copy(), "ycoords": sub.positions[:, 0].copy(),
            "diffraction": sub.diffraction, "probeGuess": sub.probe, "objectGuess": sub.object,
            "Y": sub.patches}


@pytest.fixture(scope="module")
def valid_arrays():
    return _valid_arrays()


def _save(path, arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def test_contract_round_trip(tmp_path):
    scan = simulate.simulate_object_scan(_fields(), "test")
    path = save_contract_npz(tmp_path / "sub" / "scan.npz", scan)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    back = load_contract_npz(path)
    assert _digest(back) == _digest(scan)
    assert back.diffraction.dtype == np.float32 and back.positions.dtype == np.float64
    assert back.probe.dtype == np.complex64 and back.object.dtype == np.complex64
    assert back.meta["photon_scale"] == pytest.approx(scan.meta["photon_scale"])
    assert back.meta["nphotons"] == 1e4 and back.meta["diffraction_key"] == "diffraction"
    with np.load(path, allow_pickle=False) as raw:  # the PtychoPINN key names and dtypes
        assert raw["xcoords"].dtype == np.float64 and raw["probeGuess"].dtype == np.complex64
        np.testing.assert_array_equal(raw["xcoords"], scan.positions[:, 1])
        np.testing.assert_array_equal(raw["ycoords"], scan.positions[:, 0])


def test_legacy_diff3d_and_real_probe_are_accepted(tmp_path, valid_arrays):
    arrays = dict(valid_arrays)
    arrays["diff3d"] = arrays.pop("diffraction")
    arrays["probeGuess"] = np.abs(arrays["probeGuess"]).astype(np.float64)
    arrays["xcoords"] = arrays["xcoords"].astype(np.float32)
    arrays["Y"] = arrays["Y"][..., None]  # PtychoPINN's channel axis
    scan = load_contract_npz(_save(tmp_path / "legacy.npz", arrays))
    assert scan.meta["diffraction_key"] == "diff3d"
    np.testing.assert_array_equal(scan.diffraction, valid_arrays["diffraction"])
    assert scan.probe.dtype == np.complex64 and scan.patches.shape == (M, N, N)


class _Canary:
    """Unpickling this writes a file: proves whether the loader ever unpickles."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _case(arrays, **changes):
    out = dict(arrays)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


def _contract_cases(a):
    d = a["diffraction"]
    nan = d.copy()
    nan[3, 4, 5] = np.nan
    inf_x = a["xcoords"].copy()
    inf_x[2] = np.inf
    neg = d.copy()
    neg[0, 0, 0] = -0.5
    bad_probe = a["probeGuess"].copy()
    bad_probe[1, 1] = np.nan
    return {
        "missing xcoords": (_case(a, xcoords=None), "xcoords", "missing"),
        "missing ycoords": (_case(a, ycoords=None), "ycoords", "missing"),
        "missing diffraction": (_case(a, diffraction=None), "diffraction", "missing"),
        "missing probe": (_case(a, probeGuess=None), "probeGuess", "missing"),
        "2-D diffraction": (_case(a, diffraction=d[0]), "diffraction", r"ndim 2.*\(M, N, N\)"),
        "4-D diffraction": (_case(a, diffraction=d[..., None]), "diffraction", r"ndim 4"),
        "2-D xcoords": (_case(a, xcoords=a["xcoords"][:, None]), "xcoords", r"expected \(12,\)"),
        "short xcoords": (_case(a, xcoords=a["xcoords"][:-1]), "xcoords", r"shape \(11,\).*expected \(12,\)"),
        "long ycoords": (_case(a, ycoords=np.r_[a["ycoords"], 1.0]), "ycoords", r"expected \(12,\)"),
        "fewer patterns": (_case(a, diffraction=d[:-2]), "xcoords", r"expected \(10,\)"),
        "non-square": (_case(a, diffraction=d[:, :, :12]), "diffraction", r"non-square.*\(16, 12\)"),
        "complex diffraction": (_case(a, diffraction=d.astype(np.complex64)), "diffraction", "complex64"),
        "string coords": (_case(a, xcoords=a["xcoords"].astype(str)), "xcoords", "dtype"),
        "NaN diffraction": (_case(a, diffraction=nan), "diffraction", "NaN/Inf"),
        "Inf xcoords": (_case(a, xcoords=inf_x), "xcoords", "NaN/Inf"),
        "NaN probe": (_case(a, probeGuess=bad_probe), "probeGuess", "NaN/Inf"),
        "negative amplitude": (_case(a, diffraction=neg), "diffraction", r"negative.*-0\.5"),
        "empty": (_case(a, diffraction=d[:0], xcoords=a["xcoords"][:0], ycoords=a["ycoords"][:0], Y=None),
                  "diffraction", "empty"),
        "probe size": (_case(a, probeGuess=a["probeGuess"][:8, :8]), "probeGuess", r"expected \(16, 16\)"),
        "3-D object": (_case(a, objectGuess=a["objectGuess"][None]), "objectGuess", "2-D"),
        "Y shape": (_case(a, Y=a["Y"][:-1]), "Y", r"expected \(12, 16, 16\)"),
    }


_CASE_NAMES = [  # the keys of _contract_cases (checked below)
    "missing xcoords", "missing ycoords", "missing diffraction", "missing probe", "2-D diffraction",
    "4-D diffraction", "2-D xcoords", "short xcoords", "long ycoords", "fewer patterns", "non-square",
    "complex diffraction", "string coords", "NaN diffraction", "Inf xcoords", "NaN probe",
    "negative amplitude", "empty", "probe size", "3-D object", "Y shape"]


@pytest.mark.parametrize("case", _CASE_NAMES)
def test_contract_violations_raise_one_clear_error(tmp_path, valid_arrays, case):
    arrays, key, pattern = _contract_cases(valid_arrays)[case]
    path = _save(tmp_path / "bad.npz", arrays)
    with pytest.raises(DataContractError) as err:
        load_contract_npz(path)
    message = str(err.value)
    assert err.value.key == key, message
    assert f"'{key}'" in message and str(path) in message and "Fix:" in message
    assert re.search(pattern, message), message
    assert "\n" not in message


def test_contract_cases_cover_the_listed_names(valid_arrays):
    assert list(_contract_cases(valid_arrays)) == _CASE_NAMES


def test_object_arrays_are_refused_without_unpickling(tmp_path, valid_arrays):
    canary = tmp_path / "unpickled"
    obj = np.empty(M, dtype=object)
    for i in range(M):
        obj[i] = _Canary(canary)
    path = _save(tmp_path / "pickled.npz", _case(valid_arrays, xcoords=obj))
    with pytest.raises(DataContractError, match="pickle") as err:
        load_contract_npz(path)
    assert err.value.key == "xcoords"
    assert not canary.exists()
    # the probe loader refuses it too
    from ptycho_exp.physics.probe import load_probe

    _save(tmp_path / "probe.npz", {"probeGuess": obj})
    with pytest.raises(ValueError, match="pickle"):
        load_probe(tmp_path / "probe.npz")
    assert not canary.exists()


def test_unreadable_files_and_paths(tmp_path, valid_arrays):
    good = _save(tmp_path / "good.npz", valid_arrays)
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    start = raw.index(b"diffraction.npy") + 400  # inside the stored diffraction data
    flipped[start:start + 64] = bytes(64)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as fh:
        np.save(fh, valid_arrays["diffraction"])
    for path, needle in ((truncated, "not a readable NPZ|truncated"), (corrupt, "corrupt|CRC"),
                         (text, "not a readable NPZ"), (npy, "single .npy")):
        with pytest.raises(DataContractError, match=needle) as err:
            load_contract_npz(path)
        assert str(path) in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(DataPathError, match="is a directory"):
        load_contract_npz(tmp_path)
    with pytest.raises(DataPathError, match="does not exist"):
        load_contract_npz(tmp_path / "missing.npz")
    assert issubclass(DataPathError, DataContractError) and issubclass(DataContractError, ValueError)


def test_uint16_data_is_normalised_without_overflow(tmp_path, valid_arrays):
    rng = np.random.default_rng(0)
    counts = rng.integers(20000, 65535, size=(M, N, N)).astype(np.uint16)  # Σx² ≈ 7e11 per pattern
    path = _save(tmp_path / "u16.npz", _case(valid_arrays, diffraction=counts))
    with pytest.warns(UserWarning, match="square root"):
        scan = load_contract_npz(path)
    assert scan.diffraction.dtype == np.float32
    np.testing.assert_array_equal(scan.diffraction, counts.astype(np.float64))
    f = scan.meta["normalisation_factor"]
    normed = scan.diffraction.astype(np.float64) * f
    assert np.mean(np.sum(normed ** 2, axis=(1, 2))) == pytest.approx((N / 2) ** 2, rel=1e-6)
    wrapped = np.mean(np.sum(counts * counts, axis=(1, 2)))  # what a uint16 sum would have given
    assert abs(wrapped - np.mean(np.sum(counts.astype(np.float64) ** 2, axis=(1, 2)))) > 1e6


@pytest.mark.parametrize("nphotons,noise", [(1e4, True), (1e9, True), (1e9, False)])
def test_intensity_looking_data_warns_with_the_fix(tmp_path, nphotons, noise):
    # N=32: enough oversampling for the autocorrelation-support sign (noise-free float intensity)
    scan = simulate.simulate_object_scan(_fields(N=32, object_size=96, nphotons=nphotons, noise=noise), "test")
    amp = save_contract_npz(tmp_path / "amp.npz", scan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # genuine amplitude: no warning at any dose
        load_contract_npz(amp)
    for name, intensity in (("raw", scan.diffraction.astype(np.float64) ** 2),
                            ("counts", np.rint((scan.meta["photon_scale"] * scan.diffraction.astype(np.float64))
                                               ** 2).astype(np.float32))):
        scan.diffraction = intensity.astype(np.float32)
        path = save_contract_npz(tmp_path / f"{name}.npz", scan)
        with pytest.warns(UserWarning, match=r"'diffraction' looks like intensity.*take the square root"):
            load_contract_npz(path)


# --------------------------------------------------------------------------- CLI

def _ptycho_exp(args, cwd, timeout=120):
    exe = Path(sys.executable).with_name("ptycho-exp")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ptycho_exp.cli"]
    env = {**os.environ, "PTYCHO_EXP_CACHE": str(Path(cwd) / "cache"), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_cli_simulate_inspect_split_round_trip(tmp_path):
    out = tmp_path / "F.npz"
    res = _ptycho_exp(["data", "simulate", "--out", str(out), "data.N=32", "data.object_size=128"], tmp_path)
    assert res.returncode == 0, res.stderr
    scan = load_contract_npz(out)  # the written file passes the contract
    assert scan.N == 32 and scan.object.shape == (128, 128)
    expected = simulate.simulate_object_scan({"N": 32, "object_size": 128}, "test")
    assert _digest(scan) == _digest(expected)  # the config's test scan, as a job would simulate it

    res = _ptycho_exp(["data", "inspect", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    m = scan.n_positions
    assert f"diffraction  shape ({m}, 32, 32)  dtype float32" in text
    assert "probeGuess   shape (32, 32)  dtype complex64" in text
    counts = float(re.search(r"photon counts per pattern.*?mean ([0-9.e+]+)", text).group(1))
    assert counts == pytest.approx(1e9, rel=0.01)  # the default dose
    y0, y1 = scan.positions[:, 0].min(), scan.positions[:, 0].max()
    assert f"scan: y {y0:.1f}..{y1:.1f} px" in text
    step = float(re.search(r"step ([0-9.]+) px", text).group(1))
    assert step == pytest.approx(10.0)  # the default test stride
    assert f"overlap: patch {1 - 10 / 32:.0%}" in text
    assert "WARNING" not in text

    two = tmp_path / "two.npz"  # two training objects: the set a job with data.n_train_objects=2 draws from
    res = _ptycho_exp(["data", "simulate", "--which", "train", "--out", str(two), "data.N=32", "data.object_size=128",
                       "data.n_train_objects=2"], tmp_path)
    assert res.returncode == 0 and "2 objects side by side" in res.stdout, res.stderr
    pair = load_contract_npz(two)
    built = build_datasets({"N": 32, "object_size": 128, "n_train_objects": 2}, seed=0, cache_dir=tmp_path / "c")
    assert pair.object.shape == (128, 2 * 128 + 32) and _digest(pair) == _digest(built.train_scan)

    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    res = _ptycho_exp(["data", "split", str(out), "--train-out", str(train), "--test-out", str(test)], tmp_path)
    assert res.returncode == 0, res.stderr
    a, b = load_contract_npz(train), load_contract_npz(test)
    assert a.n_positions > 0 and b.n_positions > 0
    # spatially disjoint: no object pixel is seen by patches of both halves
    assert a.positions[:, 0].max() + 16 <= b.positions[:, 0].min() - 16
    np.testing.assert_array_equal(a.object, scan.object)
    np.testing.assert_array_equal(b.probe, scan.probe)
    for part in (a, b):
        idx = [int(np.nonzero(np.all(scan.positions == p, axis=1))[0][0]) for p in part.positions]
        np.testing.assert_array_equal(part.diffraction, scan.diffraction[idx])
        np.testing.assert_array_equal(part.patches, scan.patches[idx])


def test_cli_bad_input_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, xcoords=np.zeros(3), ycoords=np.zeros(3), diffraction=np.zeros((3, 16, 16)))
    for args, needle in ((["data", "inspect", str(bad)], "probeGuess"),
                         (["data", "inspect", str(tmp_path / "none.npz")], "does not exist"),
                         (["data", "simulate", "--out", str(tmp_path / "x.npz"), "data.N=63"], "data.N"),
                         (["data", "simulate", "--out", str(tmp_path / "x.npz"), "data.bogus=1"], "data.bogus")):
        res = _ptycho_exp(args, tmp_path)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert needle in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.slow
def test_a_second_job_with_the_same_data_config_is_a_cache_hit(cli, tmp_path):
    """End to end (TensorFlow, ~30 s): the job records the cache hit in result.json."""
    import json

    common = ["data.N=32", "data.object_size=128", "data.n_train=32", "data.test_stride=16", "train.epochs=1",
              "train.tensorboard=false", "eval.figures=false", "eval.upsample_factor=10"]
    flags = []
    for seed in (0, 1):  # another job seed: a new job, the same data config
        run_dir = tmp_path / f"job{seed}"
        res = cli([*common, f"seed={seed}", f"hydra.run.dir={run_dir}"])
        assert res.returncode == 0, res.stderr[-2000:]
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "ok", result.get("error")
        flags.append((result["data"]["train_cache"]["hit"], result["data"]["test_cache"]["hit"]))
    assert flags == [(False, False), (True, True)]
