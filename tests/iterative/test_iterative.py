"""Tests of ptycho_exp.iterative: NPZ protocol, worker, PtyLab ePIE, Tike conversions (CPU, fast)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ptycho_exp.iterative import (  # noqa: E402 - after the sys.path set-up above
    WORKER_PATH,
    EngineError,
    EngineResult,
    ProtocolError,
    amplitude_to_tike_intensity,
    check_tike_available,
    read_engine_input,
    read_engine_output,
    run_engine,
    tike_intensity_to_amplitude,
    write_engine_input,
    write_engine_output,
)
from ptycho_exp.iterative.tike_engine import tike_scan_geometry  # noqa: E402

HAVE_PTYLAB = importlib.util.find_spec("PtyLab") is not None
HAVE_TIKE = importlib.util.find_spec("tike") is not None and importlib.util.find_spec("cupy") is not None
needs_ptylab = pytest.mark.skipif(not HAVE_PTYLAB, reason="PtyLab not installed")


# ----------------------------------------------------------------------------------------------------
# Small simulator (docs/CONTRACT.md §1 conventions, independent of the rest of ptycho_exp)
# ----------------------------------------------------------------------------------------------------
def simulate(n: int = 32, grid: int = 6, stride: int = 8, seed: int = 0):
    """Smooth random complex object, Gaussian-blurred disk probe with a weak quadratic phase,
    grid scan of (row, col) patch centres, unitary-FFT amplitudes with centred zero frequency."""
    rng = np.random.default_rng(seed)
    border = n // 2 + 4
    size = 2 * border + stride * (grid - 1)
    amp = gaussian_filter(rng.standard_normal((size, size)), 3.0)
    amp = 0.6 + 0.35 * amp / np.abs(amp).max()
    phase = gaussian_filter(rng.standard_normal((size, size)), 4.0)
    obj = (amp * np.exp(1j * phase / np.abs(phase).max())).astype(np.complex64)
    yy, xx = np.mgrid[:n, :n] - n / 2
    r = np.hypot(yy, xx)
    probe = (gaussian_filter((r < n / 4).astype(float), 1.0) * np.exp(1j * 0.02 * r**2)).astype(np.complex64)
    c = border + stride * np.arange(grid, dtype=np.float64)
    gy, gx = np.meshgrid(c, c, indexing="ij")
    positions = np.stack([gy.ravel(), gx.ravel()], axis=1)
    patterns = []
    for y, x in positions:
        r0, c0 = int(y) - n // 2, int(x) - n // 2
        psi = probe * obj[r0 : r0 + n, c0 : c0 + n]
        patterns.append(np.sqrt(np.fft.fftshift(np.abs(np.fft.fft2(psi)) ** 2) / n**2))
    return obj, probe, positions, np.asarray(patterns, dtype=np.float32)


def _scanned_crop(obj_gt, rec_obj, origin, positions, n, gt_offset=(0.0, 0.0)):
    """Ground truth and reconstruction on the well-lit scanned box; rec mapped through ``origin``.

    ``gt_offset``: scan coordinate = ground-truth pixel + gt_offset."""
    lo = np.floor(positions.min(axis=0) - n / 4).astype(int)
    hi = np.ceil(positions.max(axis=0) + n / 4).astype(int)
    gt = obj_gt[
        lo[0] - int(gt_offset[0]) : hi[0] - int(gt_offset[0]),
        lo[1] - int(gt_offset[1]) : hi[1] - int(gt_offset[1]),
    ]
    r0, c0 = round(origin[0]), round(origin[1])
    rec = rec_obj[lo[0] - r0 : hi[0] - r0, lo[1] - c0 : hi[1] - c0]
    assert rec.shape == gt.shape, (rec.shape, gt.shape)
    return gt, rec


def _registration_shift(ref, mov):
    from skimage.filters import window
    from skimage.registration import phase_cross_correlation

    # windowing matters: on smooth, non-periodic crops plain phase correlation locks onto the edges
    w = window("hann", ref.shape)
    shift, _, _ = phase_cross_correlation((ref - ref.mean()) * w, (mov - mov.mean()) * w, upsample_factor=20)
    return np.asarray(shift)


# ----------------------------------------------------------------------------------------------------
# Tike data conversion (unconditional)
# ----------------------------------------------------------------------------------------------------
def test_amplitude_to_tike_intensity_is_exact_and_invertible():
    rng = np.random.default_rng(1)
    n = 8
    amp = rng.random((3, n, n)).astype(np.float32)
    inten = amplitude_to_tike_intensity(amp)
    assert inten.dtype == np.float32 and inten.shape == amp.shape
    expected = np.fft.ifftshift((amp.astype(np.float64) ** 2).astype(np.float32), axes=(-2, -1))
    assert np.array_equal(inten, expected)
    # zero frequency: centred pixel (N/2, N/2) -> corner (0, 0)
    assert np.array_equal(inten[:, 0, 0], (amp[:, n // 2, n // 2].astype(np.float64) ** 2).astype(np.float32))
    back = tike_intensity_to_amplitude(inten)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, amp, rtol=2e-7, atol=0)
    assert np.array_equal(amplitude_to_tike_intensity(back), inten)


def test_tike_intensity_matches_tike_forward_model():
    """Contract amplitude -> Tike data equals |fft2(psi, norm='ortho')|² (Tike's unshifted model)."""
    rng = np.random.default_rng(2)
    n = 16
    psi = rng.standard_normal((2, n, n)) + 1j * rng.standard_normal((2, n, n))
    amp = np.sqrt(np.fft.fftshift(np.abs(np.fft.fft2(psi)) ** 2, axes=(-2, -1)) / n**2).astype(np.float32)
    tike_model = np.abs(np.fft.fft2(psi, norm="ortho")) ** 2
    np.testing.assert_allclose(amplitude_to_tike_intensity(amp), tike_model, rtol=2e-6, atol=1e-6)
    assert (
        np.argmax(amplitude_to_tike_intensity(np.pad(np.ones((1, 1, 1)), ((0, 0), (4, 3), (4, 3))))[0]) == 0
    )


def test_tike_scan_geometry_maps_centres_to_top_left_corners():
    n = 32
    pos = np.array([[101.5, 57.0], [109.5, 65.25], [133.0, 40.0]])
    scan, shape, offset = tike_scan_geometry(pos, n, pad=2)
    assert scan.dtype == np.float32
    # psi index of the patch centre = scan coordinate + offset; Tike's scan is the top-left corner
    np.testing.assert_allclose(scan + n / 2, pos + offset, atol=1e-4)
    # Tike's allowed range: 1 <= floor(scan) <= psi.shape - N - 1
    assert np.all(np.floor(scan) >= 1)
    assert np.all(np.floor(scan) <= np.asarray(shape) - n - 1)
    assert np.all(offset == np.round(offset))


def test_check_tike_available_reports_missing_interpreter():
    msg = check_tike_available("/nonexistent/python-for-tike")
    assert isinstance(msg, str) and "not found" in msg


@pytest.mark.skipif(HAVE_TIKE, reason="tike importable here")
def test_check_tike_available_reports_missing_tike():
    msg = check_tike_available(sys.executable)
    assert isinstance(msg, str) and ("tike" in msg.lower() or "cupy" in msg.lower())


# ----------------------------------------------------------------------------------------------------
# Protocol
# ----------------------------------------------------------------------------------------------------
def test_engine_input_round_trip_without_pickle(tmp_path):
    _, probe, pos, diff = simulate(n=16, grid=3, stride=4)
    settings = {"engine": "ptylab", "iterations": 7, "betaObject": 0.3, "nested": {"a": [1, 2]}}
    path = write_engine_input(tmp_path / "in.npz", diff, pos, probe, settings)
    with np.load(path, allow_pickle=False) as npz:
        assert {"xcoords", "ycoords", "diffraction", "probeGuess", "settings_json"} <= set(npz.files)
        assert all(npz[k].dtype != object for k in npz.files)
        assert npz["settings_json"].shape == () and npz["settings_json"].dtype.kind == "U"
        assert npz["ycoords"].dtype == np.float64 and npz["diffraction"].dtype == np.float32
        assert npz["probeGuess"].dtype == np.complex64
    inp = read_engine_input(path)
    assert inp.diffraction.dtype == np.float32 and np.array_equal(inp.diffraction, diff)
    assert inp.positions.dtype == np.float64 and np.array_equal(inp.positions, pos)
    assert np.array_equal(inp.probe, probe)
    assert inp.settings == json.loads(json.dumps(settings))
    assert [p.name for p in tmp_path.iterdir()] == ["in.npz"]  # atomic write leaves no temp file
    # no probe guess
    inp2 = read_engine_input(write_engine_input(tmp_path / "noprobe.npz", diff, pos, None, settings))
    assert inp2.probe is None


def test_engine_output_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(3)
    obj = (rng.random((20, 24)) + 1j * rng.random((20, 24))).astype(np.complex64)
    prb = (rng.random((8, 8)) + 1j * rng.random((8, 8))).astype(np.complex64)
    err = np.array([3.0, 2.0, 1.5, np.float64(1) / 3])
    meta = {
        "engine": "ptylab",
        "version": "0.3.7",
        "algorithm": "ePIE",
        "iterations": 4,
        "seconds": 0.25,
        "extra": {"x": [1.5, None]},
    }
    path = write_engine_output(tmp_path / "out.npz", obj, prb, (-12.0, 3.5), err, meta)
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    with zipfile.ZipFile(path) as zf:  # nothing but .npy members
        assert all(name.endswith(".npy") for name in zf.namelist())
    res = read_engine_output(path)
    assert isinstance(res, EngineResult)
    assert res.object.dtype == np.complex64 and np.array_equal(res.object, obj)
    assert np.array_equal(res.probe, prb)
    assert res.origin == (-12.0, 3.5)
    assert res.data_error.dtype == np.float64 and np.array_equal(res.data_error, err)
    assert {k: v for k, v in res.metadata.items() if k != "health"} == meta
    # a file without the worker's health record is checked on reading (here: a healthy run)
    assert res.failed is False and res.failure_reason is None
    assert res.error_curve == err.tolist()
    assert res.probe_norm == pytest.approx(np.linalg.norm(prb.astype(np.complex128)), rel=1e-6)
    assert res.object_norm == pytest.approx(np.abs(obj[5:15, 6:18]).mean(), rel=1e-6)
    assert res.positions is None
    np.testing.assert_array_equal(res.patch_centre_index([[0.0, 0.0]]), [[12.0, -3.5]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]
    with pytest.raises(ProtocolError, match="seconds"):
        write_engine_output(
            tmp_path / "bad.npz",
            obj,
            prb,
            (0, 0),
            err,
            {"engine": "x", "version": "1", "algorithm": "a", "iterations": 1},
        )
    assert not (tmp_path / "bad.npz").exists()


def test_read_engine_input_names_the_missing_key(tmp_path):
    np.savez(tmp_path / "broken.npz", diffraction=np.ones((2, 4, 4), np.float32), xcoords=np.zeros(2))
    with pytest.raises(ProtocolError, match="ycoords"):
        read_engine_input(tmp_path / "broken.npz")


# ----------------------------------------------------------------------------------------------------
# Worker
# ----------------------------------------------------------------------------------------------------
def _worker(args, cwd, module=False):
    cmd = (
        [sys.executable, "-m", "ptycho_exp.iterative.worker", *args]
        if module
        else [sys.executable, "-I", str(WORKER_PATH), *args]
    )
    env = dict(os.environ, PYTHONPATH=str(REPO)) if module else None
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("module", [False, True], ids=["by-path", "as-module"])
def test_worker_bad_engine_exits_2_without_output(tmp_path, module):
    _, probe, pos, diff = simulate(n=16, grid=2, stride=4)
    inp = write_engine_input(tmp_path / "in.npz", diff, pos, probe, {"engine": "no-such-engine"})
    out = tmp_path / "out.npz"
    out.write_bytes(b"stale result from an earlier run")
    proc = _worker([str(inp), str(out)], cwd=tmp_path, module=module)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no-such-engine" in lines[0] and "ptylab" in lines[0] and "tike" in lines[0]
    assert not out.exists()


def test_worker_missing_input_exits_2(tmp_path):
    proc = _worker([str(tmp_path / "nope.npz"), str(tmp_path / "out.npz")], cwd=tmp_path)
    assert proc.returncode == 2 and "not found" in proc.stderr
    assert not (tmp_path / "out.npz").exists()


@needs_ptylab
def test_run_engine_worker_returns_result(tmp_path):
    _, probe, pos, diff = simulate(n=16, grid=3, stride=4)
    res = run_engine(diff, pos, probe, {"engine": "ptylab", "iterations": 3}, workdir=tmp_path, timeout_s=300)
    assert res.object.ndim == 2 and res.object.dtype == np.complex64
    assert res.probe.shape == (16, 16)
    assert res.data_error.shape == (3,) and np.all(np.isfinite(res.data_error))
    for key in ("engine", "version", "algorithm", "iterations", "seconds"):
        assert key in res.metadata
    assert res.metadata["engine"] == "ptylab" and res.metadata["algorithm"] == "ePIE"
    # the patch centres lie inside the returned object
    idx = res.patch_centre_index(pos)
    assert np.all(idx >= 8) and np.all(idx <= np.asarray(res.object.shape) - 8)
    outs = list(tmp_path.glob("engine-*-out.npz"))
    assert len(outs) == 1 and not list(tmp_path.glob("engine-*-in.npz"))


def test_run_engine_raises_engine_error_with_stderr(tmp_path):
    _, probe, pos, diff = simulate(n=16, grid=2, stride=4)
    with pytest.raises(EngineError, match="unknown engine") as info:
        run_engine(diff, pos, probe, {"engine": "bogus"}, workdir=tmp_path)
    assert "bogus" in info.value.stderr_tail and info.value.returncode == 2


# ----------------------------------------------------------------------------------------------------
# PtyLab ePIE on a simulated grid scan
# ----------------------------------------------------------------------------------------------------
@needs_ptylab
def test_ptylab_epie_converges_and_is_registered():
    from skimage.metrics import structural_similarity

    from ptycho_exp.iterative.ptylab_engine import reconstruct_ptylab

    n = 32
    obj, probe, pos, diff = simulate(n=n, grid=6, stride=8, seed=0)
    # scan coordinates deliberately far from the ground-truth pixel grid: origin must absorb it
    gt_offset = np.array([101.0, 57.0])
    scan = pos + gt_offset

    # fixed (exact) probe: ePIE's data error decreases monotonically
    o, _, origin, err, meta, _ = reconstruct_ptylab(diff, scan, probe, {"iterations": 30, "probe_refine": False})
    assert err.shape == (30,)
    assert np.all(err[1:] <= err[:-1] * (1 + 1e-6)), np.diff(err)
    assert err[0] / err[-1] > 5
    assert meta["engine"] == "ptylab" and meta["iterations"] == 30 and meta["seconds"] > 0
    assert np.isfinite(meta["final_data_error"]) and meta["final_data_error"] < err[0] / 5

    # probe refined as well (ePIE's random position order gives small wiggles in the error)
    o2, _, origin2, err2, _, _ = reconstruct_ptylab(diff, scan, probe, {"iterations": 30})
    assert err2[0] / err2[-1] > 5
    assert np.max(np.diff(err2) / err2[:-1]) < 0.1

    for rec_obj, rec_origin in ((o, origin), (o2, origin2)):
        gt, rec = _scanned_crop(obj, rec_obj, rec_origin, scan, n, gt_offset)
        a_gt, a_rec = np.abs(gt).astype(np.float64), np.abs(rec).astype(np.float64)
        shift = _registration_shift(a_gt, a_rec)
        assert np.all(np.abs(shift) <= 1.0), shift
        a_rec *= a_gt.mean() / a_rec.mean()
        rng = float(np.ptp(a_gt))
        ssim_rec = structural_similarity(a_gt, a_rec, data_range=rng)
        ssim_ones = structural_similarity(a_gt, np.full_like(a_gt, a_gt.mean()), data_range=rng)
        assert ssim_rec > ssim_ones + 0.2, (ssim_rec, ssim_ones)
        assert ssim_rec > 0.8, ssim_rec

    # the jobs' own scoring path (stitch box -> register -> metrics), against the all-ones start
    from ptycho_exp.evaluate.pipeline import evaluate_object

    score = {}
    for name, rec_obj, rec_origin in (("epie", o, origin), ("ones", np.ones_like(o), origin)):
        ev = evaluate_object(rec_obj, np.asarray(rec_origin) - gt_offset, pos, obj, patch_size=n,
                             upsample_factor=20)
        score[name] = ev.metrics
    assert score["epie"]["amp_ssim"] > score["ones"]["amp_ssim"] + 0.2, score
    assert score["epie"]["phase_ssim"] > score["ones"]["phase_ssim"] + 0.2, score
    assert abs(score["epie"]["reg_dy"]) <= 1 and abs(score["epie"]["reg_dx"]) <= 1


# ----------------------------------------------------------------------------------------------------
# Tike plumbing on CPU: a numpy stand-in for tike.ptycho with Tike's documented conventions
# (data = intensity with zero frequency at the corners, forward model |fft2(P·O, norm="ortho")|²,
# scan = top-left corner of the probe in psi pixels, psi of shape (slices, H, W) as in tike 0.26)
# ----------------------------------------------------------------------------------------------------
def _fake_tike_modules():
    import dataclasses
    import types

    ptycho = types.ModuleType("tike.ptycho")

    class _Opts:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    class RpieOptions(_Opts):
        name = "rpie"

        def __init__(self, num_iter=1, num_batch=5, alpha=0.05):
            super().__init__(num_iter=num_iter, num_batch=num_batch, alpha=alpha, costs=[], times=[])

    class LstsqOptions(RpieOptions):
        name = "lstsq_grad"

    @dataclasses.dataclass
    class PtychoParameters:
        probe: np.ndarray
        psi: np.ndarray
        scan: np.ndarray
        algorithm_options: object = None
        object_options: object = None
        probe_options: object = None
        position_options: object = None
        exitwave_options: object = None

        def __post_init__(self):
            if self.psi.ndim != 3:
                raise ValueError(f"psi shape {self.psi.shape} is incorrect. It should be (D, W, H)")
            assert self.probe.ndim == 5 and self.scan.dtype == np.float32
            lo, hi = np.min(self.scan // 1, axis=0), np.max(self.scan // 1, axis=0)
            if np.any(lo < 1) or np.any(hi > np.asarray(self.psi.shape[-2:]) - self.probe.shape[-1] - 1):
                raise ValueError("Scan positions must be >= 1 ... psi may be too small")

    def reconstruct(data, parameters, num_gpu=1):
        assert data.dtype == np.float32
        psi, probe = parameters.psi[0].astype(np.complex128), parameters.probe[0, 0, 0].astype(np.complex128)
        n = probe.shape[-1]
        tl = np.rint(parameters.scan).astype(int)
        pmax = np.max(np.abs(probe) ** 2)
        opts = parameters.algorithm_options
        for _ in range(opts.num_iter):
            cost = []
            for j, (r, c) in enumerate(tl):
                patch = psi[r : r + n, c : c + n]
                far = np.fft.fft2(probe * patch, norm="ortho")
                cost.append(np.mean((np.abs(far) - np.sqrt(data[j])) ** 2))
                far = np.sqrt(data[j]) * np.exp(1j * np.angle(far))
                delta = np.fft.ifft2(far, norm="ortho") - probe * patch
                psi[r : r + n, c : c + n] = patch + np.conj(probe) / pmax * delta
            opts.costs.append(cost)
        return PtychoParameters(
            probe=parameters.probe,
            psi=psi[None].astype(np.complex64),
            scan=parameters.scan,
            algorithm_options=opts,
        )

    for name in ("ObjectOptions", "ProbeOptions", "PositionOptions", "ExitWaveOptions"):
        setattr(ptycho, name, type(name, (_Opts,), {}))
    ptycho.RpieOptions, ptycho.LstsqOptions = RpieOptions, LstsqOptions
    ptycho.PtychoParameters, ptycho.reconstruct = PtychoParameters, reconstruct
    tike = types.ModuleType("tike")
    tike.__version__ = "0.26.0"
    tike.ptycho = ptycho
    return tike, ptycho


def _fake_cupy(n_gpu):
    import types

    cupy = types.ModuleType("cupy")
    runtime = types.SimpleNamespace(getDeviceCount=lambda: n_gpu)
    cupy.cuda = types.SimpleNamespace(runtime=runtime)
    return cupy


@pytest.mark.parametrize("missing", ["tike", "gpu"])
def test_tike_engine_says_what_is_missing(monkeypatch, missing):
    from ptycho_exp.iterative.tike_engine import reconstruct_tike

    _, probe, pos, diff = simulate(n=16, grid=2, stride=4)
    if missing == "tike":
        monkeypatch.setitem(sys.modules, "tike", None)  # import tike -> ImportError
        monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(1))
        with pytest.raises(RuntimeError, match="needs tike and cupy.*make tike-env"):
            reconstruct_tike(diff, pos, probe, {"iterations": 1})
    else:
        tike, ptycho = _fake_tike_modules()
        monkeypatch.setitem(sys.modules, "tike", tike)
        monkeypatch.setitem(sys.modules, "tike.ptycho", ptycho)
        monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(0))
        with pytest.raises(RuntimeError, match="needs an NVIDIA GPU.*model=ptylab"):
            reconstruct_tike(diff, pos, probe, {"iterations": 1})


def test_tike_engine_plumbing_with_numpy_standin(monkeypatch):
    from skimage.metrics import structural_similarity

    from ptycho_exp.iterative.tike_engine import reconstruct_tike

    tike, ptycho = _fake_tike_modules()
    monkeypatch.setitem(sys.modules, "tike", tike)
    monkeypatch.setitem(sys.modules, "tike.ptycho", ptycho)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(1))
    n = 32
    obj, probe, pos, diff = simulate(n=n, grid=6, stride=8, seed=1)
    gt_offset = np.array([-40.0, 230.0])
    scan = pos + gt_offset
    o, p, origin, err, meta, used = reconstruct_tike(diff, scan, probe, {"iterations": 15, "object_init": 1.0})
    assert meta["engine"] == "tike" and meta["version"] == "0.26.0" and meta["algorithm"] == "rpie"
    np.testing.assert_allclose(used, scan, atol=1e-4)  # positions come back in scan coordinates
    assert meta["positions_fixed"] is True
    assert o.ndim == 2 and o.dtype == np.complex64 and p.shape == (n, n)
    assert err.shape == (15,) and err[-1] < err[0] / 5
    gt, rec = _scanned_crop(obj, o, origin, scan, n, gt_offset)
    a_gt, a_rec = np.abs(gt).astype(np.float64), np.abs(rec).astype(np.float64)
    assert np.all(np.abs(_registration_shift(a_gt, a_rec)) <= 1.0)
    a_rec *= a_gt.mean() / a_rec.mean()
    assert structural_similarity(a_gt, a_rec, data_range=float(np.ptp(a_gt))) > 0.8


# ----------------------------------------------------------------------------------------------------
# Tike (needs tike + cupy + a GPU)
# ----------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAVE_TIKE, reason="tike/cupy not importable (GPU-only engine)")
def test_tike_rpie_reconstructs_registered_object():
    if check_tike_available(sys.executable) is not None:
        pytest.skip(check_tike_available(sys.executable))
    from skimage.metrics import structural_similarity

    from ptycho_exp.iterative.tike_engine import reconstruct_tike

    n = 32
    obj, probe, pos, diff = simulate(n=n, grid=6, stride=8, seed=0)
    o, _, origin, err, meta, _ = reconstruct_tike(diff, pos, probe, {"iterations": 100, "batch_size": 4})
    assert meta["engine"] == "tike" and len(err) == 100 and err[-1] < err[0]
    gt, rec = _scanned_crop(obj, o, origin, pos, n)
    a_gt, a_rec = np.abs(gt).astype(np.float64), np.abs(rec).astype(np.float64)
    assert np.all(np.abs(_registration_shift(a_gt, a_rec)) <= 1.0)
    a_rec *= a_gt.mean() / a_rec.mean()
    rng = float(np.ptp(a_gt))
    assert structural_similarity(a_gt, a_rec, data_range=rng) > 0.2 + structural_similarity(
        a_gt, np.full_like(a_gt, a_gt.mean()), data_range=rng
    )


# ----------------------------------------------------------------------------------------------------
# model=tike without a GPU / tike environment: the job fails at once and says how to fix it
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("python", ["missing", "this"], ids=["no-tike-env", "no-tike-or-gpu"])
def test_tike_job_fails_at_once_with_the_fix(tmp_path, python):
    from tests.helpers.cli import TINY, run_cli

    exe = str(tmp_path / "no-venv-tike" / "bin" / "python") if python == "missing" else sys.executable
    if python == "this" and check_tike_available(sys.executable) is None:
        pytest.skip("tike runs here (GPU machine)")
    out = tmp_path / "job"
    proc = run_cli(["model=tike", *TINY, f"model.iterative.python={exe}", f"hydra.run.dir={out}"], tmp_path,
                   timeout=120)
    assert proc.returncode != 0
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "failed"
    msg = res["error"]
    assert "model=tike cannot run" in msg and "make tike-env" in msg and "model=ptylab" in msg
    assert exe in msg
    if python == "missing":
        assert "not found" in msg
    else:  # this interpreter has no cupy/tike (or no GPU): the reason is named
        assert "import failed" in msg or "CUDA" in msg or "GPU" in msg
    # at once: before any data was simulated or loaded
    assert "data" not in res
    assert not list((tmp_path / "cache").glob("*.npz"))


def test_engine_settings_accept_the_config_names():
    """workflow.iterative_settings passes model.iterative.* names; the engines must not ignore them."""
    from ptycho_exp.iterative import ptylab_engine, tike_engine

    s = ptylab_engine._settings({"beta_object": 0.7, "beta_probe": 0.1, "algorithm": "mpie", "iterations": 3})
    assert (s["betaObject"], s["betaProbe"], s["algorithm"]) == (0.7, 0.1, "mPIE")
    t = tike_engine._settings({"adaptive_moments": False, "algorithm": "lstsq_grad", "batch_size": 4})
    assert (t["use_adaptive_moment"], t["algorithm"], t["batch_size"]) == (False, "lstsq_grad", 4)
    assert t["positions_fixed"] is True
    assert tike_engine._settings({"position_correction": True})["positions_fixed"] is False
    s = ptylab_engine._settings({"algorithm": "rpie", "alpha_object": 0.3, "position_correction": True})
    assert (s["algorithm"], s["alphaObject"], s["position_correction"]) == ("rPIE", 0.3, True)
    # ePIE with position correction runs PtyLab's mPIE engine with ePIE's update (alpha 1, no momentum)
    assert ptylab_engine.engine_plan(ptylab_engine._settings({"position_correction": True})) == (
        "mPIE", {"alphaObject": 1.0, "alphaProbe": 1.0, "feedbackM": 0.0, "frictionM": 0.0})
    assert ptylab_engine.engine_plan(ptylab_engine._settings({})) == ("ePIE", {})
    assert ptylab_engine.engine_plan(s) == ("mPIE", {"alphaObject": 0.3, "alphaProbe": 0.1, "feedbackM": 0.0,
                                                     "frictionM": 0.0})


def test_tike_count_scale_brings_data_to_counts():
    from ptycho_exp.iterative.tike_engine import tike_count_scale

    rng = np.random.default_rng(0)
    intensity = rng.random((5, 16, 16)) * 1e-3
    c = tike_count_scale(intensity, 100.0)
    assert np.mean(c * intensity) == pytest.approx(100.0)
    assert tike_count_scale(np.zeros((2, 4, 4))) == 1.0


# ----------------------------------------------------------------------------------------------------
# Divergence checks (ptycho_exp.iterative.health)
# ----------------------------------------------------------------------------------------------------
def _transmission_case(n=16, seed=0):
    """A smooth transmission object (|O| ≈ 0.8), a probe, a 5×5 grid and the data's mean pattern energy."""
    obj, probe, pos, diff = simulate(n=n, grid=5, stride=4, seed=seed)
    energy = float(np.mean(np.sum(diff.astype(np.float64) ** 2, axis=(-2, -1))))
    return obj, probe, pos, energy


def test_probe_power_matches_pattern_energy_by_parseval():
    """The fact the probe check rests on: mean pattern energy = Σ|P|² · (illumination-weighted mean |O|²)."""
    from ptycho_exp.iterative.health import illuminated_mean_amplitude

    obj, probe, pos, energy = _transmission_case()
    power = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
    o2 = illuminated_mean_amplitude(np.abs(obj) ** 2, probe, (0.0, 0.0), pos)
    assert energy == pytest.approx(power * o2, rel=1e-5)


def test_assess_run_passes_a_healthy_run_and_names_each_failure():
    from ptycho_exp.iterative.health import assess_run

    obj, probe, pos, energy = _transmission_case()
    curve = 20.0 * 0.9 ** np.arange(30)
    ok = assess_run(curve, probe, obj, (0.0, 0.0), pos, energy, final_data_error=curve[-1])
    assert not ok.failed and ok.failure_reason is None
    assert ok.error_curve == curve.tolist()
    assert ok.probe_norm == pytest.approx(np.linalg.norm(probe.astype(np.complex128)), rel=1e-6)
    assert 0.25 < ok.object_norm < 0.95  # the simulated object's amplitude lies in 0.6 ± 0.35
    assert ok.data_norm == pytest.approx(np.sqrt(energy))

    # error up by orders of magnitude from its minimum (a run-away engine: e.g. 22.7 -> 2.9e13)
    rising = np.concatenate([curve[:10], curve[9] * np.logspace(0, 12, 20)])
    bad = assess_run(rising, probe, obj, (0.0, 0.0), pos, energy)
    assert bad.failed and "data error rose from its minimum" in bad.failure_reason
    # a moderate wiggle is not a divergence
    assert not assess_run(np.concatenate([curve, curve[-1:] * 3]), probe, obj, (0, 0), pos, energy).failed
    # the returned object/probe much worse than the logged curve
    late = assess_run(curve, probe, obj, (0.0, 0.0), pos, energy, final_data_error=1e6)
    assert late.failed and "returned object and probe" in late.failure_reason
    # non-finite values
    nan_curve = curve.copy()
    nan_curve[12:] = np.nan
    nf = assess_run(nan_curve, probe, obj, (0.0, 0.0), pos, energy)
    assert nf.failed and "non-finite data error from iteration 13" in nf.failure_reason
    nan_obj = obj.copy()
    nan_obj[3, 3] = np.inf
    assert "non-finite values in the object" in assess_run(curve, probe, nan_obj, (0, 0), pos, energy).failure_reason
    # probe far from the data's power, object scale drifted (probe × c, object / c fits the same data)
    drift = assess_run(curve, probe * 1e4, obj / 1e4, (0.0, 0.0), pos, energy)
    assert drift.failed
    assert "probe power" in drift.failure_reason and "object mean amplitude" in drift.failure_reason
    assert drift.probe_norm == pytest.approx(ok.probe_norm * 1e4, rel=1e-5)
    # a factor 10 in amplitude is not yet a failure (absorbing objects, detector cut-offs)
    assert not assess_run(curve, probe * 3, obj / 3, (0.0, 0.0), pos, energy).failed


def test_result_health_travels_through_the_files(tmp_path):
    """The worker's health record and the corrected positions survive write -> read (and a cache copy)."""
    from ptycho_exp.iterative.health import assess_run

    obj, probe, pos, energy = _transmission_case()
    curve = np.array([5.0, 1.0, 1e4])
    health = assess_run(curve, probe, obj, (0.0, 0.0), pos, energy).as_dict()
    meta = {"engine": "ptylab", "version": "x", "algorithm": "ePIE", "iterations": 3, "seconds": 1.0,
            "health": health}
    res = read_engine_output(write_engine_output(tmp_path / "o.npz", obj, probe, (0, 0), curve, meta,
                                                 positions=pos + 0.25))
    assert res.failed and "rose" in res.failure_reason
    assert res.error_curve == [5.0, 1.0, 1e4]
    np.testing.assert_array_equal(res.positions, pos + 0.25)
    # a copy written without positions (as the engine cache does) keeps the verdict
    again = read_engine_output(write_engine_output(tmp_path / "c.npz", res.object, res.probe, res.origin,
                                                   res.data_error, res.metadata))
    assert again.failed and again.failure_reason == res.failure_reason
    assert again.probe_norm == pytest.approx(res.probe_norm)


# ----------------------------------------------------------------------------------------------------
# The default iterative reference on the project's simulated scans (clean, and measured-like)
# ----------------------------------------------------------------------------------------------------
def _project_scan(measured_like: bool, jitter: float = 1.0):
    """The project's simulator at N=32, object 128, grid step 8 (169 positions).

    measured-like: ~1e5 counts per pattern (Poisson), a defocused probe, position jitter."""
    from ptycho_exp.config import DataConfig
    from ptycho_exp.data.simulate import simulate_object_scan

    extra = dict(nphotons=1e5, probe="defocused", probe_defocus=3.0, jitter=jitter) if measured_like else {}
    cfg = DataConfig(N=32, object_size=128, test_stride=8.0, **extra)
    return simulate_object_scan(cfg, "test")


def _score(obj, origin, positions, gt, n):
    from ptycho_exp.evaluate.pipeline import evaluate_object

    return evaluate_object(obj, origin, positions, gt, patch_size=n, upsample_factor=20).metrics


@needs_ptylab
@pytest.mark.parametrize("case", [pytest.param("clean", marks=pytest.mark.e2e), "measured-like"])  # 10 s each
def test_default_reference_converges_on_simulated_scans(tmp_path, case):
    from types import SimpleNamespace

    from ptycho_exp.config import EvalConfig
    from ptycho_exp.iterative.ptylab_engine import forward_intensity, normalised_data_error
    from ptycho_exp.physics.probe import make_probe
    from ptycho_exp.workflow import reference_settings

    settings = reference_settings(SimpleNamespace(eval=EvalConfig()))  # the defaults, as jobs use them
    assert settings["algorithm"] == "ePIE" and settings["iterations"] == EvalConfig().reference_iterations
    scan = _project_scan(case == "measured-like")
    n = scan.N
    # measured-like: the engine does not know the probe's defocus (it starts from the ideal disk)
    guess = make_probe("ideal_disk", n) if case == "measured-like" else scan.probe
    res = run_engine(scan.diffraction, scan.positions, guess, settings, workdir=tmp_path, timeout_s=300)
    assert not res.failed, res.failure_reason
    assert len(res.error_curve) == settings["iterations"]
    err = np.asarray(res.error_curve)
    assert err[-1] < err[0] / 3 and err[-1] <= 1.05 * err.min()  # converged, no late climb
    # data error of the returned object/probe near the noise floor: the truth's own error on these data
    intensity = scan.diffraction.astype(np.float64) ** 2
    tl = np.round(scan.positions - n / 2).astype(int)
    floor = normalised_data_error(intensity, forward_intensity(scan.object, scan.probe, tl))
    final = res.metadata["final_data_error"]
    assert final < max(2.0 * floor, 0.03 * err[0]), (final, floor, err[0])
    # norms as the data imply: probe power ≈ pattern energy / mean|O|², object amplitude of order 1
    assert 0.5 < res.object_norm < 1.5
    energy = float(np.mean(intensity.sum(axis=(-2, -1))))
    assert 0.5 < res.probe_norm**2 * res.object_norm**2 / energy < 2.0
    # a real reconstruction: clearly better than a flat object on the same scored region
    rec = _score(res.object, res.origin, scan.positions, scan.object, n)
    flat = _score(np.ones_like(res.object), res.origin, scan.positions, scan.object, n)
    assert rec["amp_ssim"] > flat["amp_ssim"] + 0.3, (rec["amp_ssim"], flat["amp_ssim"])
    assert rec["amp_mae"] < 0.5 * flat["amp_mae"], (rec["amp_mae"], flat["amp_mae"])


@needs_ptylab
@pytest.mark.parametrize("how", ["beta_object=50", "probe x1e6, fixed"])
def test_a_diverging_run_is_marked_failed_with_the_reason(tmp_path, how):
    from ptycho_exp.physics.probe import make_probe

    scan = _project_scan(True)
    guess = make_probe("ideal_disk", scan.N)
    settings = {"engine": "ptylab", "algorithm": "ePIE", "iterations": 20}
    if how == "beta_object=50":
        settings["beta_object"] = 50.0
    else:  # a probe a million times too bright, neither rescaled nor refined: the object must shrink 1e6×
        guess = guess * 1e6
        settings.update(probe_refine=False, probe_power_match=0)
    res = run_engine(scan.diffraction, scan.positions, guess, settings, workdir=tmp_path, timeout_s=300)
    assert res.failed
    expected = "rose from its minimum|non-finite" if how == "beta_object=50" else "probe power .* mean pattern energy"
    assert re.search(expected, res.failure_reason), res.failure_reason
    from ptycho_exp.iterative import DivergedRun, raise_if_failed

    with pytest.raises(DivergedRun, match="the reference .*ePIE, 20 iterations.* diverged"):
        raise_if_failed(res, "the reference")


@needs_ptylab
def test_probe_guess_at_the_wrong_scale_is_matched_to_the_data(tmp_path):
    """A measured probe handed over at an arbitrary scale (here ×1e6) is rescaled once to the data's power."""
    from ptycho_exp.physics.probe import make_probe

    scan = _project_scan(True)
    guess = make_probe("ideal_disk", scan.N) * 1e6
    res = run_engine(scan.diffraction, scan.positions, guess, {"engine": "ptylab", "iterations": 20},
                     workdir=tmp_path, timeout_s=300)
    assert not res.failed, res.failure_reason
    assert 1e-7 < res.metadata["initial_probe_scale"] < 1e-5
    assert 0.5 < res.object_norm < 1.5


# ----------------------------------------------------------------------------------------------------
# Position correction on a measured-like scan whose true positions the engine is not told
# ----------------------------------------------------------------------------------------------------
@needs_ptylab
@pytest.mark.e2e  # two 100-iteration PtyLab runs (15 s): the e2e stage
def test_position_correction_beats_uncorrected_positions(tmp_path):
    from ptycho_exp.physics.probe import make_probe
    from ptycho_exp.physics.scan import grid_positions

    scan = _project_scan(True, jitter=1.5)  # the simulator knows the jittered positions
    n = scan.N
    nominal = grid_positions(128, n, 8.0)  # what the engine is given: the un-jittered grid
    true_rms = float(np.sqrt(np.mean(np.sum((scan.positions - nominal) ** 2, axis=1))))
    assert true_rms > 1.5
    guess = make_probe("ideal_disk", n)
    scores, results = {}, {}
    for pc in (False, True):
        settings = {"engine": "ptylab", "algorithm": "ePIE", "iterations": 100, "position_correction": pc}
        res = run_engine(scan.diffraction, nominal, guess, settings, workdir=tmp_path, timeout_s=300)
        assert not res.failed, res.failure_reason
        results[pc] = res
        scores[pc] = _score(res.object, res.origin, nominal, scan.object, n)
    assert results[True].metadata["position_correction"] and results[True].metadata["ptylab_engine"] == "mPIE"
    assert results[False].metadata["ptylab_engine"] == "ePIE"
    # the corrected positions moved towards the truth (up to a common shift, which registration removes)
    moved = results[True].positions
    resid = moved - scan.positions
    corrected_rms = float(np.sqrt(np.mean(np.sum((resid - resid.mean(axis=0)) ** 2, axis=1))))
    assert corrected_rms < 0.8 * true_rms, (corrected_rms, true_rms)
    # and the object is closer to the ground truth after registration
    with_pc, without = scores[True], scores[False]
    assert with_pc["amp_ssim"] > without["amp_ssim"] + 0.1, (with_pc["amp_ssim"], without["amp_ssim"])
    assert with_pc["amp_mae"] < 0.85 * without["amp_mae"], (with_pc["amp_mae"], without["amp_mae"])
    assert with_pc["phase_mae"] < without["phase_mae"], (with_pc["phase_mae"], without["phase_mae"])


# ----------------------------------------------------------------------------------------------------
# model=ptylab jobs: the reconstructed probe is a file networks can use; a diverged arm is a failed job
# ----------------------------------------------------------------------------------------------------
@needs_ptylab
def test_ptylab_job_writes_its_probe_and_fails_when_it_diverges(tmp_path):
    from tests.helpers.cli import TINY, run_cli

    from ptycho_exp.physics.probe import load_probe

    base = ["model=ptylab", *TINY, "model.iterative.iterations=20", "eval.figures=false"]
    ok_dir = tmp_path / "ok"
    proc = run_cli([*base, f"hydra.run.dir={ok_dir}"], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((ok_dir / "result.json").read_text())
    assert res["status"] == "ok"
    health = res["engine"]["health"]
    assert health["failed"] is False and len(health["error_curve"]) == 20
    assert health["probe_norm"] > 0 and 0.5 < health["object_norm"] < 1.5
    probe = load_probe(str(ok_dir / "iterative_probe.npz"))  # the networks' data.probe=file reader
    with np.load(ok_dir / "iterative_probe.npz", allow_pickle=False) as npz:
        assert npz.files == ["probeGuess"] and npz["probeGuess"].dtype == np.complex64
    assert probe.shape == (32, 32)

    # the same run, as a diverged run leaves it (step sizes past 1 are refused by the config, so the engine's
    # verdict is written into the cached result the job reuses): a failed job with the reason, nothing scored
    from ptycho_exp.iterative.protocol import read_engine_output, write_engine_output

    (cached,) = (tmp_path / "cache" / "iterative").glob("*.npz")
    good = read_engine_output(cached)
    write_engine_output(cached, good.object, good.probe, good.origin, good.data_error,
                        {**good.metadata, "failed": True,
                         "failure_reason": "the data error rose from its minimum 0.4 to 5e+12"})
    bad_dir = tmp_path / "bad"
    proc = run_cli([*base, f"hydra.run.dir={bad_dir}"], tmp_path, timeout=300)
    assert proc.returncode != 0
    res = json.loads((bad_dir / "result.json").read_text())
    assert res["status"] == "failed" and res["metrics"] == {}
    assert "model=ptylab reconstruction" in res["error"] and "diverged" in res["error"]
    assert re.search("rose from its minimum|non-finite", res["error"]), res["error"]
    assert not (bad_dir / "iterative_probe.npz").exists() and not (bad_dir / "recon.npz").exists()


@needs_ptylab
def test_epie_on_the_mpie_engine_is_epie(monkeypatch):
    """Position correction runs ePIE on PtyLab's mPIE engine (alpha 1, no momentum): the same iterates."""
    from ptycho_exp.iterative import ptylab_engine

    _, probe, pos, diff = simulate(n=16, grid=4, stride=4, seed=2)
    settings = {"iterations": 5, "position_order": "sequential"}
    ref = ptylab_engine.reconstruct_ptylab(diff, pos, probe, settings)
    assert ref[4]["ptylab_engine"] == "ePIE"
    monkeypatch.setattr(ptylab_engine, "engine_plan", lambda s: (
        "mPIE", {"alphaObject": 1.0, "alphaProbe": 1.0, "feedbackM": 0.0, "frictionM": 0.0}))
    alt = ptylab_engine.reconstruct_ptylab(diff, pos, probe, settings)
    assert alt[4]["ptylab_engine"] == "mPIE"
    np.testing.assert_allclose(alt[3], ref[3], rtol=1e-4)  # data error per iteration
    np.testing.assert_allclose(alt[0], ref[0], rtol=1e-4, atol=1e-5)  # object
    np.testing.assert_allclose(alt[1], ref[1], rtol=1e-4, atol=1e-5)  # probe
