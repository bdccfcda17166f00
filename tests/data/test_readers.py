"""Readers of measured-data formats (CXI, PtyLab HDF5, Tike NPZ, contract NPZ) and ``data import``/``data split``.

Files are written with h5py from simulated scans of known geometry (metres, energy, distance, detector
pixel); importing them must give back the simulator's contract arrays. No TensorFlow.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from ptycho_exp.data import simulate
from ptycho_exp.data.npz import DataContractError, load_contract_npz, save_contract_npz
from ptycho_exp.data.readers import (
    ImportOptions,
    at_corner,
    energy_to_wavelength,
    find_zero_frequency,
    import_scan,
    object_pixel_size,
    resample_probe,
)
from tests.helpers.measured import (
    CXI_DETECTOR,
    CXI_SOURCE,
    DISTANCE,
    DX,
    ENERGY_EV,
    small_scan,
    write_cxi,
    write_ptylab,
)
from tests.helpers.measured import detector_pixel as _detector_pixel
from tests.helpers.measured import photon_counts as _counts


@pytest.fixture(scope="module")
def sim32():
    """A noisy test scan of 32x32 patterns with jittered (sub-pixel) positions."""
    return small_scan()


@pytest.fixture(scope="module")
def sim64():
    """A 64x64 scan with a Gaussian probe, to be cropped or binned to 32."""
    return simulate.simulate_object_scan({"N": 64, "object_size": 160, "test_stride": 16.0, "nphotons": 1e6,
                                          "probe": "gaussian", "jitter": 0.5}, "test")


def _relative(positions: np.ndarray) -> np.ndarray:
    return positions - positions.min(axis=0)


def _assert_same_scan(got, scan):
    np.testing.assert_allclose(got.diffraction, scan.diffraction * scan.meta["photon_scale"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_relative(got.positions), _relative(scan.positions), atol=0.01)
    np.testing.assert_allclose(got.positions.min(axis=0), scan.N / 2.0)  # the scan starts at the object's edge


# --------------------------------------------------------------------------- pure helpers

def test_pixel_size_and_wavelength_formulas():
    assert energy_to_wavelength(12398.42) == pytest.approx(1e-10, rel=1e-5)  # hc = 12398.42 eV Angstrom
    assert object_pixel_size(1e-10, 2.0, 100, 1e-4) == pytest.approx(2e-8)


def test_zero_frequency_found_at_centre_or_corner():
    """The peak of a diffraction blob is found; a brighter single hot pixel is not taken for it."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40]
    mean = rng.random((40, 40)) + 1e4 * np.exp(-((yy - 23) ** 2 + (xx - 17) ** 2) / 8.0)
    mean[5, 5] = 1e6
    (r, c), com = find_zero_frequency(mean)
    assert (r, c) == (23, 17) and abs(com[0] - 23) < 0.1 and abs(com[1] - 17) < 0.1
    wrapped = np.fft.ifftshift(1e4 * np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 8.0))  # peak at (0, 0)
    (r, c), _ = find_zero_frequency(wrapped)
    assert (r, c) == (0, 0) and at_corner((r, c), wrapped.shape) and at_corner((38, 1), wrapped.shape)
    assert not at_corner((20, 21), wrapped.shape) and not at_corner((8, 8), wrapped.shape)  # off-centre beam


def test_resample_probe_keeps_power_and_scales_width():
    """A Gaussian of sigma 6 px on a grid twice as coarse has sigma 3 px and the same total power."""
    n = 64
    yy, xx = np.mgrid[:n, :n] - n // 2
    probe = np.exp(-(yy ** 2 + xx ** 2) / (2 * 6.0 ** 2)) * np.exp(1j * 0.01 * xx)
    out = resample_probe(probe, 0.5, 32)
    assert out.shape == (32, 32)
    assert np.sum(np.abs(out) ** 2) == pytest.approx(np.sum(np.abs(probe) ** 2), rel=1e-4)
    yy, xx = np.mgrid[:32, :32] - 16
    w = np.abs(out) ** 2
    assert np.sqrt(np.sum(w * yy ** 2) / w.sum()) == pytest.approx(3.0 / np.sqrt(2), rel=0.02)
    np.testing.assert_array_equal(resample_probe(probe, 1.0, 32), probe[16:48, 16:48].astype(np.complex64))


# --------------------------------------------------------------------------- round trips

def test_cxi_round_trip(sim32, tmp_path):
    scan, report = import_scan(write_cxi(tmp_path / "s.cxi", sim32), "cxi", ImportOptions(N=32))
    _assert_same_scan(scan, sim32)
    np.testing.assert_allclose(scan.probe, sim32.probe, atol=1e-6)
    assert report["dx_m"] == pytest.approx(DX)
    assert report["zero_frequency_found"] == [16, 16] == report["zero_frequency_expected"]
    assert not report["fftshifted"] and report["clipped_negative"] == 0 and report["masked_pixels"] == 0
    counts = _counts(sim32).sum(axis=(1, 2))
    assert report["counts_per_pattern"]["mean"] == pytest.approx(counts.mean(), rel=1e-5)
    assert scan.meta["photon_scale"] == 1.0  # amplitude is sqrt(counts)


def test_ptylab_round_trip(sim32, tmp_path):
    scan, report = import_scan(write_ptylab(tmp_path / "s.hdf5", sim32), "ptylab", ImportOptions(N=32))
    _assert_same_scan(scan, sim32)
    np.testing.assert_allclose(scan.probe, sim32.probe, atol=1e-6)
    assert report["dx_m"] == pytest.approx(DX)


def test_written_contract_is_loadable(sim32, tmp_path):
    scan, _ = import_scan(write_cxi(tmp_path / "s.cxi", sim32), "cxi", ImportOptions(N=32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sqrt(counts) passes the loader's amplitude-vs-intensity checks
        back = load_contract_npz(save_contract_npz(tmp_path / "c.npz", scan))
    np.testing.assert_array_equal(back.diffraction, scan.diffraction)
    assert back.meta["imported"]["format"] == "cxi"


def test_frames_range(sim32, tmp_path):
    scan, report = import_scan(write_cxi(tmp_path / "s.cxi", sim32), "cxi", ImportOptions(N=32, frames=(2, 10)))
    part = sim32.subset(np.arange(2, 10))
    _assert_same_scan(scan, part)
    assert report["frames"] == [2, 10]


def test_off_centre_beam_is_found_not_assumed(sim32, tmp_path):
    """A beam 4 px up and 2 px right of the detector centre: the window follows the found zero frequency."""
    frames = np.zeros((sim32.n_positions, 48, 48), np.float32)
    frames[:, 4:36, 10:42] = _counts(sim32)  # zero frequency at (4 + 16, 10 + 16) = (20, 26)
    scan, report = import_scan(write_cxi(tmp_path / "off.cxi", sim32, counts=frames), "cxi", ImportOptions(N=32))
    assert report["zero_frequency_found"] == [20, 26] and report["zero_frequency_expected"] == [24, 24]
    assert not report["fftshifted"] and report["window_outside_detector_px"] == 0
    np.testing.assert_allclose(scan.diffraction, sim32.diffraction * sim32.meta["photon_scale"], rtol=1e-5, atol=1e-4)


def test_tike_npz_round_trip(sim32, tmp_path):
    """Zero frequency at the corners and window corners in px: found, shifted, and back to the same arrays."""
    path = tmp_path / "tike.npz"
    np.savez(path, data=np.fft.ifftshift(_counts(sim32), axes=(-2, -1)), scan=sim32.positions - 16.0,
             probe=sim32.probe[None, None, None])
    scan, report = import_scan(path, "tike", ImportOptions(N=32))
    np.testing.assert_allclose(scan.diffraction, sim32.diffraction * sim32.meta["photon_scale"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scan.positions, sim32.positions, atol=1e-9)  # pixel origin kept
    assert report["fftshifted"] and report["zero_frequency_found"] == [0, 0] == report["zero_frequency_expected"]


def test_contract_npz_reimport_crops(sim64, tmp_path):
    path = save_contract_npz(tmp_path / "c.npz", sim64)
    scan, report = import_scan(path, "npz", ImportOptions(N=32))
    np.testing.assert_allclose(scan.diffraction, sim64.diffraction[:, 16:48, 16:48], rtol=1e-5)
    np.testing.assert_allclose(_relative(scan.positions), _relative(sim64.positions) / 2, atol=0.01)
    assert any("objectGuess" in n for n in report["notes"])


def test_crop_and_bin_keep_positions_consistent(sim64, tmp_path):
    """Cropping 64 -> 32 doubles dx = lambda z / (N dxd): positions halve. Binning 64 -> 32 (b=2) keeps
    dx = lambda z / (N b dxd): positions stay, the field of view halves."""
    path = write_cxi(tmp_path / "s.cxi", sim64)
    counts = _counts(sim64).astype(np.float64)
    crop, rc = import_scan(path, "cxi", ImportOptions(N=32))
    binned, rb = import_scan(path, "cxi", ImportOptions(N=32, bin=2))
    assert rc["dx_m"] == pytest.approx(2 * DX) and rb["dx_m"] == pytest.approx(DX)
    np.testing.assert_allclose(_relative(crop.positions), _relative(sim64.positions) / 2, atol=0.01)
    np.testing.assert_allclose(_relative(binned.positions), _relative(sim64.positions), atol=0.01)
    np.testing.assert_allclose(crop.diffraction, np.sqrt(counts[:, 16:48, 16:48]), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(binned.diffraction, np.sqrt(counts.reshape(-1, 32, 2, 32, 2).sum(axis=(2, 4))),
                               rtol=1e-5, atol=1e-4)
    # the probe follows the pixel: cropping halves its width in px and keeps its power; binning by 2 at
    # N=32 keeps the 64-px pixel, so its probe is the central 32x32 of the original
    yy, xx = np.mgrid[:64, :64] - 32

    def width(p, grid):
        w = np.abs(p) ** 2
        return np.sqrt(np.sum(w * grid ** 2) / w.sum())

    assert width(crop.probe, yy[16:48, 16:48]) == pytest.approx(width(sim64.probe, yy) / 2, rel=0.02)
    assert np.sum(np.abs(crop.probe) ** 2) == pytest.approx(np.sum(np.abs(sim64.probe) ** 2), rel=1e-3)
    np.testing.assert_allclose(binned.probe, sim64.probe[16:48, 16:48], atol=1e-6)


@pytest.mark.parametrize("frames", [(0, 1), (7, 8), (0, 5), (20, 40)])
def test_zero_frequency_found_from_few_frames(sim64, tmp_path, frames):
    """The brightest pixel of a few patterns can sit off the zero frequency; the found centre does not."""
    scan, report = import_scan(write_cxi(tmp_path / "s.cxi", sim64), "cxi", ImportOptions(N=32, frames=frames))
    assert report["zero_frequency_found"] == [32, 32]
    np.testing.assert_allclose(scan.diffraction, np.sqrt(_counts(sim64)[slice(*frames), 16:48, 16:48]), rtol=1e-5)


def test_hdf5_frames_are_streamed(sim32, tmp_path, monkeypatch):
    """Frames are read in chunks: the import's peak memory stays far below the size of the frames."""
    import tracemalloc

    from ptycho_exp.data.readers import convert

    n, side = 160, 256
    frames = np.zeros((n, side, side), np.float32)  # 42 MB of frames, the 32x32 patterns in their middle
    frames[:, 112:144, 112:144] = np.resize(_counts(sim32), (n, 32, 32))
    big = dataclasses.replace(sim32, positions=np.resize(sim32.positions, (n, 2)), diffraction=frames)
    path = write_cxi(tmp_path / "big.cxi", big, counts=frames)
    monkeypatch.setattr(convert, "_CHUNK_BYTES", 2**20)
    import_scan(path, "cxi", ImportOptions(N=32, frames=(0, 2)))  # one-time module imports are not counted
    tracemalloc.start()
    try:
        scan, report = import_scan(path, "cxi", ImportOptions(N=32))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["zero_frequency_found"] == [128, 128] and scan.diffraction.shape == (n, 32, 32)
    np.testing.assert_allclose(scan.diffraction, np.sqrt(frames[:, 112:144, 112:144]), rtol=1e-6)
    assert peak < frames.nbytes / 4, f"peak {peak / 2**20:.1f} MiB for {frames.nbytes / 2**20:.1f} MiB of frames"


def test_negative_saturated_and_masked_pixels_reported(sim32, tmp_path):
    counts = _counts(sim32)
    assert counts.max() < 65535
    background = counts - 2.0  # a background subtraction leaves negative values
    negative = int(np.count_nonzero(background < 0))
    mask = np.zeros((32, 32), np.uint8)
    mask[3, 4] = mask[20, 9] = 1  # non-zero = bad (CXI)
    scan, report = import_scan(write_cxi(tmp_path / "m.cxi", sim32, counts=background, mask=mask), "cxi",
                               ImportOptions(N=32))
    assert negative > 0 and report["clipped_negative"] == negative and report["masked_pixels"] == 2
    assert np.all(scan.diffraction[:, 3, 4] == 0) and np.all(scan.diffraction[:, 20, 9] == 0)
    assert scan.diffraction.min() >= 0
    keep = background.astype(np.float64)
    keep[:, 3, 4] = keep[:, 20, 9] = 0
    np.testing.assert_allclose(scan.diffraction, np.sqrt(np.clip(keep, 0, None)), rtol=1e-5, atol=1e-4)

    raw = np.rint(counts).astype(np.uint16)
    raw[0, 1, 1] = raw[5, 30, 2] = 65535  # the dtype's maximum: saturated
    scan, report = import_scan(write_cxi(tmp_path / "u.cxi", sim32, counts=raw), "cxi", ImportOptions(N=32))
    assert report["saturated_zeroed"] == 2 and scan.diffraction[0, 1, 1] == 0 and scan.diffraction[5, 30, 2] == 0
    _, report = import_scan(tmp_path / "u.cxi", "cxi", ImportOptions(N=32, saturation=1e9))
    assert report["saturated_zeroed"] == 0

    with pytest.raises(DataContractError, match="--mask-good"):  # an inverted mask is caught, not applied
        import_scan(write_cxi(tmp_path / "i.cxi", sim32, mask=1 - mask), "cxi", ImportOptions(N=32))
    _, report = import_scan(tmp_path / "i.cxi", "cxi", ImportOptions(N=32, mask_good=True))
    assert report["masked_pixels"] == 2


_DET, _SRC = CXI_DETECTOR, CXI_SOURCE
MISSING = [
    ("cxi", [f"{_DET}/distance"], f"{_DET}/distance", "--distance", {"distance": DISTANCE}),
    ("cxi", [f"{_DET}/x_pixel_size", f"{_DET}/y_pixel_size"], f"{_DET}/x_pixel_size", "--pixel-size",
     {"pixel_size": "auto"}),
    ("cxi", [f"{_SRC}/energy"], f"{_SRC}/energy", "--energy-ev", {"energy_ev": ENERGY_EV}),
    ("cxi", [f"{_SRC}/illumination"], f"{_SRC}/illumination", "--probe", {"probe_path": "auto"}),
    ("cxi", ["entry_1/sample_1/geometry_1/translation"], "entry_1/sample_1/geometry_1/translation", None, None),
    ("cxi", ["entry_1/data_1/data"], "entry_1/data_1/data", None, None),
    ("ptylab", ["zo"], "zo", "--distance", {"distance": DISTANCE}),
    ("ptylab", ["dxd"], "dxd", "--pixel-size", {"pixel_size": "auto"}),
    ("ptylab", ["wavelength"], "wavelength", "--wavelength", {"wavelength": "auto"}),
    ("ptylab", ["probe"], "probe", "--probe", {"probe_path": "auto"}),
    ("ptylab", ["encoder"], "encoder", None, None),
    ("ptylab", ["ptychogram"], "ptychogram", None, None),
]


@pytest.mark.parametrize("fmt,drop,key,option,supply", MISSING, ids=[f"{m[0]}-{m[2]}" for m in MISSING])
def test_missing_geometry_is_one_clear_error(sim32, tmp_path, fmt, drop, key, option, supply):
    writer = write_cxi if fmt == "cxi" else write_ptylab
    path = writer(tmp_path / f"s.{fmt}", sim32, drop=drop)
    with pytest.raises(DataContractError) as info:
        import_scan(path, fmt, ImportOptions(N=32))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and key in message
    if option is None:
        return
    assert "fix: pass" in message and option in message
    values = {"pixel_size": _detector_pixel(32), "wavelength": energy_to_wavelength(ENERGY_EV),
              "probe_path": str(save_contract_npz(tmp_path / "probe.npz", sim32))}
    given = {k: values[k] if v == "auto" else v for k, v in supply.items()}
    scan, _ = import_scan(path, fmt, ImportOptions(N=32, **given))  # the option supplies the missing fact
    _assert_same_scan(scan, sim32)


def test_bad_options(sim32, tmp_path):
    path = write_cxi(tmp_path / "s.cxi", sim32)
    for opts, match in ((ImportOptions(N=31), "even"), (ImportOptions(N=32, frames=(500, 600)), "selects no frame"),
                        (ImportOptions(N=32, bin=0), "--bin"),
                        (ImportOptions(N=32, distance=-1.0), "--distance -1.0: must be a positive")):
        with pytest.raises(ValueError, match=match):
            import_scan(path, "cxi", opts)
    with pytest.raises(DataContractError, match="not a readable HDF5"):
        import_scan(save_contract_npz(tmp_path / "c.npz", sim32), "cxi", ImportOptions(N=32))


# --------------------------------------------------------------------------- CLI

def _ptycho_exp(args, cwd):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "ptycho_exp.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_import_happy_path_and_bad_input(sim32, tmp_path):
    src = write_cxi(tmp_path / "scan.cxi", sim32)
    out = tmp_path / "out" / "contract.npz"
    res = _ptycho_exp(["data", "import", src, "--format", "cxi", "--N", "32", "--out", out], tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{sim32.n_positions} patterns of 32x32" in res.stdout and f"wrote {out}" in res.stdout
    assert "photons per pattern: mean" in res.stdout and "dx 5e-08 m" in res.stdout
    _assert_same_scan(load_contract_npz(out), sim32)

    bad = write_cxi(tmp_path / "bad.cxi", sim32, drop=[f"{_DET}/distance"])
    out2 = tmp_path / "out2" / "contract.npz"
    res = _ptycho_exp(["data", "import", bad, "--format", "cxi", "--N", "32", "--out", out2], tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{_DET}/distance missing" in lines[0] and "--distance METRES" in lines[0]
    assert not out2.parent.exists()  # nothing written


def test_cli_split_reports_kept_and_dropped(sim32, tmp_path):
    path = save_contract_npz(tmp_path / "scan.npz", sim32)
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    m = sim32.n_positions
    for gap in (None, 0, 8):
        res = _ptycho_exp(["data", "split", path, "--train-out", train, "--test-out", test]
                          + ([] if gap is None else ["--gap", gap]), tmp_path)
        assert res.returncode == 0, res.stderr
        a, b = load_contract_npz(train).n_positions, load_contract_npz(test).n_positions
        dropped = m - a - b
        assert f"train {a} ->" in res.stdout and f"test  {b} ->" in res.stdout
        assert f"dropped {dropped} ({dropped / m:.0%}) in the {32 if gap is None else gap:g} px gap band" in res.stdout
        if gap == 0:
            assert dropped == 0
        else:
            assert dropped > 0  # the default band (N) drops the patterns around the cut and says so
    res = _ptycho_exp(["data", "split", path, "--train-out", train, "--test-out", test, "--gap", "-1"], tmp_path)
    assert res.returncode == 2 and "must be >= 0" in res.stderr
