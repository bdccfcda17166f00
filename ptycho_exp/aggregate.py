"""``ptycho-exp aggregate``: read the sweep folders (analysis), then write tables, figures, summary and report.

``aggregate(paths, out_dir)`` reads every job folder under ``paths`` (:func:`ptycho_exp.analysis.collect.collect_jobs`,
never a directory-name pattern) and writes into ``out_dir``:

* ``raw_results_all_trials.csv`` (+ ``.columns.json`` naming the parameter columns): one row per job,
* ``results.csv``: one row per (model, ``scored_against``, swept-parameter group, metric) with n, n_ok,
  n_failed, n_unfinished, n_invalid, n_excluded, n_nan, n_valid, mean, median, std, p25, p75 (failed /
  unfinished / invalid-score / filtered / NaN values are excluded from the statistics and counted) and the
  margin over the null (flat-image) reconstruction: null_mean, margin, margin_ci_lo, margin_ci_hi, beats_null
  (:mod:`ptycho_exp.analysis.margin`). Jobs scored against different references are never pooled; each
  reference gets its own figures (``plots/<reference>/`` when there are several), labelled in the report,
* ``plots/`` (PNG 300 dpi + SVG, plotly HTML for 3-D grids), ``best_params.yaml``, ``findings.csv``,
  optionally ``ensemble.csv``, then ``STUDY_SUMMARY.md`` and ``report.html``.

The numbers come from :mod:`ptycho_exp.analysis` (collect, tables, findings, ensemble); their presentation from
:mod:`ptycho_exp.report` (plots, summary, page). Every file is written atomically. With no job found it raises
:class:`~ptycho_exp.analysis.collect.NoJobsFound`.
"""
from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ptycho_exp.analysis.collect import NoJobsFound, collect_jobs, param_columns
from ptycho_exp.analysis.status import mark_running
from ptycho_exp.analysis.tables import best_params, group_keys, mark_valid, results_table, study_info, valid_rows
from ptycho_exp.files import (
    BEST_FILE,
    ENSEMBLE_FILE,
    FINDINGS_FILE,
    PLOTS_DIR,
    RAW_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    atomic_write_text,
    remove_stale_temp_files,
)
from ptycho_exp.results import folder_lock

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["NoJobsFound", "aggregate", "RAW_FILE", "RESULTS_FILE", "BEST_FILE", "ENSEMBLE_FILE", "FINDINGS_FILE",
           "SUMMARY_FILE", "REPORT_FILE", "add_aggregate_command", "run_aggregate_command"]

log = logging.getLogger(__name__)


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
    raw = mark_running(collect_jobs(path_list))
    df = mark_valid(raw, min_ms_ssim_phase)
    keys = group_keys(df)
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir):  # one aggregation per folder at a time: temp files found now are debris
        for folder in (out_dir, out_dir / PLOTS_DIR):  # the folders aggregate writes (not job folders below)
            remove_stale_temp_files(folder)
        return _write_outputs(df, keys, out_dir, path_list, ensemble=ensemble,
                              min_ms_ssim_phase=min_ms_ssim_phase, plots=plots)


def _write_outputs(df: "pd.DataFrame", keys: list[str], out_dir: Path, path_list: list[Path], *, ensemble: bool,
                   min_ms_ssim_phase: float | None, plots: bool) -> str:
    """Every table, figure, summary and the report of :func:`aggregate` (``out_dir`` exists and is locked)."""
    from ptycho_exp.analysis import findings as fnd
    from ptycho_exp.report import summary
    from ptycho_exp.report.page import write_report

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
    labels: dict[Path, str] = {}
    if plots:
        figures, labels = _plots(valid, out_dir / PLOTS_DIR, sweep_dirs, _pareto_args(info, valid))
    now = datetime.now(timezone.utc)
    blocks = summary.summary_blocks(df, results, comparisons, win_rates, info=info, paths=path_list,
                                generated_at=now, best=best, ensemble=ens, ensemble_note=ens_note,
                                min_ms_ssim_phase=min_ms_ssim_phase)
    atomic_write_text(out_dir / SUMMARY_FILE, summary.blocks_to_markdown(blocks))
    write_report(out_dir, df=df, results=results, blocks=blocks, figures=figures, ensemble=ens,
                 title=f"ptycho_exp study: {info['study_name']}", generated_at=now, plots=plots,
                 figure_labels=labels)
    return summary.terminal_summary(df, comparisons, out_dir, plots=plots, n_figures=len(
        [f for f in figures if f.suffix in (".png", ".html")]), min_ms_ssim_phase=min_ms_ssim_phase,
        results=results)


def _plots(valid: "pd.DataFrame", plots_dir: Path, sweep_dirs: list[Path],
           pareto: dict) -> tuple[list[Path], dict[Path, str]]:
    """The figures, one set per ``scored_against`` value (``plots/`` for a single reference, else
    ``plots/<reference>/``) so that jobs scored against different references never share a figure; returns
    them with a label per figure saying what its jobs were scored against."""
    from ptycho_exp.analysis.findings import reference_label
    from ptycho_exp.report.plots import make_all_plots

    col = valid["scored_against"].astype(object) if "scored_against" in valid.columns else None
    refs = col.drop_duplicates().tolist() if col is not None else [None]
    figures: list[Path] = []
    labels: dict[Path, str] = {}
    for ref in refs or [None]:
        sub = valid if len(refs) <= 1 else valid[col.isna() if ref is None or ref != ref else col == ref]
        sub.attrs = dict(valid.attrs)
        where = plots_dir if len(refs) <= 1 else plots_dir / _slug(ref)
        made = make_all_plots(sub, where, sweep_dirs=sweep_dirs, **pareto)
        figures += made
        labels.update({f: f"scored against {reference_label(ref)}" for f in made})
    return figures, labels


def _slug(ref: Any) -> str:
    text = "not_recorded" if ref is None or ref != ref else str(ref)
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _ensemble(valid: "pd.DataFrame", keys: list[str], out_dir: Path,
              int_columns: Sequence[str] = ()) -> tuple[Any, str | None]:
    from ptycho_exp.analysis.ensemble import ensemble_table
    from ptycho_exp.analysis.metricinfo import KEY_METRICS

    try:
        ens = ensemble_table(valid, keys, compare_metrics=[m for m in KEY_METRICS if m in valid.columns])
    except Exception as exc:  # noqa: BLE001 - an ensemble must never sink the aggregate
        log.warning("ensemble skipped: %s: %s", type(exc).__name__, exc)
        return None, f"ensemble failed: {type(exc).__name__}: {exc}"
    if ens.empty:
        return None, "no group has recon.npz files to average; no ensemble scored"
    _write_csv(ens, out_dir / ENSEMBLE_FILE, int_columns)
    return ens, None


# ----------------------------------------------------------------------------------------------- CLI
def add_aggregate_command(sub: argparse._SubParsersAction) -> None:
    """The ``aggregate`` subcommand's parser."""
    p = sub.add_parser("aggregate", help="tables, plots, computed findings and report.html from sweep folders")
    p.add_argument("sweep_dirs", nargs="+", help="sweep folders (or job folders); all are read together")
    p.add_argument("--out", help="output folder (default <first sweep dir>/aggregate)")
    p.add_argument("--ensemble", action="store_true",
                   help="also score the complex mean of the seeds' registered reconstructions per group")
    p.add_argument("--min-ms-ssim-phase", type=float, default=None,
                   help="exclude jobs whose phase MS-SSIM is below this (reported in the summary)")
    p.add_argument("--no-plots", action="store_true", help="tables and summary only (fast)")


def run_aggregate_command(args: argparse.Namespace) -> int:
    """``ptycho-exp aggregate``: aggregate and print the short summary."""
    out = Path(args.out) if args.out else Path(args.sweep_dirs[0]) / "aggregate"
    text = aggregate([Path(p) for p in args.sweep_dirs], out, ensemble=args.ensemble,
                     min_ms_ssim_phase=args.min_ms_ssim_phase, plots=not args.no_plots)
    print(text)
    return 0
