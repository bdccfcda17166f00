"""Three-way comparison figures (ptycho_exp.report.compare)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from tests.helpers.cli import run_cli

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")


def _png_size(path):
    from matplotlib.image import imread

    return imread(path).shape


def test_three_way_figures_per_seed_from_synthetic_sweep(tmp_path):
    from ptycho_exp.analysis.collect import collect_jobs
    from ptycho_exp.report.compare import three_way_figures
    from tests.helpers.synthetic import write_synthetic_sweep

    write_synthetic_sweep(tmp_path / "sweep", {"model": ["pinn", "baseline", "ptylab"],
                                               "data.n_train": [128, 512], "seed": [1, 2]},
                          recon_shape=(40, 48), failed=[0])
    df = collect_jobs(tmp_path / "sweep")
    paths = three_way_figures(df, tmp_path / "figs")
    assert [p.name for p in paths] == ["three_way_seed1.png", "three_way_seed2.png"]
    for p in paths:
        h, w = _png_size(p)[:2]
        assert w > 1.7 * h and w > 2500  # GT + 3 arms in columns, 2 rows, 300 dpi
    # one arm only: nothing to compare
    assert three_way_figures(df[df["model"] == "pinn"], tmp_path / "one") == []


def test_common_frame_cuts_to_the_shared_box():
    from ptycho_exp.analysis.recon import common_frame

    rng = np.random.default_rng(0)
    obj = rng.normal(size=(60, 60)) + 1j * rng.normal(size=(60, 60))
    a = {"gt": obj[10:50, 12:52], "recon": obj[10:50, 12:52] * 2, "origin": np.array([10, 12]),
         "reference": "ground_truth"}
    b = {"gt": obj[13:47, 14:50], "recon": obj[13:47, 14:50] * 3, "origin": np.array([13, 14]),
         "reference": "ground_truth"}
    gt, (ra, rb) = common_frame([a, b])
    assert gt.shape == ra.shape == rb.shape == (34, 36)
    np.testing.assert_allclose(gt, obj[13:47, 14:50])
    np.testing.assert_allclose(ra, 2 * gt)
    np.testing.assert_allclose(rb, 3 * gt)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("PtyLab") is None, reason="PtyLab not installed")
def test_quick_study_three_way_and_iterative_band(tmp_path):
    """A real quick study with model=pinn,baseline,ptylab: three-way figures, and the aggregate draws the
    iterative arm as a band across the n_train axis."""
    from ptycho_exp.analysis.collect import collect_jobs
    from ptycho_exp.report.compare import three_way_figures

    sweep = tmp_path / "sweep"
    proc = run_cli(["study=quick", "model=pinn,baseline,ptylab", "seed=1", "data.n_train=32,64",
                    "train.epochs=1", "train.tensorboard=false", "eval.figures=false",
                    "model.iterative.iterations=20", f"hydra.sweep.dir={sweep}"], tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = collect_jobs(sweep)
    assert set(df["status"]) == {"ok"}, df[["model", "status", "error"]]
    # ptylab ignores n_train: its second job reuses the first one's engine result (one run per seed)
    import json
    from pathlib import Path

    cached = [json.loads((Path(d) / "result.json").read_text())["engine"]["cached"]
              for d in df.loc[df["model"] == "ptylab", "job_dir"]]
    assert sorted(cached) == [False, True]
    paths = three_way_figures(df, tmp_path / "figs")
    assert [p.name for p in paths] == ["three_way_seed1.png"]
    assert _png_size(paths[0])[1] > 2000  # GT | PINN | baseline | PtyLab
    if importlib.util.find_spec("ptycho_exp.aggregate") is None:
        pytest.skip("ptycho_exp.aggregate not available yet")
    from ptycho_exp.aggregate import aggregate

    out = tmp_path / "agg"
    aggregate([sweep], out)
    svg = (out / "metric_vs_n_train_phase_ssim.svg")
    if not svg.is_file():
        svg = next(out.rglob("metric_vs_n_train_phase_ssim.svg"))
    assert "iterative, no training set" in svg.read_text()
