"""Experimental data (no ground truth): split one scan into disjoint halves, train the PINN and run the
iterative arm on them, score against an iterative reference, and refuse the supervised baseline."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from tests.helpers.cli import run_cli

pytest.importorskip("PtyLab")

N = 32
# a dense 25x25 test scan of one 128 px object (stride 4 px), cut into top/bottom halves
SIM = [f"data.N={N}", "data.object_size=128", "data.test_stride=4", "data.nphotons=1e9"]
JOB = [f"data.N={N}", "data=npz", "data.n_train=64", "train.epochs=1", "train.batch_size=16",
       "train.tensorboard=false", "eval.figures=false", "eval.upsample_factor=10",
       "eval.reference_iterations=20", "model.iterative.iterations=15"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """full.npz (simulated contract file), nogt.npz (objectGuess and Y removed), train/test halves."""
    d = tmp_path_factory.mktemp("experimental")
    proc = run_cli(["data", "simulate", "--out", str(d / "full.npz"), "--which", "test", *SIM], d,
                   module="ptycho_exp.cli", timeout=120)
    assert proc.returncode == 0, proc.stderr
    with np.load(d / "full.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in ("objectGuess", "Y")}
        assert "objectGuess" in z.files
    np.savez(d / "nogt.npz", **arrays)
    proc = run_cli(["data", "split", str(d / "nogt.npz"), "--train-out", str(d / "train.npz"),
                    "--test-out", str(d / "test.npz")], d, module="ptycho_exp.cli", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return d


def _job(args, d, name):
    out = d / name
    proc = run_cli([*JOB, f"data.train_path={d / 'train.npz'}", f"data.test_path={d / 'test.npz'}", *args,
                    f"hydra.run.dir={out}"], d, timeout=300)
    log = proc.stdout + proc.stderr + ((out / "job.log").read_text() if (out / "job.log").is_file() else "")
    return proc, log, json.loads((out / "result.json").read_text())


def test_split_halves_are_spatially_disjoint(files):
    with np.load(files / "nogt.npz", allow_pickle=False) as z:
        m_all = z["diffraction"].shape[0]
    halves = {}
    for name in ("train", "test"):
        with np.load(files / f"{name}.npz", allow_pickle=False) as z:
            assert "objectGuess" not in z.files and "Y" not in z.files
            halves[name] = (z["ycoords"], z["xcoords"], z["diffraction"].shape[0])
    (ytr, _, mtr), (yte, _, mte) = halves["train"], halves["test"]
    assert mtr > 50 and mte > 50 and mtr + mte < m_all  # a gap band was dropped
    # no object pixel is seen by patches of both halves: top edge of the test patches is below the
    # bottom edge of the training patches
    assert ytr.max() + N / 2 <= yte.min() - N / 2, (ytr.max(), yte.min())


def test_pinn_and_ptylab_score_against_an_iterative_reference(files):
    proc, log, res = _job(["model=pinn"], files, "pinn")
    assert res["status"] == "ok", res.get("error") or proc.stderr[-3000:]
    assert res["data"]["reference"] == "iterative:ptylab-ePIE-20"
    assert res["data"]["has_ground_truth"] is False
    assert res["timings"]["reference_s"] > 0
    for key in ("amp_ssim", "phase_ssim", "amp_frc50", "amp_pearson"):
        assert np.isfinite(res["metrics"][key]), key
        assert np.isfinite(res["metrics"][f"null_{key}"]), key  # the best constant image, same pixels
    assert res["scored_against"] == "ptylab:ePIE:20"
    assert res["metrics_valid"] is True and res["invalid_reason"] is None and res["metrics_version"] == 2
    assert not any(k.startswith("ref_") for k in res["metrics"])  # no ground truth to score the reference on
    assert "scoring against an iterative reference" in log  # the implicit fallback is announced

    # the iterative arm, with the reference asked for explicitly: same reference, reused from the cache
    proc, log, res2 = _job(["model=ptylab", "eval.reference=iterative"], files, "ptylab")
    assert res2["status"] == "ok", res2.get("error") or proc.stderr[-3000:]
    assert res2["data"]["reference"] == "iterative:ptylab-ePIE-20"
    assert "scoring against an iterative reference" not in log
    assert "reference ptylab result from cache" in log
    assert res2["engine"]["engine"] == "ptylab" and res2["engine"]["iterations"] == 15
    assert res2["engine"]["failed"] is False and res2["scored_against"] == "ptylab:ePIE:20"
    assert res2["engine"]["cached"] is False and res2["timings"]["engine_wall_s"] >= res2["timings"]["inference_s"]
    # the iterative arm reconstructs the same test positions the networks are scored on
    assert res2["engine"]["n_positions"] == res2["data"]["test"]["n_samples"] == res["data"]["test"]["n_samples"]
    assert np.isfinite(res2["metrics"]["amp_ssim"]) and res2["timings"]["train_s"] == 0.0
    # a 15-iteration ePIE against a 20-iteration ePIE reference of the same data agrees well
    assert res2["metrics"]["amp_pearson"] > 0.5, res2["metrics"]
    with np.load(files / "ptylab" / "recon.npz", allow_pickle=False) as z:
        assert str(z["reference"]) == "iterative:ptylab-ePIE-20"
        assert z["recon"].shape == z["gt"].shape

    # the iterative arm ignores data.n_train: another n_train reuses the engine's result for this seed
    proc, log, res3 = _job(["model=ptylab", "eval.reference=iterative", "data.n_train=32"], files, "ptylab_n32")
    assert res3["status"] == "ok", res3.get("error") or proc.stderr[-3000:]
    assert res3["engine"]["cached"] is True and "iterative ptylab result from cache" in log
    assert res3["metrics"] == res2["metrics"]
    assert res3["timings"]["inference_s"] == res2["timings"]["inference_s"]


def test_a_job_never_scores_against_a_failed_reference(files, tmp_path):
    """The reference of this test scan, cached with the engine's verdict "failed" (as a diverged run is):
    the job fails before any work with the reason, and writes no scores."""
    import shutil

    from ptycho_exp.iterative.protocol import read_engine_output, write_engine_output

    _job(["model=ptylab"], files, "ptylab_ref")  # computes (or reuses) the cached reference
    cache = tmp_path / "cache"
    shutil.copytree(files / "cache", cache)
    (ref,) = (cache / "reference").glob("*.npz")
    good = read_engine_output(ref)
    write_engine_output(ref, good.object, good.probe, good.origin, good.data_error,
                        {**good.metadata, "failed": True, "failure_reason": "data error rose 1e12-fold"})
    out = tmp_path / "job"
    proc = run_cli([*JOB, "model=ptylab", f"data.train_path={files / 'train.npz'}",
                    f"data.test_path={files / 'test.npz'}", f"hydra.run.dir={out}"], tmp_path, timeout=300)
    res = json.loads((out / "result.json").read_text())
    assert proc.returncode != 0
    assert res["status"] == "failed" and res["metrics"] == {}
    assert "iterative reference failed: data error rose 1e12-fold" in res["error"]
    assert "ptylab:ePIE:20" in res["error"]
    assert not (out / "frc.csv").exists() and not (out / "recon.npz").exists()
    # a reference whose object is not finite is refused by the job itself, whatever the engine said
    bad = good.object.copy()
    bad[0, 0] = np.nan
    write_engine_output(ref, bad, good.probe, good.origin, good.data_error, good.metadata)
    proc = run_cli([*JOB, "model=ptylab", f"data.train_path={files / 'train.npz'}",
                    f"data.test_path={files / 'test.npz'}", f"hydra.run.dir={out}"], tmp_path, timeout=300)
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "failed" and "iterative reference failed" in res["error"] and "NaN" in res["error"]


def test_baseline_without_ground_truth_fails_at_once(files):
    proc, log, res = _job(["model=baseline"], files, "baseline")
    assert res["status"] == "failed" and res["error_type"] == "ConfigError"
    msg = res["error"]
    assert "model=baseline needs ground truth" in msg and "objectGuess" in msg and " Y " in msg
    assert "train.npz" in msg and "model=pinn" in msg
    # before any reference reconstruction, training or TensorFlow
    assert not (files / "baseline" / "reference").exists()
    assert "fit_network" not in res.get("traceback", "")
    assert "tensorflow" not in res.get("traceback", "").lower()
    assert proc.returncode != 0 and "objectGuess" in log


def test_n_train_subsampling_gridsize2_is_spatially_unbiased(files):
    from ptycho_exp.config import DataConfig
    from ptycho_exp.data.datasets import build_datasets

    cfg = DataConfig(kind="npz", N=N, gridsize=2, n_train=32, train_path=str(files / "train.npz"),
                     test_path=str(files / "test.npz"))
    ds = build_datasets(cfg, seed=3, cache_dir=str(files / "cache"), need_train=True)
    pos = ds.train_scan.positions
    # the centres training_groups drew (its first draw); each group holds its centre
    drawn = np.random.default_rng(3).choice(len(pos), size=32, replace=False)
    assert all(c in row for c, row in zip(drawn, ds.train.groups, strict=True))
    centres = pos[drawn]
    assert ds.train.groups.shape == (32, 4)
    assert ds.info["spatially_local"] is False
    assert ds.info["train"]["scan"]["subset_area_fraction"] > 0.5
    # centres spread over the whole half: both the upper and lower (and left/right) parts are sampled
    for axis in (0, 1):
        mid = np.median(pos[:, axis])
        assert 0.2 < np.mean(centres[:, axis] < mid) < 0.8
    # not the first 32 in scan order (which would be one spatially local band)
    assert not np.array_equal(np.sort(drawn), np.arange(32))
    # each group is its centre plus near neighbours
    spread = np.linalg.norm(pos[ds.train.groups] - centres[:, None, :], axis=-1).max()
    assert spread <= 3 * ds.info["train"]["scan"]["step"] + 1e-6
    # another seed draws another unbiased subset
    ds2 = build_datasets(cfg, seed=4, cache_dir=str(files / "cache"), need_train=True)
    assert not np.array_equal(ds2.train.groups, ds.train.groups)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
