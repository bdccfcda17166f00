"""Findings computed from the job table: who wins each metric, by how much, how sure, and the summary text.

For every *stratum* (one value of each swept parameter other than model and seed, e.g. one training-set
size) and every key metric, :func:`compare_models` ranks the models by their mean over seeds and compares the
winner with the runner-up: the difference (oriented so that positive means "better"), a seeded percentile
bootstrap 95 % interval over seeds, and a two-sided rank test (Wilcoxon signed-rank on seed-paired
differences, Mann-Whitney U when the seeds do not pair). :func:`win_rates` gives the fraction of seeds in
which the PINN (or the first model present) beats each other model. Iterative arms have no training set: their
missing ``data.n_train`` matches every training-set size. ``scored_against`` is part of every stratum and
matches exactly: models are compared only among jobs scored against the same reference (ground truth or one
iterative reconstruction), never across references.

The sentences, the summary and its rendering are in :mod:`ptycho_exp.report.summary`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ptycho_exp.analysis.collect import OK_STATUSES
from ptycho_exp.analysis.metricinfo import KEY_METRICS, higher_is_better
from ptycho_exp.analysis.tables import group_keys
from ptycho_exp.models.registry import MODEL_ORDER, is_network

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

FINDING_METRICS = KEY_METRICS
TABLE_METRICS = ("phase_ssim", "amp_ssim", "phase_ms_ssim", "phase_frc50", "amp_frc50", "phase_mae")
N_BOOT = 2000
MIN_BOOT = 3
BOOT_SEED = 20230
Block = tuple


# ------------------------------------------------------------------------------------------ helpers
def is_nan(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and v != v)


def fmt(v: Any, digits: int = 3) -> str:
    """Compact number: integers below 1e6 as integers, 1e6 and up as ``1e+08``, 1000..1e6 rounded, else
    ``digits`` significant digits; NaN/None as n/a."""
    if is_nan(v):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer, float, np.floating)):
        v = float(v)
        a = abs(v)
        if v.is_integer() and a < 1e6:
            return str(int(v))
        if a >= 1e6:
            return f"{v:.{digits}g}"
        if a >= 1000:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def fmt_signed(v: float) -> str:
    return "n/a" if is_nan(v) else ("+" if v >= 0 else "") + fmt(v)


def fmt_p(p: float) -> str:
    if is_nan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def model_sort_key(m: str) -> tuple:
    return (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m)


def valid_jobs(df: "pd.DataFrame") -> "pd.DataFrame":
    if "valid" in df.columns:
        return df[df["valid"].astype(bool)]
    return df[df["status"].isin(OK_STATUSES)]


SCORED_AGAINST = "scored_against"


def stratum_keys(df: "pd.DataFrame") -> list[str]:
    return [k for k in group_keys(df) if k != "model"]


def reference_label(value: Any) -> str:
    """Readable ``scored_against``: ``ground_truth`` -> "ground truth", ``ptylab:ePIE:300`` -> "ptylab ePIE,
    300 iterations (iterative reference, not ground truth)", missing -> "not recorded (older result format)"."""
    if is_nan(value) or value in ("", "nan"):
        return "not recorded (older result format)"
    v = str(value)
    if v == "ground_truth":
        return "ground truth"
    parts = v.split(":")
    if len(parts) == 3:
        return f"{parts[0]} {parts[1]}, {parts[2]} iterations (iterative reference, not ground truth)"
    return f"{v} (not ground truth)"


def strata(df: "pd.DataFrame") -> list[dict]:
    """The distinct values of the swept parameters (model and seed aside) among the valid trained-model jobs
    (all valid jobs when only iterative arms exist), sorted; ``[{}]`` when nothing else is swept."""
    keys = stratum_keys(df)
    v = valid_jobs(df)
    if not keys:
        return [{}]
    recs = []
    by_ref = [v] if SCORED_AGAINST not in keys else [
        v[_same(v[SCORED_AGAINST], sa)] for sa in v[SCORED_AGAINST].astype(object).drop_duplicates()]
    for part in by_ref:  # each reference on its own (an arm scored only against one still gets its strata)
        trained = part[part["model"].map(is_network)]  # iterative and external arms have no training set
        base = trained if len(trained) else part
        uniq = base[keys].drop_duplicates()
        recs += [dict(zip(keys, row)) for row in uniq.itertuples(index=False, name=None)]
    return sorted(recs, key=lambda r: tuple((is_nan(r[k]), str(type(r[k])), r[k] if not is_nan(r[k]) else 0)
                                            for k in keys))


def stratum_mask(df: "pd.DataFrame", stratum: dict) -> np.ndarray:
    """Rows matching ``stratum``; a missing value in a row (an iterative arm's n_train) matches any value."""
    mask = np.ones(len(df), bool)
    for k, v in stratum.items():
        col = df[k]
        if k == SCORED_AGAINST:  # exact: never pool references
            mask &= _same(col, v).to_numpy()
        elif is_nan(v):
            mask &= col.isna().to_numpy()
        else:
            mask &= ((col == v) | col.isna()).to_numpy()
    return mask


def _same(col: "pd.Series", v: Any) -> "pd.Series":
    """``col == v`` where NaN/None equals NaN/None."""
    return col.isna() if is_nan(v) else (col == v)


def stratum_label(stratum: dict) -> str:
    if not stratum:
        return "all jobs"
    parts = [f"{k} = {fmt(v)}" for k, v in stratum.items() if k != SCORED_AGAINST]
    if SCORED_AGAINST in stratum:
        parts.append(f"scored against {reference_label(stratum[SCORED_AGAINST])}")
    return ", ".join(parts)


def per_seed(df: "pd.DataFrame", metrics: Sequence[str]) -> dict[str, dict[str, dict[Any, float]]]:
    """``{metric: {model: {seed: value}}}``: the mean over rows sharing (model, seed), finite values only.

    One groupby for all metrics (this runs once per stratum, so it must be cheap for 1,000-job studies).
    """
    out: dict[str, dict[str, dict[Any, float]]] = {m: {} for m in metrics}
    if not len(df) or not metrics:
        return out
    d = df[["model", "seed", *metrics]].copy()
    d["seed"] = d["seed"].astype(object).where(d["seed"].notna(), "n/a")
    for m in metrics:
        d[m] = d[m].astype(float)
    g = d.groupby(["model", "seed"], sort=True)[list(metrics)].mean()
    vals = g.to_numpy(dtype=float)
    idx = list(g.index)
    for j, m in enumerate(metrics):
        col = vals[:, j]
        for (model, seed), v in zip(idx, col):
            if np.isfinite(v):
                out[m].setdefault(str(model), {})[seed] = float(v)
    return out


def seed_tables(df: "pd.DataFrame", metrics: Sequence[str] | None = None) -> list[tuple[dict, dict]]:
    """``[(stratum, per_seed(rows of the stratum))]`` over :func:`strata`, on the valid rows."""
    v = valid_jobs(df)
    metrics = [m for m in (metrics or FINDING_METRICS) if m in v.columns]
    return [(st, per_seed(v[stratum_mask(v, st)], metrics)) for st in strata(df)]


def bootstrap_diff_ci(a: np.ndarray, b: np.ndarray, paired: bool, rng: np.random.Generator,
                      n_boot: int = N_BOOT, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b) (paired: of mean(a - b)); NaN with fewer than
    ``MIN_BOOT`` seeds (two values give only three distinct resampled means: no interval worth quoting)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    if paired:
        d = a - b
        if len(d) < MIN_BOOT:
            return float("nan"), float("nan")
        stats = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    else:
        if len(a) < MIN_BOOT or len(b) < MIN_BOOT:
            return float("nan"), float("nan")
        stats = (a[rng.integers(0, len(a), (n_boot, len(a)))].mean(axis=1)
                 - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(axis=1))
    lo, hi = np.percentile(stats, [lo_q, hi_q])
    return float(lo), float(hi)


def rank_test(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[str, float]:
    """(test name, two-sided p): Wilcoxon signed-rank when paired, else Mann-Whitney U; NaN when untestable."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired:
        d = a - b
        if len(d) < 2:
            return "Wilcoxon signed-rank", float("nan")
        if np.all(d == 0):
            return "Wilcoxon signed-rank", 1.0
        try:
            return "Wilcoxon signed-rank", float(stats.wilcoxon(a, b, alternative="two-sided").pvalue)
        except ValueError:
            return "Wilcoxon signed-rank", float("nan")
    if len(a) < 2 or len(b) < 2:
        return "Mann-Whitney U", float("nan")
    try:
        return "Mann-Whitney U", float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    except ValueError:
        return "Mann-Whitney U", float("nan")


def _pair(sa: dict, sb: dict) -> tuple[np.ndarray, np.ndarray, bool]:
    """Seed-paired arrays over the shared seeds when there is any (a failed seed drops out of the pair), else
    all values of each, unpaired."""
    common = [k for k in sa if k in sb and k != "n/a"]
    if common:
        return (np.array([sa[k] for k in common], float), np.array([sb[k] for k in common], float), True)
    return np.array(list(sa.values()), float), np.array(list(sb.values()), float), False


# ------------------------------------------------------------------------------------- comparisons
def compare_models(df: "pd.DataFrame", metrics: Sequence[str] | None = None, *, n_boot: int = N_BOOT,
                   seed: int = BOOT_SEED, tables: list[tuple[dict, dict]] | None = None) -> list[dict]:
    """Winner vs runner-up per stratum and metric (see the module docstring).

    ``tables`` (from :func:`seed_tables`) may be passed to share the grouping with :func:`win_rates`.

    Returns
    -------
    list of dict
        stratum (dict), label, metric, higher_is_better, means ({model: mean}), counts ({model: n seeds}),
        ranking (models best first), winner, runner_up (None with one model), diff (winner better by, >= 0),
        ci_lo, ci_hi (bootstrap, same orientation), paired, n_a, n_b, test, p_value, n_boot.
    """
    tables = tables if tables is not None else seed_tables(df, metrics)
    out: list[dict] = []
    for si, (st, per_metric) in enumerate(tables):
        for mi, (metric, by_model) in enumerate(per_metric.items()):
            if metrics is not None and metric not in metrics:
                continue
            if not by_model:
                continue
            hib = higher_is_better(metric)
            vals = {m: np.array(list(d.values()), float) for m, d in by_model.items()}
            means = {m: float(v.mean()) for m, v in vals.items()}
            ranking = sorted(means, key=lambda m: (-means[m] if hib else means[m], model_sort_key(m)))
            rec: dict[str, Any] = {
                "stratum": st, "label": stratum_label(st), "metric": metric, "higher_is_better": hib,
                "means": means, "counts": {m: int(len(vals[m])) for m in ranking},
                "stds": {m: float(vals[m].std(ddof=1)) if len(vals[m]) > 1 else float("nan") for m in ranking},
                "ranking": ranking, "winner": ranking[0], "runner_up": ranking[1] if len(ranking) > 1 else None,
                "diff": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan"), "paired": False,
                "n_a": int(len(vals[ranking[0]])), "n_b": 0, "test": "", "p_value": float("nan"),
                "n_boot": n_boot}
            if rec["runner_up"] is not None:
                a, b, paired = _pair(by_model[rec["winner"]], by_model[rec["runner_up"]])
                sign = 1.0 if hib else -1.0
                rng = np.random.default_rng([seed, si, mi])
                lo, hi = bootstrap_diff_ci(sign * a, sign * b, paired, rng, n_boot=n_boot)
                test, p = rank_test(a, b, paired)
                # the estimate the interval and the test are about: over the same (paired) seeds
                rec.update({"diff": sign * (float(np.mean(a)) - float(np.mean(b))),
                            "ci_lo": lo, "ci_hi": hi, "paired": paired, "n_a": int(len(a)), "n_b": int(len(b)),
                            "test": test, "p_value": p})
            out.append(rec)
    return out


def reference_model(models: Iterable[str]) -> str | None:
    """The model whose win rates are reported: the PINN when present, else the first model in order."""
    ms = sorted({str(m) for m in models}, key=model_sort_key)
    return ms[0] if ms else None


def win_rates(df: "pd.DataFrame", metrics: Sequence[str] | None = None, reference: str | None = None,
              tables: list[tuple[dict, dict]] | None = None) -> list[dict]:
    """Fraction of seeds in which ``reference`` (default the PINN) beats each other model, per stratum and
    metric. Seed-paired when the two share seeds; otherwise the fraction of all (reference, other) job pairs.

    Returns
    -------
    list of dict
        stratum, label, metric, model, other, wins, ties, n, rate (wins / n), paired.
    """
    ref = reference or reference_model(valid_jobs(df)["model"].dropna().unique())
    out: list[dict] = []
    if ref is None:
        return out
    tables = tables if tables is not None else seed_tables(df, metrics)
    for st, per_metric in tables:
        for metric, by_model in per_metric.items():
            if (metrics is not None and metric not in metrics) or ref not in by_model:
                continue
            sign = 1.0 if higher_is_better(metric) else -1.0
            for other in sorted(by_model, key=model_sort_key):
                if other == ref:
                    continue
                a, b, paired = _pair(by_model[ref], by_model[other])
                d = sign * (a - b) if paired else sign * (a[:, None] - b[None, :]).reshape(-1)
                if not len(d):
                    continue
                wins, ties = int((d > 0).sum()), int((d == 0).sum())
                out.append({"stratum": st, "label": stratum_label(st), "metric": metric, "model": ref,
                            "other": other, "wins": wins, "ties": ties, "n": int(len(d)),
                            "rate": wins / len(d), "paired": paired})
    return out


def comparisons_frame(comparisons: list[dict], rates: list[dict]) -> "pd.DataFrame":
    """Flat table of the comparisons with the reference model's win rates (``findings.csv``)."""
    import pandas as pd

    rate_map: dict[tuple, list[str]] = {}
    for r in rates:
        rate_map.setdefault((r["label"], r["metric"]), []).append(
            f"{r['model']}>{r['other']}:{r['wins']}/{r['n']}")
    rows = []
    for c in comparisons:
        row = {**{k: c["stratum"].get(k) for k in c["stratum"]}, "stratum": c["label"], "metric": c["metric"],
               "direction": "higher" if c["higher_is_better"] else "lower", "winner": c["winner"],
               "winner_mean": c["means"][c["winner"]], "runner_up": c["runner_up"] or "",
               "runner_up_mean": c["means"].get(c["runner_up"], float("nan")) if c["runner_up"] else float("nan"),
               "difference": c["diff"], "ci95_lo": c["ci_lo"], "ci95_hi": c["ci_hi"], "paired": c["paired"],
               "n_winner": c["n_a"], "n_runner_up": c["n_b"], "test": c["test"], "p_value": c["p_value"],
               "win_rates": " ".join(rate_map.get((c["label"], c["metric"]), []))}
        rows.append(row)
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- totals
def status_counts(df: "pd.DataFrame") -> dict[str, int]:
    st = df["status"].astype(str)
    return {"total": len(df), "ok": int((st == "ok").sum()), "skipped": int((st == "skipped").sum()),
            "failed": int((st == "failed").sum()), "running": int((st == "running").sum()),
            "pending": int((~st.isin(("ok", "skipped", "failed", "running"))).sum())}


def compute_totals(df: "pd.DataFrame") -> dict[str, float]:
    """Total compute: sum of each job's ``timings.total_s`` (elapsed wall time when absent), and training."""
    total = np.zeros(len(df))
    if "timings.total_s" in df.columns:
        total = df["timings.total_s"].astype(float).to_numpy().copy()
    if "elapsed_s" in df.columns:
        el = df["elapsed_s"].astype(float).to_numpy()
        total = np.where(np.isfinite(total), total, el)
    train = df["timings.train_s"].astype(float).to_numpy() if "timings.train_s" in df.columns else np.array([])
    return {"total_s": float(np.nansum(total)) if len(total) else 0.0,
            "n_timed": int(np.isfinite(total).sum()),
            "train_s": float(np.nansum(train)) if len(train) else 0.0}
