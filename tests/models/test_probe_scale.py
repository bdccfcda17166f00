"""The probe's overall scale, the counts and the record of file data (docs/CONTRACT.md §1, §2, §4).

- Parseval fixes the scale between probe and normalised patterns; the PINN's probe is fitted to it in
  closed form, so a probe scaled by 0.01 or 100 trains the same network as the true one, and without the
  fit a badly scaled probe learns nothing (the failure seen on measured scans).
- data=npz records the files (SHA-256), the training file's probe and its counts per pattern, and names
  the simulator settings it did not use instead of recording their values.
- data.train_on=test trains the PINN on the scan it reconstructs, without a training file.
Everything runs on the CPU; each test takes well under 90 s on an idle machine (N=32, 128 px object).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time

import numpy as np
import pytest

from ptycho_exp.config import ModelConfig, TrainConfig
from tests.helpers.cli import run_cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

N = 32
# a learnable small case: grf object with phase, a defocused (complex) probe, a dense 4 px training grid
DATA = {"N": N, "object_size": 128, "object": "grf", "object_phase": "tanh", "probe": "defocused",
        "probe_defocus": 2.0, "train_stride": 4, "test_stride": 8, "nphotons": 1e6, "n_train": 160}


def _train_cfg(epochs: int):
    return TrainConfig(epochs=epochs, batch_size=16, learning_rate=2e-3, lr_factor=0.5, lr_patience=2,
                       min_lr=1e-4, early_stopping_patience=6, val_fraction=0.1, precision="float32",
                       jit_compile=False, deterministic=True, verbose="quiet", save_model=False,
                       tensorboard=False)  # the schema's defaults for every other key


def _pinn_cfg():
    return ModelConfig(name="pinn", n_filters_scale=1, nll_weight=1.0, mae_weight=0.0, tv_weight=0.0,
                       realspace_weight=0.0, probe_trainable=False, intensity_scale_trainable=False,
                       probe_big=False, object_big=True)


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.evaluate.pipeline import evaluate_reconstruction

    root = tmp_path_factory.mktemp("probe_scale")
    ds = build_datasets(DATA, seed=1, cache_dir=root / "cache")
    positions = ds.test.positions.reshape(-1, 2)
    flat = evaluate_reconstruction(np.ones((ds.test.n, N, N), np.complex64), positions, ds.test_scan.object,
                                   upsample_factor=10).metrics
    return root, ds, positions, flat


def _fit_and_score(case, factor: float, mode: str, epochs: int = 4):
    from ptycho_exp.evaluate.pipeline import evaluate_reconstruction
    from ptycho_exp.models.fit import fit_network, predict_patches, release_tf

    root, ds, positions, _ = case
    fit = fit_network(_pinn_cfg(), _train_cfg(epochs), ds.train, ds.probe * np.float32(factor),
                      ds.counts_per_pattern, root / f"fit_{mode}_{factor:g}", seed=3, probe_scaling=mode)
    pred = predict_patches(fit.model, ds.test.diffraction, fit.norm_factor)
    metrics = evaluate_reconstruction(pred[..., 0], positions, ds.test_scan.object, upsample_factor=10).metrics
    release_tf()
    return fit, metrics


# --------------------------------------------------------------------------- analytic facts, no training
def test_parseval_fixes_the_probe_scale_in_closed_form():
    """A uniform object of amplitude a gives patterns of energy a**2 * sum|P|**2 (unitary FFT); the fitted
    factor brings any multiple of a probe to the normalised ideal disk's power ratio."""
    from ptycho_exp.physics.forward import diffract, mean_pattern_energy, normalisation_factor
    from ptycho_exp.physics.probe import (
        fitted_probe_factor,
        make_probe,
        probe_power_ratio,
        reference_power_ratio,
    )

    probe = make_probe("defocused", N, defocus=2.0)
    rng = np.random.default_rng(0)
    a = 0.8
    patches = a * np.exp(1j * rng.uniform(-1, 1, (20, N, N)))  # |O| = a everywhere
    energy = mean_pattern_energy(diffract(probe * patches))
    assert energy == pytest.approx(a ** 2 * np.sum(np.abs(probe.astype(np.complex128)) ** 2), rel=1e-5)
    # after the networks' normalisation (mean energy (N/2)**2) the ratio of the full-patch probe power to
    # the patterns' energy is 1/a**2: the amplitude the network has to output is a
    f = normalisation_factor(diffract(probe * patches), N)
    assert probe_power_ratio(probe * f) == pytest.approx(1 / a ** 2, rel=1e-4)

    support = N // 2
    ref = reference_power_ratio(N, support)
    assert 1.5 < ref < 3.0  # the normalised ideal disk: the network outputs ~0.6-0.7 for |O| = 1
    assert fitted_probe_factor(make_probe("ideal_disk", N), support) == 1.0
    for k in (1e-2, 1.0, 3.7, 1e2):
        c = fitted_probe_factor(probe * k, support)
        assert probe_power_ratio(probe * k * c, support) == pytest.approx(ref, rel=1e-5)
        assert c * k == pytest.approx(fitted_probe_factor(probe, support), rel=1e-5)
    with pytest.raises(ValueError, match="no power"):
        fitted_probe_factor(np.zeros((N, N), np.complex64), support)


# --------------------------------------------------------------------------- training
@pytest.mark.e2e  # trains networks in real jobs: the e2e stage
def test_pinn_reconstructs_as_well_with_a_probe_scaled_by_001_or_100(small_case, caplog):
    _, _, _, flat = small_case
    t0 = time.time()
    runs = {}
    with caplog.at_level(logging.WARNING, logger="ptycho_exp.models.pinn"):
        for factor in (1.0, 0.01, 100.0):
            runs[factor] = _fit_and_score(small_case, factor, "fit")
    seconds = time.time() - t0
    _, true = runs[1.0]
    assert true["amp_ssim"] > flat["amp_ssim"] + 0.04, (true, flat)  # a real reconstruction, not a flat image
    assert true["amp_pearson"] > 0.6, true
    for factor in (0.01, 100.0):
        fit, m = runs[factor]
        assert fit.scaling["probe_scale_fitted"] == pytest.approx(runs[1.0][0].scaling["probe_scale_fitted"] / factor,
                                                                  rel=1e-5)
        assert fit.scaling["power_ratio_used"] == pytest.approx(fit.scaling["target_ratio"], rel=1e-5)
        for key in ("amp_ssim", "phase_ssim"):
            assert abs(m[key] - true[key]) < 0.03, (factor, key, m[key], true[key])
        assert m["amp_ssim"] > flat["amp_ssim"] + 0.04 and m["amp_pearson"] > 0.6, (factor, m)
    # the badly scaled probes were reported with their power against the data's (the true one was not)
    warned = [r.getMessage() for r in caplog.records if "probe power / mean pattern energy" in r.getMessage()]
    assert len(warned) == 2, warned
    for message, factor in zip(warned, (0.01, 100.0), strict=True):
        ratio = runs[factor][0].scaling["data_power_ratio"]
        assert ratio == pytest.approx(runs[1.0][0].scaling["data_power_ratio"] * factor ** 2, rel=1e-4)
        assert f"= {ratio:.3g} " in message, (message, ratio)
    print(f"3 fits in {seconds:.0f} s")


@pytest.mark.e2e  # trains networks in real jobs: the e2e stage
def test_without_the_fit_a_probe_scaled_by_001_learns_nothing(small_case, caplog):
    """model.probe_scaling=off: the sigmoid amplitude (<= 1) cannot make up the probe's 1e-4 power."""
    _, _, _, flat = small_case
    with caplog.at_level(logging.WARNING, logger="ptycho_exp.models.pinn"):
        fit, m = _fit_and_score(small_case, 0.01, "off")
    assert any("normalised pattern energy" in r.getMessage() and "model.probe_scaling=fit" in r.getMessage()
               for r in caplog.records)
    assert fit.scaling["probe_scale_fitted"] == 1.0 and fit.scaling["power_ratio"] < 1e-3
    assert m["amp_pearson"] < 0.3 and m["amp_ssim"] < flat["amp_ssim"] + 0.03, m


# --------------------------------------------------------------------------- file data: record and train_on
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """train.npz: measured-like (amplitude = sqrt(counts), no meta, probe in arbitrary units x0.05);
    test.npz: a contract file as ptycho_exp writes it (photon_scale in its meta, probe x3)."""
    from ptycho_exp.data.npz import save_contract_npz
    from ptycho_exp.data.simulate import simulate_object_scan

    d = tmp_path_factory.mktemp("npz")
    fields = {**DATA, "test_stride": 6}
    train = simulate_object_scan(fields, "train")
    test = simulate_object_scan(fields, "test")
    train.diffraction = train.diffraction * np.float32(train.meta["photon_scale"])  # sqrt(counts)
    train.meta = {}
    train.probe = train.probe * np.float32(0.05)
    train.patches = train.object = None
    test.probe = test.probe * np.float32(3.0)
    save_contract_npz(d / "train.npz", train)
    save_contract_npz(d / "test.npz", test)
    plain = simulate_object_scan(fields, "train")  # probe and patterns in the same units, no ground truth
    plain.patches = plain.object = None
    save_contract_npz(d / "train_nogt.npz", plain)
    return d, train, test


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _job(d, name, args, model="pinn"):
    out = d / name
    proc = run_cli(["data=npz", f"data.N={N}", f"data.test_path={d / 'test.npz'}", f"model={model}", "data.n_train=64",
                    "train.epochs=1", "train.tensorboard=false", "eval.figures=false", "eval.upsample_factor=10",
                    *args, f"hydra.run.dir={out}"], d, timeout=300)
    log = proc.stdout + proc.stderr + ((out / "job.log").read_text() if (out / "job.log").is_file() else "")
    res = json.loads((out / "result.json").read_text()) if (out / "result.json").is_file() else None
    return proc, log, res


@pytest.mark.e2e  # trains networks in real jobs: the e2e stage
def test_file_data_records_files_probe_and_counts_not_simulator_settings(files):
    from ptycho_exp.data.datasets import _array_sha256

    d, train, test = files
    proc, log, res = _job(d, "pinn", [f"data.train_path={d / 'train.npz'}"])
    assert res is not None and res["status"] == "ok", proc.stderr[-3000:]
    data = res["data"]
    assert data["train"]["file"]["sha256"] == _sha(d / "train.npz")
    assert data["test"]["file"]["sha256"] == _sha(d / "test.npz")
    assert data["trained_on"] == "training scan"
    # the training file's probe (x0.05), not the test file's (x3)
    assert data["probe"]["source"] == f"file:{d / 'train.npz'}"
    assert data["probe"]["sha256"] == _array_sha256(train.probe.astype(np.complex64))
    assert data["probe"]["sha256"] != _array_sha256(test.probe.astype(np.complex64))
    # counts per pattern measured from each file (the simulated 1e6), never the data.nphotons default 1e9
    for split in ("train", "test"):
        assert data[split]["photons"]["mean_counts_per_pattern"] == pytest.approx(1e6, rel=0.02)
    assert "sqrt(counts)" in data["train"]["photons"]["counts_source"]
    assert "photon_scale" in data["test"]["photons"]["counts_source"]
    assert data["scaling"]["counts_per_pattern"] == pytest.approx(1e6, rel=0.02)
    assert "1000000000" not in json.dumps(data) and "1e+09" not in json.dumps(data)
    assert "ideal_disk" not in json.dumps(data)
    assert {"data.nphotons", "data.probe", "data.probe_scale"} <= set(data["unused_settings"])
    # the x0.05 probe (amplitude units) against patterns in sqrt(counts): warned with the ratio and fitted
    assert data["scaling"]["mode"] == "fit" and data["scaling"]["power_ratio"] < 0.1
    assert data["scaling"]["power_ratio_used"] == pytest.approx(data["scaling"]["target_ratio"], rel=1e-5)
    ratio = data["scaling"]["data_power_ratio"]
    assert ratio < 1e-4 and f"probe power / mean pattern energy of the data = {ratio:.3g}" in log


@pytest.mark.e2e  # trains networks in real jobs: the e2e stage
def test_train_on_test_needs_no_training_file(files):
    d, _, test = files
    proc, log, res = _job(d, "self", ["data.train_on=test"])
    assert res is not None and res["status"] == "ok", proc.stderr[-3000:]
    data = res["data"]
    assert data["trained_on"] == "test scan"
    assert data["train"]["file"] == data["test"]["file"]
    assert data["train"]["n_positions"] == data["test"]["n_positions"] == test.n_positions
    assert data["probe"]["source"] == f"file:{d / 'test.npz'}"
    assert "training on the test scan itself" in log
    assert np.isfinite(res["metrics"]["amp_ssim"])


def test_baseline_refuses_train_on_test(files):
    d, _, _ = files
    proc, _, _ = _job(d, "baseline", ["data.train_on=test"], model="baseline")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "data.train_on" in lines[0] and "model=baseline" in lines[0], proc.stderr


@pytest.mark.e2e  # trains networks in real jobs: the e2e stage
def test_baseline_trains_on_an_iterative_reconstruction_of_the_training_scan(files):
    """data.labels=iterative: a training file without ground truth gets PtyLab's object as its labels."""
    pytest.importorskip("PtyLab")
    d, _, _ = files
    proc, log, res = _job(d, "baseline_iterative", [f"data.train_path={d / 'train_nogt.npz'}", "data.labels=iterative",
                                                    "eval.reference_iterations=20", "train.epochs=3",
                                                    "data.n_train=128"], model="baseline")
    assert res is not None and res["status"] == "ok", proc.stderr[-3000:]
    assert res["data"]["labels"] == "iterative:ptylab-ePIE-20"
    assert any((d / "cache" / "labels").glob("*.npz"))  # the labels' engine run is cached like the reference
    # scored against the test file's true object: the network learnt the labels, not a constant
    with np.load(d / "baseline_iterative" / "recon.npz", allow_pickle=False) as z:
        amp = np.abs(z["recon"])
    assert np.std(amp) > 0.02 * np.mean(amp), (np.std(amp), np.mean(amp))
    assert res["metrics"]["amp_pearson"] > 0.3, res["metrics"]
