"""Margin over the null reconstruction: does a model beat a flat image?

Every job scores, besides its reconstruction, the best constant image on the same pixels with the same metrics
(``null_<metric>`` in ``result.json``). The *margin* of a job in a metric is its score minus its own null
score, oriented so that a positive margin means better than the flat image (for errors: null minus score).

Rule for "beats null by a clear margin" (one group = one model at one value of the swept parameters and one
``scored_against``; computed over its valid jobs, usually one per seed):

* the mean margin is at least :data:`MIN_MARGIN` for the metric's kind (0.1 for the SSIM-type metrics
  ``ssim``, ``ms_ssim``, ``pearson``, which live on [-1, 1]; 1 dB for PSNR), **and**
* with at least :data:`MIN_BOOT` valid jobs, the lower end of the 95 % percentile bootstrap interval of the
  mean paired margin (job minus its own null, :data:`N_BOOT` resamples, seeded) is above 0.

A group failing either is flagged: "no better than a flat image" when its mean margin is <= 0, else "not
clearly better than a flat image". Metrics with no threshold here (FRC, MAE, ...) get the margin and its
no verdict (and, in results.csv, no interval). The findings and the report flag the
:data:`~ptycho_exp.analysis.metricinfo.HEADLINE_METRICS` (``amp_ssim``, ``phase_ssim``).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ptycho_exp.analysis.metricinfo import HEADLINE_METRICS, higher_is_better

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["MIN_MARGIN", "MIN_BOOT", "N_BOOT", "min_margin", "margin_stats", "null_flags", "MARGIN_COLUMNS"]

# clear margin by metric kind (the part after amp_/phase_)
MIN_MARGIN = {"ssim": 0.1, "ms_ssim": 0.1, "pearson": 0.1, "psnr": 1.0}
MIN_BOOT = 3
N_BOOT = 2000
BOOT_SEED = 20231
MARGIN_COLUMNS = ("null_mean", "margin", "margin_ci_lo", "margin_ci_hi", "beats_null")


def min_margin(metric: str) -> float | None:
    """The clear margin over null for ``metric`` (``amp_ssim`` -> 0.1), None where no verdict is given."""
    _, _, kind = str(metric).partition("_")
    return MIN_MARGIN.get(kind) if str(metric).startswith(("amp_", "phase_")) else None


def margin_stats(values: np.ndarray, nulls: np.ndarray, metric: str, rng: np.random.Generator | None = None,
                 n_boot: int = N_BOOT, interval: bool = True) -> dict[str, Any]:
    """Null mean, mean margin, its bootstrap interval and the verdict for one group.

    Parameters
    ----------
    values, nulls : ndarray
        The jobs' scores and their own null scores (pairs with a non-finite member are dropped).
    metric : str
        The metric (direction and threshold).
    interval : bool
        Compute the bootstrap interval (the verdict uses it; skipped for speed where no verdict is given).

    Returns
    -------
    dict
        ``null_mean``, ``margin`` (positive = better than null), ``margin_ci_lo``, ``margin_ci_hi`` (NaN with
        fewer than :data:`MIN_BOOT` pairs), ``beats_null`` (True / False, None where the metric has no
        threshold or no pair exists).
    """
    v, n = np.asarray(values, float), np.asarray(nulls, float)
    ok = np.isfinite(v) & np.isfinite(n)
    v, n = v[ok], n[ok]
    out: dict[str, Any] = {"null_mean": float("nan"), "margin": float("nan"), "margin_ci_lo": float("nan"),
                           "margin_ci_hi": float("nan"), "beats_null": None}
    if not len(v):
        return out
    d = (v - n) if higher_is_better(metric) else (n - v)
    out["null_mean"] = float(n.mean())
    out["margin"] = float(d.mean())
    if interval and len(d) >= MIN_BOOT:
        rng = rng if rng is not None else np.random.default_rng(BOOT_SEED)
        means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
        lo, hi = np.percentile(means, [2.5, 97.5])
        out["margin_ci_lo"], out["margin_ci_hi"] = float(lo), float(hi)
    thr = min_margin(metric)
    if thr is not None:
        clear = out["margin"] >= thr
        if not math.isnan(out["margin_ci_lo"]):
            clear = clear and out["margin_ci_lo"] > 0
        out["beats_null"] = bool(clear)
    return out


def null_flags(results: "pd.DataFrame", keys: list[str], metrics: tuple[str, ...] = HEADLINE_METRICS) -> list[dict]:
    """Every group of ``results`` (:func:`ptycho_exp.analysis.tables.results_table`) that does not beat null
    clearly in one of ``metrics``.

    Returns
    -------
    list of dict
        params ({key: value}), model, metric, mean, null_mean, margin, margin_ci_lo, margin_ci_hi,
        n_valid, verdict (``"no better than a flat image"`` or ``"not clearly better than a flat image"``).
    """
    out: list[dict] = []
    if "beats_null" not in results.columns:
        return out
    r = results[results["metric"].isin(metrics) & (results["n_valid"] > 0)]
    for row in r.to_dict("records"):
        bn = row.get("beats_null")
        if bn is None or (isinstance(bn, float) and math.isnan(bn)) or bool(bn):
            continue  # no verdict, or beats null
        verdict = ("no better than a flat image" if not (row["margin"] > 0)
                   else "not clearly better than a flat image")
        out.append({"params": {k: row[k] for k in keys}, "model": row["model"], "metric": row["metric"],
                    "mean": row["mean"], "null_mean": row["null_mean"], "margin": row["margin"],
                    "margin_ci_lo": row["margin_ci_lo"], "margin_ci_hi": row["margin_ci_hi"],
                    "n_valid": int(row["n_valid"]), "verdict": verdict})
    return out

