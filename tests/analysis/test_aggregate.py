"""Aggregation, findings and reports: synthetic sweep folders and one real tiny ``study=quick`` sweep.

The numbers in results.csv are checked against pandas computed here, independently, from
raw_results_all_trials.csv.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ptycho_exp.results import folder_lock
from ptycho_exp.aggregate import RAW_FILE, RESULTS_FILE, aggregate
from ptycho_exp.analysis.collect import NoJobsFound
from ptycho_exp.report.page import write_live_report
from tests.helpers.synthetic import write_synthetic_sweep

from tests.helpers.cli import ROOT, run_cli

GRID = {"model": ["pinn", "baseline", "ptylab"], "data.n_train": [256, 1024], "seed": [1, 2, 3]}
KEYS = ["model", "data.n_train"]
CHECK_METRICS = ["phase_ssim", "amp_ssim", "phase_mae", "amp_frc50", "reg_dx", "timings.train_s"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:32]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def check_results_against_raw(out: Path, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """results.csv == pandas statistics recomputed from raw_results_all_trials.csv (ok jobs, finite values)."""
    raw = pd.read_csv(out / RAW_FILE)
    res = pd.read_csv(out / RESULTS_FILE)
    fill = {k: "<none>" for k in keys}
    raw_k = raw.assign(**{k: raw[k].astype(object).where(raw[k].notna(), "<none>").astype(str) for k in keys})
    res_k = res.assign(**{k: res[k].astype(object).where(res[k].notna(), "<none>").astype(str) for k in keys})
    assert fill  # keys given
    sizes = raw_k.groupby(keys).size()
    failed = raw_k[raw_k["status"] == "failed"].groupby(keys).size()
    used = raw_k[raw_k["status"].isin(["ok", "skipped"]) & ~raw_k["excluded_by_filter"].astype(bool)]
    for metric in metrics:
        r = res_k[res_k["metric"] == metric].set_index(keys)
        assert len(r) == len(sizes), f"{metric}: {len(r)} groups in results.csv, {len(sizes)} in the raw table"
        g = used.dropna(subset=[metric]).groupby(keys)[metric]
        exp = pd.DataFrame({"n_valid": g.count(), "mean": g.mean(), "median": g.median(), "std": g.std(),
                            "p25": g.quantile(0.25), "p75": g.quantile(0.75)})
        for idx, row in r.iterrows():
            assert row["n"] == sizes.loc[idx]
            assert row["n_failed"] == failed.get(idx, 0)
            if idx not in exp.index:
                assert row["n_valid"] == 0 and np.isnan(row["mean"])
                continue
            e = exp.loc[idx]
            assert row["n_valid"] == e["n_valid"], (metric, idx)
            for col in ("mean", "median", "std", "p25", "p75"):
                assert np.isclose(row[col], e[col], rtol=1e-9, atol=1e-12, equal_nan=True), (metric, idx, col)
    return res


# ------------------------------------------------------------------------------ synthetic sweeps
def test_results_match_pandas_and_failures_are_counted(tmp_path):
    sweep = tmp_path / "sweep"
    write_synthetic_sweep(sweep, GRID, failed=[1, 4], running=[7], pending=[8])
    out = tmp_path / "agg"
    summary = aggregate([sweep], out, plots=False)
    assert "2 failed" in summary and "1 running" in summary and "1 pending" in summary
    raw = pd.read_csv(out / RAW_FILE)
    assert len(raw) == 18
    assert raw["data.n_train"][raw["model"] == "ptylab"].isna().all()  # the iterative arm has no training set
    res = check_results_against_raw(out, KEYS, CHECK_METRICS)
    ps = res[res["metric"] == "phase_ssim"]
    assert ps["n_failed"].sum() == 2 and ps["n_unfinished"].sum() == 2 and ps["n"].sum() == 18
    md = (out / "STUDY_SUMMARY.md").read_text()
    assert "2 failed" in md and "RuntimeError: synthetic failure" in md
    best = yaml.safe_load((out / "best_params.yaml").read_text())
    assert best["phase_ssim"]["direction"] == "maximize" and best["phase_mae"]["direction"] == "minimize"
    assert best["phase_ssim"]["best"]["params"]["model"] == "pinn"  # the synthetic PINN is the best arm
    assert best["phase_ssim"]["best"]["std"] > 0 and best["phase_ssim"]["best"]["n_valid"] >= 2
    assert set(best["phase_ssim"]["per_model"]) == {"pinn", "baseline", "ptylab"}
    html = (out / "report.html").read_text()
    assert html.count('class="failed"') == 2
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"https?:", html)  # nothing from the network


def test_min_ms_ssim_phase_filter_is_reported(tmp_path):
    sweep = tmp_path / "sweep"
    write_synthetic_sweep(sweep, GRID)
    raw = pd.read_csv(aggregate_raw(sweep, tmp_path / "plain"))
    thr = float(raw["phase_ms_ssim"].median())
    n_below = int((raw["phase_ms_ssim"] < thr).sum())
    assert 0 < n_below < len(raw)
    out = tmp_path / "filtered"
    summary = aggregate([sweep], out, plots=False, min_ms_ssim_phase=thr)
    assert f"excluded {n_below} jobs" in summary
    assert f"excluded {n_below} of 18 done jobs" in (out / "STUDY_SUMMARY.md").read_text()
    res = check_results_against_raw(out, KEYS, ["phase_ssim", "phase_ms_ssim"])
    r = res[res["metric"] == "phase_ms_ssim"]
    assert r["n_excluded"].sum() == n_below and (r["mean"].dropna() >= thr).all()
    with pytest.raises(ValueError, match="min-ms-ssim-phase"):
        aggregate([sweep], tmp_path / "bad", plots=False, min_ms_ssim_phase=float("nan"))


def aggregate_raw(sweep: Path, out: Path) -> Path:
    aggregate([sweep], out, plots=False)
    return out / RAW_FILE


def _winner_lines(md: str) -> dict[str, str]:
    return dict(re.findall(r"`(\w+)` \(\w+ is better\): \*\*(\w+)\*\* leads", md))


def test_findings_follow_the_numbers(tmp_path):
    grid = {"model": ["pinn", "baseline"], "data.n_train": [512], "seed": [1, 2, 3, 4]}
    texts = {}
    for name, q in (("pinn_better", {"pinn": 0.9, "baseline": 0.6}),
                    ("baseline_better", {"pinn": 0.6, "baseline": 0.9})):
        write_synthetic_sweep(tmp_path / name, grid, quality=q, rng_seed=3)
        aggregate([tmp_path / name], tmp_path / f"{name}_out", plots=False)
        texts[name] = (tmp_path / f"{name}_out" / "STUDY_SUMMARY.md").read_text()
        f = pd.read_csv(tmp_path / f"{name}_out" / "findings.csv")
        expected = "pinn" if name == "pinn_better" else "baseline"
        assert set(f.loc[f["metric"].isin(["phase_ssim", "amp_ssim"]), "winner"]) == {expected}
        assert (f.loc[f["metric"] == "phase_ssim", "ci95_lo"] > 0).all()  # a 0.3 gap over 4 seeds is resolved
    a, b = texts["pinn_better"], texts["baseline_better"]
    assert _winner_lines(a)["phase_ssim"] == "pinn" and _winner_lines(b)["phase_ssim"] == "baseline"
    assert "pinn beats baseline in 4/4 paired seeds (win rate 100 %)" in a
    assert "pinn beats baseline in 0/4 paired seeds (win rate 0 %)" in b
    strip = lambda t: re.sub(r"Aggregated .* from .*\n", "", t)  # noqa: E731 - the date/path line
    assert strip(a) != strip(b)


def test_no_job_found_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoJobsFound, match="no job folders found"):
        aggregate([empty], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    cases = (([str(empty)], "no job folders found"), ([str(empty), str(tmp_path / "nope")], "does not exist"))
    for args, says in cases:
        proc = subprocess.run([sys.executable, "-m", "ptycho_exp.cli", "aggregate", *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and ("fix" in lines[0] or "pass " in lines[0]), proc.stderr
        assert not (empty / "aggregate").exists()


def test_a_killed_aggregation_leaves_no_temp_file_after_the_next(tmp_path):
    sweep = tmp_path / "sweep"
    write_synthetic_sweep(sweep, GRID)
    out = sweep / "aggregate"
    (out / "plots").mkdir(parents=True)
    left = [out / ".best_params.yaml.k3x9q1.tmp", out / "plots" / "heatmap.png.tmp", out / ".tmp-report.html"]
    for p in left:  # what SIGKILL during the atomic writes leaves behind
        p.write_text("half")
    job_tmp = next(p for p in sweep.iterdir() if p.is_dir() and p.name != "aggregate") / ".result.json.ab12.tmp"
    job_tmp.write_text("a job's own, not the aggregation's")
    aggregate([sweep], out, plots=False)
    assert not any(p.exists() for p in left)
    assert job_tmp.exists()
    assert (out / "best_params.yaml").is_file() and (out / RESULTS_FILE).is_file()
    live_tmp = sweep / ".report.html.x7y8z9.tmp"
    live_tmp.write_text("half")
    other = sweep / ".notes.txt.abcd.tmp"  # not the live report's
    other.write_text("someone else's")
    write_live_report(sweep)
    assert not live_tmp.exists() and other.exists() and (sweep / "report.html").is_file()


def test_aggregations_of_one_folder_take_turns(tmp_path):
    import fcntl

    sweep = tmp_path / "sweep"
    write_synthetic_sweep(sweep, GRID)
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # an aggregation of this folder in progress
    proc = subprocess.Popen([sys.executable, "-m", "ptycho_exp.cli", "aggregate", str(sweep), "--out", str(out),
                             "--no-plots"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        assert proc.poll() is None and not (out / RESULTS_FILE).exists()  # waits for the folder
    finally:
        os.close(fd)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert (out / RESULTS_FILE).is_file()


def test_folder_lock_goes_on_where_the_file_system_refuses_locks(tmp_path, monkeypatch):
    import errno
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    entered = False
    with folder_lock(tmp_path):
        entered = True
    assert entered


def test_three_arms_with_iterative_band(tmp_path):
    sweep = tmp_path / "sweep"
    write_synthetic_sweep(sweep, {"model": ["pinn", "baseline", "ptylab"], "data.n_train": [256, 1024],
                                  "seed": [1, 2]}, failed=[3])
    out = tmp_path / "agg"
    aggregate([sweep], out)
    png = out / "plots" / "metric_vs_n_train_phase_ssim.png"
    svg = png.with_suffix(".svg").read_text()
    assert "ptylab (iterative, no training set)" in svg  # the band's legend entry
    w, h = _png_size(png)
    assert (w, h) == (1920, 1320)  # 6.4 x 4.4 in at 300 dpi
    html = (out / "report.html").read_text()
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs and html.count("data:image/png;base64,") == len(pngs)
    for name in pngs:
        assert f'data-figure="{name}"' in html


def test_ensemble_scores_the_seed_mean(tmp_path):
    sweep = tmp_path / "sweep"
    write_synthetic_sweep(sweep, {"model": ["pinn", "baseline"], "seed": [1, 2, 3]}, recon_shape=(48, 48))
    out = tmp_path / "agg"
    aggregate([sweep], out, plots=False, ensemble=True)
    ens = pd.read_csv(out / "ensemble.csv")
    assert sorted(ens["model"]) == ["baseline", "pinn"] and (ens["n_members"] == 3).all()
    # averaging three noisy registered copies of the same object beats the members on average
    assert (ens["amp_pearson"] > 0).all() and "Seed ensembles" in (out / "STUDY_SUMMARY.md").read_text()


# ------------------------------------------------------------------------------------ live page
def test_live_report_is_cheap_and_light(tmp_path):
    sweep = tmp_path / "sweep"
    write_synthetic_sweep(sweep, {"model": ["pinn", "baseline"], "data.n_train": [128, 256, 512, 1024, 2048],
                                  "seed": [1, 2, 3, 4, 5]}, failed=[3], running=[40], pending=[41],
                          missing=range(45, 50), compare_png=True)
    code = (
        "import sys, time\n"
        "from hydra.core.override_parser.overrides_parser import OverridesParser  # loaded in Hydra's parent\n"
        "from ptycho_exp.report.page import write_live_report\n"
        f"sweep = {str(sweep)!r}\n"
        "ts = []\n"
        "for _ in range(3):\n"
        "    t = time.perf_counter(); write_live_report(sweep); ts.append(time.perf_counter() - t)\n"
        "print(min(ts), 'pandas' in sys.modules, 'matplotlib' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    best, pandas_loaded, mpl_loaded = proc.stdout.split()
    assert pandas_loaded == "False" and mpl_loaded == "False"
    assert float(best) < 0.3, f"live report took {best} s for 50 jobs"
    html = (sweep / "report.html").read_text()
    assert '<meta http-equiv="refresh" content="30">' in html
    assert "done 42" in html and "failed 1" in html and "running 1" in html and "pending 6" in html
    assert html.count("compare_amp_phase.png") == 42  # a figure link per done job
    assert "Metrics of done jobs" in html and "phase_ssim" in html


# --------------------------------------------------------------------------------- real sweep
@pytest.mark.e2e
def test_real_quick_study(quick_sweep, tmp_path):
    sweep = quick_sweep
    # the Hydra callbacks: the live page after each job, the full aggregate at the end
    assert '<meta http-equiv="refresh"' in (sweep / "report.html").read_text()
    assert (sweep / "aggregate" / "report.html").is_file() and (sweep / "aggregate" / RESULTS_FILE).is_file()
    out = tmp_path / "agg"
    proc = run_cli(["aggregate", str(sweep), "--out", str(out), "--no-plots"], tmp_path, module="ptycho_exp.cli",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "aggregated 4 jobs: 4 done, 0 failed" in proc.stdout
    raw = pd.read_csv(out / RAW_FILE)
    assert sorted(raw["model"]) == ["baseline", "baseline", "pinn", "pinn"]
    assert (raw["status"] == "ok").all() and raw["timings.train_s"].gt(0).all()
    assert {"reg_dy", "reg_dx", "amp_frc50", "phase_ms_ssim", "resources.peak_rss_mb"} <= set(raw.columns)
    res = check_results_against_raw(out, ["model"], ["phase_ssim", "amp_ssim", "amp_mae", "phase_frc50",
                                                     "reg_dy", "timings.total_s"])
    assert set(res["model"]) == {"pinn", "baseline"} and (res.loc[res["metric"] == "phase_ssim", "n"] == 2).all()
    md = (out / "STUDY_SUMMARY.md").read_text()
    assert "Study summary: quick" in md and "4 done" in md
    winner = _winner_lines(md)["phase_ssim"]
    means = raw.groupby("model")["phase_ssim"].mean()
    assert winner == means.idxmax()  # the finding is the data's
    html = (out / "report.html").read_text()
    links = re.findall(r'href="([^"]*compare_amp_phase\.png)"', html)
    assert len(links) == 4 and all((out / link).is_file() for link in links)


def test_status_command_on_a_running_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    write_synthetic_sweep(sweep, GRID, failed=[0], running=[5], pending=[6], missing=[16, 17])
    proc = run_cli(["status", str(sweep)], tmp_path, module="ptycho_exp.cli", timeout=120,
                   env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "done 13  failed 1  running 1  pending 3" in proc.stdout and "ETA" in proc.stdout
    assert os.path.isdir(sweep)


def test_multi_objective_study_gets_a_pareto_front(tmp_path):
    sweep = tmp_path / "sweep"
    optuna_sweeper = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
                      "direction": ["maximize", "minimize"], "n_trials": 12}
    write_synthetic_sweep(sweep, {"model": ["pinn", "baseline"], "model.n_filters_scale": [1, 2, 3],
                                  "seed": [1, 2]}, objective=["phase_ssim", "timings.train_s"],
                          sweeper=optuna_sweeper)
    out = tmp_path / "agg"
    aggregate([sweep], out)
    front = pd.read_csv(out / "plots" / "pareto_front.csv")
    raw = pd.read_csv(out / RAW_FILE)
    ok = raw[raw["status"] == "ok"]
    # independent check: a job is on the front iff no other job is at least as good in both and better in one
    a, b = ok["phase_ssim"].to_numpy(), ok["timings.train_s"].to_numpy()
    dominated = [bool(np.any((a >= a[i]) & (b <= b[i]) & ((a > a[i]) | (b < b[i])))) for i in range(len(ok))]
    assert sorted(front["job"].astype(str)) == sorted(ok["job"].astype(str)[~np.array(dominated)])
    html = (out / "report.html").read_text()
    assert 'data-figure="pareto_phase_ssim_vs_timings_train_s.png"' in html


# ------------------------------------------------------------------- trust: null, references, old folders
def _failed_to_learn(params: dict) -> float:
    """The PINN at the smallest training set learns nothing (a flat image's quality); everything else learns."""
    if params["model"] == "pinn" and params.get("data.n_train") == 256:
        return 0.04
    return {"pinn": 0.9, "baseline": 0.8, "ptylab": 0.7}[params["model"]]


def write_failed_to_learn_sweep(sweep: Path, **kw) -> None:
    write_synthetic_sweep(sweep, GRID, quality=_failed_to_learn, null_quality=0.03, **kw)


def test_a_model_no_better_than_a_flat_image_is_flagged(tmp_path):
    sweep = tmp_path / "sweep"
    write_failed_to_learn_sweep(sweep, invalid={7: "coverage 0.31 is below eval.min_coverage 0.5"})
    out = tmp_path / "agg"
    text = aggregate([sweep], out, plots=False)
    raw = pd.read_csv(out / RAW_FILE)
    res = pd.read_csv(out / RESULTS_FILE)
    # margin over null recomputed here from the raw table: mean of (score - its own null score), valid jobs
    used = raw[(raw["status"] == "ok") & (raw["metrics_valid"].astype(str) == "True")]
    for metric in ("phase_ssim", "amp_ssim"):
        exp = (used[metric] - used[f"null_{metric}"]).groupby([used["model"], used["data.n_train"].fillna(-1)]).mean()
        r = res[res["metric"] == metric]
        for _, row in r.iterrows():
            key = (row["model"], -1 if np.isnan(row["data.n_train"]) else row["data.n_train"])
            assert np.isclose(row["margin"], exp.loc[key]), (metric, key)
        flagged = r[r["beats_null"].astype(str) == "False"]
        assert [(m, n) for m, n in zip(flagged["model"], flagged["data.n_train"])] == [("pinn", 256)]
        assert (r.loc[r["beats_null"].astype(str) == "True", "margin"] >= 0.1).all()
    md = (out / "STUDY_SUMMARY.md").read_text()
    assert "pinn at data.n_train=256: no better than a flat image in phase (phase SSIM" in md
    assert "pinn at data.n_train=256: no better than a flat image in amplitude (amplitude SSIM" in md
    assert "WARNING pinn at data.n_train=256" in text
    # the flag sits in the results-table cell of that group, next to its number
    row = next(ln for ln in md.splitlines() if ln.startswith("| pinn | 256 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert re.match(r"^[0-9.]+ ± [0-9.]+ \(3/3\) ⚠ \*\*no better than a flat image \(0\.0\d+\)\*\*$", cells[2]), cells
    assert "⚠" not in next(ln for ln in md.splitlines() if ln.startswith("| pinn | 1024 |"))
    assert "Winner in phase SSIM (`phase_ssim`)" in md
    # the invalid job: out of the statistics, counted, its reason listed
    ps = res[res["metric"] == "phase_ssim"]
    assert ps["n_invalid"].sum() == 1 and ps.loc[ps["n_invalid"] == 1, "n_valid"].item() == 2
    assert "coverage 0.31 is below eval.min_coverage 0.5" in md and "Jobs with invalid scores (1)" in md
    html = (out / "report.html").read_text()
    cell = re.search(r"<td>([^<]*)<span class=\"null-flag\"[^>]*>&#9888; no better than a flat image", html)
    assert cell and re.match(r"[0-9.]+ ± [0-9.]+ \(3/3\) $", cell.group(1)), cell


def test_jobs_scored_against_different_references_are_never_pooled(tmp_path):
    sweep = tmp_path / "sweep"
    grid = {"model": ["pinn", "baseline"], "data.n_train": [512], "seed": [1, 2, 3, 4]}
    # seeds 3, 4 scored against an iterative reference whose numbers are much lower and reversed
    write_synthetic_sweep(sweep, grid, quality=lambda p: ({"pinn": 0.9, "baseline": 0.6} if p["seed"] <= 2 else
                                                          {"pinn": 0.2, "baseline": 0.5})[p["model"]],
                          scored_against=lambda p: "ground_truth" if p["seed"] <= 2 else "ptylab:ePIE:300")
    out = tmp_path / "agg"
    aggregate([sweep], out)
    raw = pd.read_csv(out / RAW_FILE)
    assert set(raw["scored_against"]) == {"ground_truth", "ptylab:ePIE:300"}
    res = pd.read_csv(out / RESULTS_FILE)
    ps = res[res["metric"] == "phase_ssim"]
    assert len(ps) == 4 and (ps["n"] == 2).all()  # (model x reference), never one group of 4 seeds
    for (model, ref), g in ps.groupby(["model", "scored_against"]):
        exp = raw[(raw["model"] == model) & (raw["scored_against"] == ref)]["phase_ssim"].mean()
        assert np.isclose(g["mean"].item(), exp)
    f = pd.read_csv(out / "findings.csv")
    f = f[f["metric"] == "phase_ssim"]
    assert dict(zip(f["scored_against"], f["winner"])) == {"ground_truth": "pinn", "ptylab:ePIE:300": "baseline"}
    md = (out / "STUDY_SUMMARY.md").read_text()
    assert "scored against 2 different references" in md.replace("Jobs were scored", "scored")
    assert "scored against ptylab ePIE, 300 iterations (iterative reference, not ground truth)" in md
    # one set of figures per reference, each labelled
    assert (out / "plots" / "ground_truth").is_dir() and (out / "plots" / "ptylab_ePIE_300").is_dir()
    # one training-set size: the key figure is the headline bar chart with the flat image's level drawn
    bars = out / "plots" / "ground_truth" / "headline_metrics.svg"
    assert bars.is_file() and "flat image (null)" in bars.read_text()
    html = (out / "report.html").read_text()
    assert 'class="scored-against">scored against ground truth<' in html
    top = html[html.index('id="key-figures"'):html.index("<nav>")]
    assert 'data-figure="headline_metrics.png"' in top and html.index('id="key-figures"') < html.index("Key findings")
    assert 'class="scored-against">scored against ptylab ePIE, 300 iterations' in html
    live = write_live_report(sweep).read_text()  # the live page keeps the references apart too
    assert "<th>scored against</th>" in live and live.count("<td>pinn</td>") == 2


def test_old_result_folders_aggregate_with_the_new_columns_empty(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    grid = {"model": ["pinn", "baseline"], "seed": [1, 2, 3]}
    write_synthetic_sweep(old, grid, legacy=True, failed=[1])
    write_synthetic_sweep(new, grid, rng_seed=1)
    out = tmp_path / "agg"
    aggregate([old], tmp_path / "old_only", plots=False)  # an old folder alone aggregates
    aggregate([old, new], out, plots=False)
    raw = pd.read_csv(out / RAW_FILE)
    is_old = raw["sweep_dir"].str.endswith("/old")
    ok_old = is_old & (raw["status"] == "ok")
    for col in ("null_amp_ssim", "null_phase_ssim", "scored_against", "metrics_valid", "metrics_version"):
        assert raw.loc[ok_old, col].isna().all(), col
        assert raw.loc[~is_old, col].notna().all(), col
    # old phase SSIM (published scale, near 1) is read as phase_ssim_ref, never as the headline phase_ssim
    old_values = [json_metric(Path(d), "phase_ssim") for d in raw.loc[ok_old, "job_dir"]]
    assert np.allclose(raw.loc[ok_old, "phase_ssim_ref"], old_values)
    assert raw.loc[is_old, "phase_ssim"].isna().all() and raw.loc[is_old, "phase_ms_ssim"].isna().all()
    assert raw.loc[ok_old, "amp_ssim"].notna().all()
    res = pd.read_csv(out / RESULTS_FILE)
    ps = res[res["metric"] == "phase_ssim"]
    # (model x scored_against: recorded / not recorded; the old failed job: what its config asks for)
    assert len(ps) == 4
    assert ps.loc[ps["scored_against"].isna(), "n_valid"].eq(0).all()
    assert ps.loc[ps["scored_against"].isna(), "n_ok"].sum() == 5
    md = (out / "STUDY_SUMMARY.md").read_text()
    assert md.count("predate `metrics_version` 2") == 1


def json_metric(job_dir: Path, name: str) -> float:
    import json

    return json.loads((job_dir / "result.json").read_text())["metrics"][name]


def test_status_shows_a_running_job_as_running(tmp_path):
    """A real job (fault=sleep: it sleeps after validation) shows as running while it runs."""
    import signal

    sweep = tmp_path / "sweep"
    job = sweep / "0"
    env = {**os.environ, "PTYCHO_EXP_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "2", "PTYCHO_EXP_FAULT_SLEEP": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "ptycho_exp", "fault=sleep", f"hydra.run.dir={job}"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((job / ".hydra").is_dir() and (job / "job.log").is_file()):
            assert proc.poll() is None, "the job ended before it could be seen running"
            time.sleep(0.5)
        assert (job / "job.log").is_file(), "the job did not start within 120 s"
        out = run_cli(["status", str(sweep)], tmp_path, module="ptycho_exp.cli", timeout=120,
                      env={"COLUMNS": "200"})
        assert out.returncode == 0, out.stderr
        assert "done 0  failed 0  running 1  pending 0" in out.stdout, out.stdout
        assert "1 running, 0 pending" in aggregate([sweep], tmp_path / "agg", plots=False)
        assert proc.poll() is None and not (job / "result.json").exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    from ptycho_exp.analysis.status import RUNNING_STALE_S, job_is_running

    from ptycho_exp.files import CLAIM_FILE

    assert not job_is_running(job)  # killed: its claim's owner is gone
    (job / CLAIM_FILE).unlink()  # a folder from before claims existed is judged by its traces, which go stale
    assert job_is_running(job) and not job_is_running(job, now=time.time() + RUNNING_STALE_S + 60)
