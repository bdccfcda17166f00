"""``ptycho-exp score`` (external reconstructions as job folders) and ``ptycho-exp data export``.

One tiny PINN job (N=32, 1 epoch) runs through the real entry point; its exported test scan and its
reconstruction by ``ptycho-exp predict`` feed every test: predict, then score, gives the job's own metrics.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from tests.helpers.cli import run_cli

JOB = ["model=pinn", "data.N=32", "data.object_size=128", "data.n_train=64", "data.test_stride=8",
       "train.epochs=1", "train.tensorboard=false", "eval.upsample_factor=10"]
UPSAMPLE = ["--upsample-factor", "10"]  # the job's eval.upsample_factor


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("external")


@pytest.fixture(scope="module")
def job(root):
    """A finished tiny PINN job folder (real entry point, dataset cache under ``root``)."""
    r = run_cli([*JOB, f"hydra.run.dir={root / 'job'}"], root)
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "job"


@pytest.fixture(scope="module")
def exported(job, root):
    """``ptycho-exp data export`` of the job: {'train': path, 'test': path}."""
    r = run_cli(["data", "export", str(job), "--out", str(root / "export")], root, module="ptycho_exp.cli")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote" in r.stdout
    return {"train": root / "export" / "train.npz", "test": root / "export" / "test.npz"}


@pytest.fixture(scope="module")
def recon(job, exported, root):
    """``ptycho-exp predict`` of the job's network on the exported test scan: (object, origin [row, col])."""
    out = root / "predicted.npz"
    r = run_cli(["predict", str(job), str(exported["test"]), "--out", str(out)], root, module="ptycho_exp.cli")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "normalised by the training set's factor" in r.stdout
    with np.load(out, allow_pickle=False) as z:
        assert str(z["norm"]) == "model"
        return z["object"], z["origin"].astype(np.int64)


def _score(tmp_path, recon_path, test_path, *extra, out="scored"):
    from ptycho_exp.cli import main

    return main(["score", str(recon_path), "--test", str(test_path), "--out", str(tmp_path / out),
                 *UPSAMPLE, "--no-figures", *extra])


def _metrics(folder):
    return json.loads((folder / "result.json").read_text())["metrics"]


# ------------------------------------------------------------------------------------------ (a)
def test_score_of_our_own_reconstruction_equals_the_jobs_metrics(job, exported, recon, tmp_path, root):
    obj, origin = recon
    path = tmp_path / "ours.npz"
    np.savez(path, object=obj, origin=origin)
    r = run_cli(["score", str(path), "--test", str(exported["test"]), "--label", "ours", "--out",
                 str(tmp_path / "ext"), *UPSAMPLE], root, module="ptycho_exp.cli")
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((tmp_path / "ext" / "result.json").read_text())
    ours = json.loads((job / "result.json").read_text())
    assert rec["status"] == "ok" and rec["model"] == "external:ours"
    assert rec["scored_against"] == "ground_truth" and rec["data"]["reference"] == "ground_truth"
    from ptycho_exp.external import sha256_file

    assert rec["config"]["data"]["test_path"] == str(exported["test"].resolve())
    assert rec["config"]["data"]["test_sha256"] == sha256_file(exported["test"])
    assert rec["config"]["external"]["origin_from"] == "origin key"
    assert set(rec["metrics"]) == set(ours["metrics"])
    for k, v in ours["metrics"].items():
        assert rec["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-6), k
    # the FRC curves and the registered reconstruction are the job's too
    a = np.loadtxt(job / "frc.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(tmp_path / "ext" / "frc.csv", delimiter=",", skiprows=1)
    # ring 0 of the phase curve is the sign of a mean near 0 after phase-plane removal (noise; FRC50 skips it)
    np.testing.assert_allclose(b[1:], a[1:], atol=1e-5)
    with np.load(job / "recon.npz") as zj, np.load(tmp_path / "ext" / "recon.npz") as ze:
        assert np.array_equal(ze["origin"], zj["origin"]) and np.array_equal(ze["gt"], zj["gt"])
        np.testing.assert_allclose(ze["recon"], zj["recon"], atol=1e-4)
        assert str(ze["model"]) == "external:ours"
    assert (tmp_path / "ext" / "compare_amp_phase.png").stat().st_size > 0


def test_score_of_our_own_patches_equals_the_jobs_metrics_and_phase_sync_aligns_them(job, exported, tmp_path):
    """Patches (one per test pattern) are stitched and scored as the job scored its own; --phase-sync scores the
    aligned patches and keeps the job's scores under phase_sync.as_predicted."""
    from ptycho_exp.data.npz import load_contract_npz
    from ptycho_exp.evaluate.phase_sync import align_patch_phases
    from ptycho_exp.evaluate.pipeline import evaluate_reconstruction
    from ptycho_exp.models.fit import load_network, predict_patches

    scan = load_contract_npz(exported["test"])
    model, meta = load_network(job)
    patches = predict_patches(model, scan.diffraction, meta["norm_factor"])[..., 0]
    path = tmp_path / "patches.npz"
    np.savez(path, patches=patches)
    ours = json.loads((job / "result.json").read_text())["metrics"]
    assert _score(tmp_path, path, exported["test"], "--label", "p", out="plain") == 0
    assert _score(tmp_path, path, exported["test"], "--label", "p", "--phase-sync", out="synced") == 0
    plain, synced = (json.loads((tmp_path / o / "result.json").read_text()) for o in ("plain", "synced"))
    assert "phase_sync" not in plain and plain["config"]["external"]["key"] == "patches"
    for k, v in ours.items():
        assert plain["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-6), k
    as_predicted = synced["phase_sync"]["as_predicted"]
    assert as_predicted == {k: plain["metrics"][k] for k in as_predicted} and "phase_ssim" in as_predicted
    assert synced["config"]["eval"]["phase_sync"] is True
    want = evaluate_reconstruction(align_patch_phases(patches, scan.positions, window=10)[0], scan.positions,
                                   scan.object, upsample_factor=10).metrics
    for k in as_predicted:
        assert synced["metrics"][k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
    assert synced["metrics"]["phase_mae"] != plain["metrics"]["phase_mae"]


def test_predict_norm_scan_uses_the_scans_own_factor(job, exported, recon, tmp_path):
    """--norm scan (a scan at another dose): the factor is this scan's own, not the training set's."""
    from ptycho_exp.data.npz import load_contract_npz
    from ptycho_exp.models.fit import compute_norm_factor
    from ptycho_exp.predict import predict_file

    summary = predict_file(job, exported["test"], tmp_path / "own.npz", norm="scan")
    trained = json.loads((job / "model" / "norm.json").read_text())["norm_factor"]
    own = compute_norm_factor(load_contract_npz(exported["test"]).diffraction)
    assert "normalised by the scan's factor" in summary and abs(own / trained - 1) > 1e-3
    with np.load(tmp_path / "own.npz", allow_pickle=False) as z:
        assert str(z["norm"]) == "scan" and float(z["norm_factor"]) == pytest.approx(own, rel=1e-12)
        assert not np.allclose(z["object"], recon[0], atol=1e-4)  # another input scale, another object


# ------------------------------------------------------------------------------------------ (b)
@pytest.mark.parametrize("frame", ["pixel-origin", "transpose", "positions", "hdf5-amp-phase", "test-frame",
                                   "scan-corner"])
def test_reconstruction_in_another_pixel_frame_scores_the_same(frame, recon, exported, tmp_path):
    from ptycho_exp.data.npz import load_contract_npz

    obj, (r0, c0) = recon
    extra: list[str] = []
    pad_r, pad_c = 7, 12  # a larger canvas: object[0, 0] is elsewhere in the test frame
    big = np.full((obj.shape[0] + pad_r + 3, obj.shape[1] + pad_c + 5), 0.3 + 0.2j, np.complex128)
    big[pad_r:pad_r + obj.shape[0], pad_c:pad_c + obj.shape[1]] = obj
    R, C = int(r0) - pad_r, int(c0) - pad_c  # test-frame coordinate of big[0, 0]
    path = tmp_path / "other.npz"
    if frame == "pixel-origin":
        np.savez(path, object=big.astype(np.complex64))
        extra = [f"--pixel-origin={C},{R}"]  # = lets a negative X through argparse
    elif frame == "transpose":
        np.savez(path, object=big.T.copy())
        extra = [f"--pixel-origin={C},{R}", "--transpose"]
    elif frame == "positions":  # the scan positions in the reconstruction's own frame
        test = load_contract_npz(exported["test"])
        np.savez(path, object=big, xcoords=test.positions[:, 1] - C, ycoords=test.positions[:, 0] - R)
    elif frame == "hdf5-amp-phase":
        import h5py

        path = tmp_path / "other.h5"
        with h5py.File(path, "w") as fh:
            fh["amplitude"], fh["phase"], fh["origin"] = np.abs(big), np.angle(big), np.array([R, C])
    elif frame == "scan-corner":  # object[0, 0] at (min position - N/2), the corner of the scanned area
        test = load_contract_npz(exported["test"])
        y0, x0 = (int(round(v)) for v in test.positions.min(axis=0) - test.N / 2)
        canvas = np.ones((r0 - y0 + obj.shape[0] + 4, c0 - x0 + obj.shape[1] + 4), np.complex128)
        canvas[r0 - y0:r0 - y0 + obj.shape[0], c0 - x0:c0 - x0 + obj.shape[1]] = obj
        np.savez(path, object=canvas)
        extra = ["--positions-from-test"]
    else:  # the objectGuess frame: no origin at all
        test = load_contract_npz(exported["test"])
        canvas = np.ones(test.object.shape, np.complex128)
        canvas[r0:r0 + obj.shape[0], c0:c0 + obj.shape[1]] = obj
        np.savez(path, object=canvas)
    assert _score(tmp_path, path, exported["test"], *extra, out="ref") == 0
    np.savez(tmp_path / "direct.npz", object=obj, origin=np.array([r0, c0]))
    assert _score(tmp_path, tmp_path / "direct.npz", exported["test"], out="direct") == 0
    got, want = _metrics(tmp_path / "ref"), _metrics(tmp_path / "direct")
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-5), k


def test_registration_recovers_a_frame_off_by_whole_pixels(recon, exported, tmp_path):
    """An origin that is wrong by (2, -3) px: registration finds the offset (reg_dy/reg_dx move by it)."""
    obj, (r0, c0) = recon
    np.savez(tmp_path / "a.npz", object=obj, origin=np.array([r0, c0]))
    # the same pixels said to start (2, -3) px from where they do (padded so that they still cover the box)
    big = np.pad(obj, 6, mode="edge")
    np.savez(tmp_path / "b.npz", object=big, origin=np.array([r0 - 6 - 2, c0 - 6 + 3]))
    assert _score(tmp_path, tmp_path / "a.npz", exported["test"], out="a") == 0
    assert _score(tmp_path, tmp_path / "b.npz", exported["test"], out="b") == 0
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert b["reg_dy"] == pytest.approx(a["reg_dy"] + 2, abs=0.15)
    assert b["reg_dx"] == pytest.approx(a["reg_dx"] - 3, abs=0.15)
    assert b["phase_ssim"] == pytest.approx(a["phase_ssim"], abs=0.05)


# ------------------------------------------------------------------------------------------ (c)
def _bad_inputs(tmp_path, obj, origin, test_path):
    """name -> (recon path, test path, extra args, text the message must contain)."""
    from ptycho_exp.data.npz import load_contract_npz

    cases = {}
    p = tmp_path / "nokey.npz"
    np.savez(p, recon=obj)
    cases["missing key"] = (p, test_path, [], "'object'")
    p = tmp_path / "real.npz"
    np.savez(p, object=np.abs(obj).astype(np.float32), origin=origin)
    cases["non-complex"] = (p, test_path, [], "complex")
    p = tmp_path / "small.npz"
    np.savez(p, object=obj[:40, :40], origin=origin)
    cases["smaller than the scanned box"] = (p, test_path, [], "scored on rows")
    p = tmp_path / "badorigin.npz"
    np.savez(p, object=obj, origin=np.array([1, 2, 3]))
    cases["malformed origin"] = (p, test_path, [], "'origin'")
    p = tmp_path / "goodobj.npz"
    np.savez(p, object=obj, origin=origin)
    cases["--key absent"] = (p, test_path, ["--key", "psi"], "'psi'")
    scan = load_contract_npz(test_path)
    p2 = tmp_path / "test_no_gt.npz"
    np.savez(p2, diffraction=scan.diffraction, xcoords=scan.positions[:, 1], ycoords=scan.positions[:, 0],
             probeGuess=scan.probe)
    cases["test without objectGuess"] = (p, p2, [], "--reference")
    p = tmp_path / "badshape.npz"
    np.savez(p, amplitude=np.abs(obj), phase=np.angle(obj)[:-1])
    cases["amplitude/phase shapes differ"] = (p, test_path, [], "differ in shape")
    p = tmp_path / "scaled.npz"
    np.savez(p, object=obj, xcoords=scan.positions[:, 1] * 1.5, ycoords=scan.positions[:, 0] * 1.5)
    cases["positions in another pixel size"] = (p, test_path, [], "pixel size")
    p = tmp_path / "obj3d.npz"
    np.savez(p, object=np.stack([obj, obj]), origin=origin)
    cases["3-D object"] = (p, test_path, [], "2-D")
    p = tmp_path / "missing.h5"
    import h5py

    with h5py.File(p, "w") as fh:
        fh["data"] = np.abs(obj)
    cases["hdf5 without object"] = (p, test_path, [], "'object'")
    cases["no such reconstruction"] = (tmp_path / "absent.npz", test_path, [], "absent.npz")
    cases["bad label"] = (tmp_path / "goodobj.npz", test_path, ["--label", "a b/c"], "--label")
    p = tmp_path / "object_for_sync.npz"
    np.savez(p, object=obj, origin=origin)
    cases["--phase-sync on an object"] = (p, test_path, ["--phase-sync"], "--phase-sync")
    n = scan.N
    p = tmp_path / "too_few_patches.npz"
    np.savez(p, patches=np.ones((scan.n_positions - 1, n, n), np.complex64))
    cases["a patch count that is not the test scan's"] = (p, test_path, [], "one")
    p = tmp_path / "wrong_size_patches.npz"
    np.savez(p, patches=np.ones((scan.n_positions, n + 2, n + 2), np.complex64))
    cases["patches of another size"] = (p, test_path, [], "per test pattern")
    p = tmp_path / "real_patches.npz"
    np.savez(p, patches=np.ones((scan.n_positions, n, n), np.float32))
    cases["real patches"] = (p, test_path, [], "complex")
    p = tmp_path / "placed_patches.npz"
    np.savez(p, patches=np.ones((scan.n_positions, n, n), np.complex64))
    cases["patches with --pixel-origin"] = (p, test_path, ["--pixel-origin=3,4"], "--pixel-origin")
    return cases


BAD = ["missing key", "non-complex", "smaller than the scanned box", "malformed origin", "--key absent",
       "test without objectGuess", "amplitude/phase shapes differ", "positions in another pixel size", "3-D object",
       "hdf5 without object", "no such reconstruction", "bad label", "--phase-sync on an object",
       "a patch count that is not the test scan's", "patches of another size", "real patches",
       "patches with --pixel-origin"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, recon, exported, tmp_path, capsys):
    obj, origin = recon
    recon_path, test_path, extra, text = _bad_inputs(tmp_path, obj, origin, exported["test"])[case]
    capsys.readouterr()
    assert _score(tmp_path, recon_path, test_path, *extra, out="never") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and text in err and "Fix" in err, err
    assert not (tmp_path / "never").exists()


def test_reference_file_stands_in_for_a_missing_objectGuess(recon, exported, tmp_path):
    from ptycho_exp.data.npz import load_contract_npz

    obj, origin = recon
    scan = load_contract_npz(exported["test"])
    np.savez(tmp_path / "o.npz", object=obj, origin=origin)
    np.savez(tmp_path / "t.npz", diffraction=scan.diffraction, xcoords=scan.positions[:, 1],
             ycoords=scan.positions[:, 0], probeGuess=scan.probe)
    np.savez(tmp_path / "ref.npz", objectGuess=scan.object)
    assert _score(tmp_path, tmp_path / "o.npz", tmp_path / "t.npz", "--reference", str(tmp_path / "ref.npz"),
                  out="r") == 0
    assert _score(tmp_path, tmp_path / "o.npz", exported["test"], out="g") == 0
    rec = json.loads((tmp_path / "r" / "result.json").read_text())
    assert rec["scored_against"] == "reference:ref.npz"
    assert rec["metrics"] == _metrics(tmp_path / "g")


def test_score_refuses_to_overwrite_a_trained_job(recon, exported, job, tmp_path, capsys):
    obj, origin = recon
    np.savez(tmp_path / "o.npz", object=obj, origin=origin)
    before = (job / "result.json").read_bytes()
    from ptycho_exp.cli import main

    assert main(["score", str(tmp_path / "o.npz"), "--test", str(exported["test"]), "--out", str(job)]) == 2
    assert "pinn" in capsys.readouterr().err
    assert (job / "result.json").read_bytes() == before


# ------------------------------------------------------------------------------------------ (d)
def test_aggregate_shows_an_external_arm_in_tables_findings_and_the_three_way_figure(
        job, recon, exported, tmp_path):
    import pandas as pd

    from ptycho_exp.aggregate import aggregate

    obj, origin = recon
    np.savez(tmp_path / "theirs.npz", object=obj * np.exp(0.1j), origin=origin)  # a global phase: same scores
    assert _score(tmp_path, tmp_path / "theirs.npz", exported["test"], "--label", "theirs", out="ext") == 0
    aggregate([job, tmp_path / "ext"], tmp_path / "agg")
    res = pd.read_csv(tmp_path / "agg" / "results.csv")
    assert set(res["model"]) == {"pinn", "external:theirs"}
    ext = res[(res["model"] == "external:theirs") & (res["metric"] == "amp_ssim")]
    assert len(ext) == 1 and int(ext["n_valid"].iloc[0]) == 1
    assert ext["mean"].iloc[0] == pytest.approx(_metrics(job)["amp_ssim"], abs=1e-5)
    findings = pd.read_csv(tmp_path / "agg" / "findings.csv")
    pairs = set(findings["winner"]) | set(findings["runner_up"])
    assert pairs == {"pinn", "external:theirs"}
    assert "external:theirs" in (tmp_path / "agg" / "STUDY_SUMMARY.md").read_text()
    # the three-way figure needs two arms: the PINN job alone draws none, with the external arm it is drawn
    assert (tmp_path / "agg" / "plots" / "three_way_seed1.png").is_file()
    aggregate([job], tmp_path / "alone")
    assert not (tmp_path / "alone" / "plots" / "three_way_seed1.png").exists()


# ------------------------------------------------------------------------------------------ (e)
def _job_datasets(cfg: dict):
    from ptycho_exp.config import NETWORK_MODELS
    from ptycho_exp.data.datasets import build_datasets
    from ptycho_exp.run import as_config

    c = as_config(cfg)
    return build_datasets(c.data, seed=c.seed, cache_dir=c.paths.cache_dir, need_train=c.model.name in NETWORK_MODELS)


def test_export_then_import_gives_the_jobs_exact_arrays(job, exported):
    from ptycho_exp.data.npz import load_contract_npz

    cfg = json.loads((job / "result.json").read_text())["config"]
    ds = _job_datasets(cfg)
    train, test = load_contract_npz(exported["train"]), load_contract_npz(exported["test"])
    assert train.diffraction.dtype == np.float32 and train.diffraction.shape == (64, 32, 32)
    assert np.array_equal(train.diffraction, ds.train.diffraction[..., 0])
    assert np.array_equal(train.positions, ds.train.positions[:, 0])
    assert np.array_equal(train.object, ds.train_scan.object)
    assert np.array_equal(train.probe, ds.train_scan.probe) and np.array_equal(train.probe, ds.test_scan.probe)
    assert np.array_equal(test.diffraction, ds.test.diffraction[..., 0])
    assert np.array_equal(test.positions, ds.test.positions[:, 0])
    assert np.array_equal(test.object, ds.test_scan.object) and np.array_equal(test.probe, ds.test_scan.probe)
    with np.load(exported["train"], allow_pickle=False) as z:
        assert np.array_equal(z["xcoords_start"], z["xcoords"]) and np.array_equal(z["ycoords_start"], z["ycoords"])
        assert np.array_equal(z["pattern_index"], ds.train.groups[:, 0])
        assert z["scan_index"].dtype == np.int64 and not z["scan_index"].any()
        meta = json.loads(str(z["meta_json"]))
        assert meta["split"] == "train" and meta["seed"] == cfg["seed"] and meta["n_train"] == 64


def test_export_of_grouped_samples_rebuilds_every_group(job, tmp_path):
    """gridsize 2, two training objects: the file's ``groups`` index its patterns into the job's exact samples."""
    from ptycho_exp.cli import main
    from ptycho_exp.data.npz import load_contract_npz

    cfg = json.loads((job / "result.json").read_text())["config"]
    cfg["data"].update({"gridsize": 2, "n_train_objects": 2, "n_train": 48, "n_test": 20})
    (tmp_path / "job2").mkdir()
    (tmp_path / "job2" / "job_config.json").write_text(json.dumps(cfg))
    assert main(["data", "export", str(tmp_path / "job2"), "--out", str(tmp_path / "x")]) == 0
    ds = _job_datasets(cfg)
    for name, samples, scan in (("train", ds.train, ds.train_scan), ("test", ds.test, ds.test_scan)):
        loaded = load_contract_npz(tmp_path / "x" / f"{name}.npz")
        with np.load(tmp_path / "x" / f"{name}.npz", allow_pickle=False) as z:
            groups, scan_index = z["groups"], z["scan_index"]
        assert groups.shape == samples.groups.shape
        assert np.array_equal(np.moveaxis(loaded.diffraction[groups], 1, -1), samples.diffraction)
        assert np.array_equal(loaded.positions[groups], samples.positions)
        assert loaded.n_positions == len(np.unique(samples.groups))
        if name == "train":  # two objects side by side: each pattern says which one it is on
            right = loaded.positions[:, 1] > scan.meta["object_origins"][1][1]
            assert np.array_equal(scan_index, right.astype(np.int64)) and right.any() and (~right).any()


def test_export_of_a_folder_without_a_job_is_one_line_exit_2(tmp_path, capsys):
    from ptycho_exp.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["data", "export", str(tmp_path / "empty"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no job config" in err
    assert not (tmp_path / "x").exists()
