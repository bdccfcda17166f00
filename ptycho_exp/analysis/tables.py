"""The job table's validity and the per-group tables: results statistics and best parameters.

:func:`mark_valid` flags the jobs statistics use; :func:`results_table` gives per (model, ``scored_against``,
swept-parameter group, metric) counts, statistics and the margin over the null reconstruction
(``results.csv``; see :mod:`ptycho_exp.analysis.margin`); :func:`best_params` the best group per metric
(``best_params.yaml``); :func:`study_info` the study's name and sweep objectives.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ptycho_exp.analysis.collect import FINISHED_STATUSES, OK_STATUSES, metric_columns, swept_parameters
from ptycho_exp.analysis.margin import BOOT_SEED, MARGIN_COLUMNS, margin_stats, min_margin
from ptycho_exp.analysis.metricinfo import direction, lower_is_better, null_column
from ptycho_exp.analysis.status import is_optuna_sweep, read_multirun, sweep_directions

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

__all__ = ["mark_valid", "valid_rows", "group_keys", "results_table", "best_params", "study_info"]

FILTER_METRIC = "phase_ms_ssim"
STAT_COLUMNS = ("mean", "median", "std", "p25", "p75")
COUNT_COLUMNS = ("n", "n_ok", "n_failed", "n_unfinished", "n_invalid", "n_excluded", "n_nan", "n_valid")
SCORED_AGAINST = "scored_against"


# ------------------------------------------------------------------------------------------ validity
def mark_valid(df: "pd.DataFrame", min_ms_ssim_phase: float | None = None) -> "pd.DataFrame":
    """Copy of ``df`` with ``metrics_invalid``, ``excluded_by_filter`` and ``valid`` columns.

    A job is valid when its status is ok (or skipped: an earlier ok result), its scores are usable
    (``metrics_valid`` is not False: a job whose scores were marked invalid, e.g. coverage too low, is counted
    in ``n_invalid`` with its ``invalid_reason``) and it passes the optional filter
    ``phase_ms_ssim >= min_ms_ssim_phase`` (a job with no phase MS-SSIM fails the filter).
    """
    out = df.copy()
    ok = out["status"].isin(OK_STATUSES)
    if "metrics_valid" in out.columns:
        invalid = ok & out["metrics_valid"].map(_is_false)
    else:
        invalid = ok & False
    out["metrics_invalid"] = invalid.astype(bool)
    ok = ok & ~invalid
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


def _is_false(v: Any) -> bool:
    """``metrics_valid`` read from result.json (bool) or a CSV (``False``/``True`` strings): False only then."""
    return v is False or (isinstance(v, str) and v.strip().lower() == "false")


def valid_rows(df: "pd.DataFrame") -> "pd.DataFrame":
    """The rows statistics and plots use (ok, not filtered out); see :func:`mark_valid`."""
    if "valid" not in df.columns:
        df = mark_valid(df)
    out = df[df["valid"]].copy()
    out.attrs = dict(df.attrs)
    return out


def group_keys(df: "pd.DataFrame") -> list[str]:
    """``model``, ``scored_against`` (jobs scored against different references are never pooled), then the
    swept parameters other than the seed (the seeds are what is averaged)."""
    sa = [SCORED_AGAINST] if SCORED_AGAINST in df.columns else []
    return ["model", *sa] + [c for c in swept_parameters(df) if c not in ("seed", SCORED_AGAINST)]


# ------------------------------------------------------------------------------------------ results
def results_table(df: "pd.DataFrame", metrics: Sequence[str] | None = None) -> "pd.DataFrame":
    """Per (group, metric) counts and statistics over the valid, finite values (long format).

    Parameters
    ----------
    df : DataFrame
        Output of :func:`mark_valid` (one row per job).
    metrics : sequence of str, optional
        Metric columns; default every numeric result column (:func:`~ptycho_exp.analysis.collect.metric_columns`).

    Returns
    -------
    DataFrame
        Columns: group keys, ``metric``, n (jobs in the group), n_ok, n_failed, n_unfinished (running or
        pending), n_invalid (ok but ``metrics_valid`` false), n_excluded (by the filter), n_nan (valid job
        without a finite value), n_valid, mean, median, std (ddof=1), p25, p75, and for metrics with null
        scores: null_mean, margin (positive = better than the flat image), margin_ci_lo/hi, beats_null
        (:func:`ptycho_exp.analysis.margin.margin_stats`). Groups with no valid value keep their row with NaN
        statistics.
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
        "n_invalid": (df["metrics_invalid"].to_numpy().astype(int) if "metrics_invalid" in df.columns
                      else np.zeros(len(df), int)),
        "n_excluded": df["excluded_by_filter"].to_numpy().astype(int),
        "_valid": df["valid"].to_numpy().astype(int),
    })
    counts = flags.groupby(gid).sum().reindex(range(n_groups), fill_value=0)
    if not metrics:
        return pd.DataFrame(columns=[*keys, "metric", *COUNT_COLUMNS, *STAT_COLUMNS, *MARGIN_COLUMNS])
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
    out["_gid"] = stats["_gid"].to_numpy()
    out["metric"] = [metrics[i] for i in stats["_m"].to_numpy()]
    c = counts.iloc[stats["_gid"].to_numpy()].reset_index(drop=True)
    for col in ("n", "n_ok", "n_failed", "n_unfinished", "n_invalid", "n_excluded"):
        out[col] = c[col].to_numpy()
    out["n_nan"] = c["_valid"].to_numpy() - stats["n_valid"].to_numpy()
    out["n_valid"] = stats["n_valid"].to_numpy()
    for col in STAT_COLUMNS:
        out[col] = stats[col].to_numpy()
    _add_margins(out, df, gid, metrics, valid)
    return out


def _add_margins(out: "pd.DataFrame", df: "pd.DataFrame", gid: "np.ndarray", metrics: Sequence[str],
                 valid: "np.ndarray") -> None:
    """Fill the margin-over-null columns of :func:`results_table`'s ``out`` in place (NaN without null scores)."""
    import numpy as np
    import pandas as pd

    n_out = len(out)
    cols = {c: np.full(n_out, np.nan) for c in MARGIN_COLUMNS if c != "beats_null"}
    beats: list[Any] = [None] * n_out
    with_null = [m for m in metrics if null_column(m) in df.columns]
    if with_null:
        vals = df[with_null].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        nulls = df[[null_column(m) for m in with_null]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        order = np.argsort(gid, kind="stable")
        order = order[valid[order]]
        bounds = np.searchsorted(gid[order], np.arange(int(gid.max()) + 2 if len(gid) else 1))
        col_of = {m: k for k, m in enumerate(with_null)}
        for i, (g, metric) in enumerate(zip(out["_gid"].to_numpy(), out["metric"])):
            k = col_of.get(metric)
            if k is None:
                continue
            idx = order[bounds[g]:bounds[g + 1]]
            if not len(idx):
                continue
            st = margin_stats(vals[idx, k], nulls[idx, k], metric, rng=np.random.default_rng([BOOT_SEED, int(g)]),
                              interval=min_margin(metric) is not None)
            for c in cols:
                cols[c][i] = st[c]
            beats[i] = st["beats_null"]
    for c, v in cols.items():
        out[c] = v
    out["beats_null"] = pd.Series(beats, index=out.index, dtype=object)
    out.drop(columns=["_gid"], inplace=True, errors="ignore")


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

    Direction: :func:`ptycho_exp.analysis.metricinfo.direction` (errors, times and resources minimised).
    """
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
        out[m] = {"direction": direction(m), "best": best, "per_model": per_model}
    return out


# --------------------------------------------------------------------------------------- study info
def study_info(paths: Iterable[Path | str], df: "pd.DataFrame") -> dict:
    """Study name, sweep objectives/directions, Optuna or not, from each sweep's ``multirun.yaml``."""
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
