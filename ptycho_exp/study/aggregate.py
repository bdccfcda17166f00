"""Post-hoc aggregation of sweep folders: tables, plots, best parameters, findings and the report.

``aggregate(paths, out_dir)`` reads every job folder under ``paths`` (:func:`ptycho_exp.study.collect.collect_jobs`,
never a directory-name pattern) and writes into ``out_dir``:

* ``raw_results_all_trials.csv`` (+ ``.columns.json`` naming the parameter columns): one row per job,
* ``results.csv``: one row per (model, swept-parameter group, metric) with n, n_ok, n_failed, n_unfinished,
  n_excluded, n_nan, n_valid, mean, median, std, p25, p75 (failed / unfinished / filtered / NaN values are
  excluded from the statistics and counted),
* ``plots/`` (PNG 300 dpi + SVG, plotly HTML for 3-D grids), ``best_params.yaml``, ``findings.csv``,
  optionally ``ensemble.csv``, then ``STUDY_SUMMARY.md`` and ``report.html``.

Every file is written atomically. With no job found it raises :class:`~ptycho_exp.study.collect.NoJobsFound`.
"""
from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ptycho_exp.results import atomic_write_text, folder_lock, remove_stale_temp_files
from ptycho_exp.study.collect import (
    FINISHED_STATUSES,
    OK_STATUSES,
    NoJobsFound,
    collect_jobs,
    metric_columns,
    param_columns,
    swept_parameters,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["NoJobsFound", "aggregate", "mark_valid", "valid_rows", "group_keys", "results_table",
           "best_params", "study_info", "RAW_FILE", "RESULTS_FILE"]

log = logging.getLogger(__name__)

RAW_FILE = "raw_results_all_trials.csv"
RESULTS_FILE = "results.csv"
BEST_FILE = "best_params.yaml"
ENSEMBLE_FILE = "ensemble.csv"
FINDINGS_FILE = "findings.csv"
SUMMARY_FILE = "STUDY_SUMMARY.md"
REPORT_FILE = "report.html"
FILTER_METRIC = "phase_ms_ssim"
STAT_COLUMNS = ("mean", "median", "std", "p25", "p75")
COUNT_COLUMNS = ("n", "n_ok", "n_failed", "n_unfinished", "n_excluded", "n_nan", "n_valid")


# ------------------------------------------------------------------------------------------ validity
def mark_valid(df: "pd.DataFrame", min_ms_ssim_phase: float | None = None) -> "pd.DataFrame":
    """Copy of ``df`` with ``excluded_by_filter`` and ``valid`` columns.

    A job is valid when its status is ok (or skipped: an earlier ok result) and it passes the optional
    filter ``phase_ms_ssim >= min_ms_ssim_phase`` (a job with no phase MS-SSIM fails the filter).
    """
    out = df.copy()
    ok = out["status"].isin(OK_STATUSES)
    excluded = ok & False
    if min_ms_ssim_phase is not None:
        thr = float(min_ms_ssim_phase)
        if not math.isfinite(thr):
            raise ValueError(f"--min-ms-ssim-phase must be a finite number, got {min_ms_ssim_phase!r}")
        if FILTER_METRIC not in out.columns:
            raise ValueError(f"--min-ms-ssim-phase needs the metric {FILTER_METRIC!r}, which no job recorded; "
                             "drop the filter or re-run the evaluation")
        val = out[FILTER_METRIC].astype(float)
        excluded = ok & ~(val >= thr)
    out["excluded_by_filter"] = excluded.astype(bool)
    out["valid"] = (ok & ~excluded).astype(bool)
    out.attrs = dict(df.attrs)
    out.attrs["min_ms_ssim_phase"] = min_ms_ssim_phase
    return out


def valid_rows(df: "pd.DataFrame") -> "pd.DataFrame":
    """The rows statistics and plots use (ok, not filtered out); see :func:`mark_valid`."""
    if "valid" not in df.columns:
        df = mark_valid(df)
    out = df[df["valid"]].copy()
    out.attrs = dict(df.attrs)
    return out


def group_keys(df: "pd.DataFrame") -> list[str]:
    """``model`` followed by the swept parameters other than the seed (the seeds are what is averaged)."""
    return ["model"] + [c for c in swept_parameters(df) if c != "seed"]


# ------------------------------------------------------------------------------------------ results
def results_table(df: "pd.DataFrame", metrics: Sequence[str] | None = None) -> "pd.DataFrame":
    """Per (group, metric) counts and statistics over the valid, finite values (long format).

    Parameters
    ----------
    df : DataFrame
        Output of :func:`mark_valid` (one row per job).
    metrics : sequence of str, optional
        Metric columns; default every numeric result column (:func:`~ptycho_exp.study.collect.metric_columns`).

    Returns
    -------
    DataFrame
        Columns: group keys, ``metric``, n (jobs in the group), n_ok, n_failed, n_unfinished (running or
        pending), n_excluded (by the filter), n_nan (valid job without a finite value), n_valid, mean,
        median, std (ddof=1), p25, p75. Groups with no valid value keep their row with NaN statistics.
    """
    import numpy as np
    import pandas as pd

    if "valid" not in df.columns:
        df = mark_valid(df)
    keys = group_keys(df)
    metrics = list(metrics) if metrics is not None else metric_columns(df)
    gid = df.groupby(keys, dropna=False, sort=True).ngroup().to_numpy()
    n_groups = int(gid.max()) + 1 if len(gid) else 0
    first = pd.Series(np.arange(len(df))).groupby(gid).first().to_numpy()
    key_table = df.iloc[first][keys].reset_index(drop=True)
    status = df["status"].astype(str)
    flags = pd.DataFrame({
        "n": np.ones(len(df), int),
        "n_ok": status.isin(OK_STATUSES).to_numpy().astype(int),
        "n_failed": (status == "failed").to_numpy().astype(int),
        "n_unfinished": (~status.isin(FINISHED_STATUSES)).to_numpy().astype(int),
        "n_excluded": df["excluded_by_filter"].to_numpy().astype(int),
        "_valid": df["valid"].to_numpy().astype(int),
    })
    counts = flags.groupby(gid).sum().reindex(range(n_groups), fill_value=0)
    if not metrics:
        return pd.DataFrame(columns=[*keys, "metric", *COUNT_COLUMNS, *STAT_COLUMNS])
    vals = df[metrics].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    valid = df["valid"].to_numpy(bool)
    vals = np.where(valid[:, None], vals, np.nan)
    vals[~np.isfinite(vals)] = np.nan
    long = pd.DataFrame({"_gid": np.repeat(gid, len(metrics)),
                         "_m": np.tile(np.arange(len(metrics)), len(df)),
                         "value": vals.reshape(-1)})
    g = long.groupby(["_gid", "_m"])["value"]
    stats = pd.DataFrame({"n_valid": g.count(), "mean": g.mean(), "median": g.median(), "std": g.std(ddof=1),
                          "p25": g.quantile(0.25), "p75": g.quantile(0.75)})
    full = pd.MultiIndex.from_product([range(n_groups), range(len(metrics))], names=["_gid", "_m"])
    stats = stats.reindex(full)
    stats["n_valid"] = stats["n_valid"].fillna(0).astype(int)
    stats = stats.reset_index()
    out = key_table.iloc[stats["_gid"].to_numpy()].reset_index(drop=True)
    out["metric"] = [metrics[i] for i in stats["_m"].to_numpy()]
    c = counts.iloc[stats["_gid"].to_numpy()].reset_index(drop=True)
    for col in ("n", "n_ok", "n_failed", "n_unfinished", "n_excluded"):
        out[col] = c[col].to_numpy()
    out["n_nan"] = c["_valid"].to_numpy() - stats["n_valid"].to_numpy()
    out["n_valid"] = stats["n_valid"].to_numpy()
    for col in STAT_COLUMNS:
        out[col] = stats[col].to_numpy()
    return out


# -------------------------------------------------------------------------------------- best params
def _plain(v: Any) -> Any:
    """A YAML-safe python scalar (NaN -> None)."""
    if v is None:
        return None
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


def best_params(results: "pd.DataFrame", keys: Sequence[str], metrics: Sequence[str] | None = None) -> dict:
    """For each metric: the group with the best mean over seeds (and the best group of each model), with
    its spread (std, p25, p75, n_valid).

    Direction: errors (mae, mse), times and resources are minimised, everything else maximised.
    """
    from ptycho_exp.study.plots import lower_is_better

    out: dict[str, Any] = {}
    metrics = list(metrics) if metrics is not None else list(dict.fromkeys(results["metric"]))
    for m in metrics:
        r = results[(results["metric"] == m) & (results["n_valid"] > 0) & results["mean"].notna()]
        if r.empty:
            continue
        lower = lower_is_better(m)
        r = r.sort_values("mean", ascending=lower, kind="mergesort")

        def entry(row: Any) -> dict:
            d = {"params": {k: _plain(row[k]) for k in keys}}
            d.update({s: _plain(row[s]) for s in ("mean", "std", "median", "p25", "p75")})
            d["n_valid"] = int(row["n_valid"])
            d["n"] = int(row["n"])
            return d

        best = entry(r.iloc[0])
        per_model = {str(model): entry(g.iloc[0]) for model, g in r.groupby("model", sort=False)}
        out[m] = {"direction": "minimize" if lower else "maximize", "best": best, "per_model": per_model}
    return out


# --------------------------------------------------------------------------------------- study info
def study_info(paths: Iterable[Path | str], df: "pd.DataFrame") -> dict:
    """Study name, sweep objectives/directions, Optuna or not, from each sweep's ``multirun.yaml``."""
    from ptycho_exp.study.status import is_optuna_sweep, read_multirun, sweep_directions

    names: list[str] = []
    objectives: list[str] = []
    directions: list[str] = []
    optuna = False
    for p in paths:
        mr = read_multirun(p)
        if mr is None:
            continue
        name = mr.get("study_name")
        if isinstance(name, str) and name and name not in names:
            names.append(name)
        obj = mr.get("objective")
        if isinstance(obj, list) and len(obj) > len(objectives):
            objectives = [str(o) for o in obj]
        elif isinstance(obj, str) and not objectives:
            objectives = [obj]
        d = sweep_directions(mr)
        if len(d) > len(directions):
            directions = d
        optuna = optuna or is_optuna_sweep(mr)
    if not names:
        names = list(dict.fromkeys(Path(p).name for p in paths))
    return {"study_name": ", ".join(names) or "study", "objectives": objectives, "directions": directions,
            "optuna": optuna}


# ------------------------------------------------------------------------------------------- writing
def _write_csv(df: "pd.DataFrame", path: Path, int_columns: Sequence[str] = ()) -> None:
    """Atomic CSV; ``int_columns`` holding only whole numbers (and NaN) are written as integers."""
    import numpy as np

    out = df
    for c in int_columns:
        if c in df.columns and df[c].dtype.kind == "f":
            v = df[c].to_numpy()
            fin = v[np.isfinite(v)]
            if len(fin) and np.all(fin == np.round(fin)) and np.all(np.abs(fin) < 2 ** 53):
                if out is df:
                    out = df.copy()
                out[c] = out[c].astype("Int64")
    atomic_write_text(path, out.to_csv(index=False))


def _yaml_text(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _pareto_args(info: dict, df: "pd.DataFrame") -> dict:
    objs = [o for o in info["objectives"] if o in df.columns]
    if len(objs) < 2:
        return {}
    maximize = None
    if len(info["directions"]) >= 2:
        maximize = [d.startswith("max") for d in info["directions"][:2]]
    return {"pareto": True, "objectives": objs[:2], "maximize": maximize}


def aggregate(paths: Path | str | Sequence[Path | str], out_dir: Path | str, *, ensemble: bool = False,
              min_ms_ssim_phase: float | None = None, plots: bool = True) -> str:
    """Aggregate the jobs under ``paths`` into ``out_dir``; returns a short text summary for the terminal.

    Parameters
    ----------
    paths : path or sequence of paths
        Sweep folders (or job folders); read together.
    out_dir : path
        Output folder (created).
    ensemble : bool
        Also score the complex mean of each group's registered reconstructions (``ensemble.csv``).
    min_ms_ssim_phase : float, optional
        Exclude jobs whose phase MS-SSIM is below this; the exclusion is counted and reported.
    plots : bool
        Make the figures (the slow part); tables, findings, summary and report are always written.

    Raises
    ------
    NoJobsFound
        When no job folder exists under ``paths``.
    """
    path_list = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    out_dir = Path(out_dir)
    raw = collect_jobs(path_list)
    df = mark_valid(raw, min_ms_ssim_phase)
    keys = group_keys(df)
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir):  # one aggregation per folder at a time: temp files found now are debris
        for folder in (out_dir, out_dir / "plots"):  # the folders aggregate writes (not job folders below)
            remove_stale_temp_files(folder)
        return _write_outputs(df, keys, out_dir, path_list, ensemble=ensemble,
                              min_ms_ssim_phase=min_ms_ssim_phase, plots=plots)


def _write_outputs(df: "pd.DataFrame", keys: list[str], out_dir: Path, path_list: list[Path], *, ensemble: bool,
                   min_ms_ssim_phase: float | None, plots: bool) -> str:
    """Every table, figure, summary and the report of :func:`aggregate` (``out_dir`` exists and is locked)."""
    from ptycho_exp.study import findings as fnd
    from ptycho_exp.study.report import write_report

    params = param_columns(df)
    _write_csv(df, out_dir / RAW_FILE, params)
    atomic_write_text(out_dir / Path(RAW_FILE).with_suffix(".columns.json"),
                      json.dumps({"param_columns": param_columns(df), "group_keys": keys}, indent=2) + "\n")
    results = results_table(df)
    _write_csv(results, out_dir / RESULTS_FILE, params)
    best = best_params(results, keys, [m for m in dict.fromkeys(results["metric"])
                                       if m.startswith(("amp_", "phase_"))])
    atomic_write_text(out_dir / BEST_FILE, _yaml_text(best) if best else "{}\n")

    valid = valid_rows(df)
    ens = None
    ens_note = None
    if ensemble:
        ens, ens_note = _ensemble(valid, keys, out_dir, params)

    # the sweep folders the jobs came from (a parent of several sweeps may have been given)
    sweep_dirs = list(dict.fromkeys([*path_list, *(Path(p) for p in df["sweep_dir"].dropna().unique())]))
    info = study_info(sweep_dirs, df)
    tables = fnd.seed_tables(df)
    comparisons = fnd.compare_models(df, tables=tables)
    win_rates = fnd.win_rates(df, tables=tables)
    _write_csv(fnd.comparisons_frame(comparisons, win_rates), out_dir / FINDINGS_FILE)

    figures: list[Path] = []
    if plots:
        from ptycho_exp.study.plots import make_all_plots

        figures = make_all_plots(valid, out_dir / "plots", sweep_dirs=sweep_dirs, **_pareto_args(info, valid))
    now = datetime.now(timezone.utc)
    blocks = fnd.summary_blocks(df, results, comparisons, win_rates, info=info, paths=path_list,
                                generated_at=now, best=best, ensemble=ens, ensemble_note=ens_note,
                                min_ms_ssim_phase=min_ms_ssim_phase)
    atomic_write_text(out_dir / SUMMARY_FILE, fnd.blocks_to_markdown(blocks))
    write_report(out_dir, df=df, results=results, blocks=blocks, figures=figures, ensemble=ens,
                 title=f"ptycho_exp study: {info['study_name']}", generated_at=now, plots=plots)
    return fnd.terminal_summary(df, comparisons, out_dir, plots=plots, n_figures=len(
        [f for f in figures if f.suffix in (".png", ".html")]), min_ms_ssim_phase=min_ms_ssim_phase)


def _ensemble(valid: "pd.DataFrame", keys: list[str], out_dir: Path,
              int_columns: Sequence[str] = ()) -> tuple[Any, str | None]:
    from ptycho_exp.study.ensemble import ensemble_table
    from ptycho_exp.study.plots import KEY_METRICS

    try:
        ens = ensemble_table(valid, keys, compare_metrics=[m for m in KEY_METRICS if m in valid.columns])
    except Exception as exc:  # noqa: BLE001 - an ensemble must never sink the aggregate
        log.warning("ensemble skipped: %s: %s", type(exc).__name__, exc)
        return None, f"ensemble failed: {type(exc).__name__}: {exc}"
    if ens.empty:
        return None, "no group has recon.npz files to average; no ensemble scored"
    _write_csv(ens, out_dir / ENSEMBLE_FILE, int_columns)
    return ens, None
