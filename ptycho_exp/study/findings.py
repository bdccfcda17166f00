"""Findings computed from the job table: who wins each metric, by how much, how sure, and the summary text.

For every *stratum* (one value of each swept parameter other than model and seed, e.g. one training-set
size) and every key metric, :func:`compare_models` ranks the models by their mean over seeds and compares the
winner with the runner-up: the difference (oriented so that positive means "better"), a seeded percentile
bootstrap 95 % interval over seeds, and a two-sided rank test (Wilcoxon signed-rank on seed-paired
differences, Mann-Whitney U when the seeds do not pair). :func:`win_rates` gives the fraction of seeds in
which the PINN (or the first model present) beats each other model. Iterative arms have no training set: their
missing ``data.n_train`` matches every training-set size.

The summary is a list of blocks (heading / paragraph / list / table) rendered to Markdown here and to HTML by
:mod:`ptycho_exp.study.report`; every sentence is built from the numbers.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ptycho_exp.external import EXTERNAL_PREFIX
from ptycho_exp.study.collect import ITERATIVE_MODELS, OK_STATUSES

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

FINDING_METRICS = ("phase_ssim", "amp_ssim", "phase_frc50", "amp_frc50", "phase_psnr", "amp_psnr")
TABLE_METRICS = ("phase_ssim", "amp_ssim", "phase_ms_ssim", "phase_frc50", "amp_frc50", "phase_mae")
MODEL_ORDER = ("pinn", "baseline", "ptylab", "tike")
N_BOOT = 2000
MIN_BOOT = 3
BOOT_SEED = 20230
Block = tuple


# ------------------------------------------------------------------------------------------ helpers
def _is_nan(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and v != v)


def fmt(v: Any, digits: int = 3) -> str:
    """Compact number: integers below 1e6 as integers, 1e6 and up as ``1e+08``, 1000..1e6 rounded, else
    ``digits`` significant digits; NaN/None as n/a."""
    if _is_nan(v):
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
    return "n/a" if _is_nan(v) else ("+" if v >= 0 else "") + fmt(v)


def fmt_p(p: float) -> str:
    if _is_nan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def model_sort_key(m: str) -> tuple:
    return (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m)


def higher_is_better(metric: str) -> bool:
    from ptycho_exp.study.plots import lower_is_better

    return not lower_is_better(metric)


def _valid(df: "pd.DataFrame") -> "pd.DataFrame":
    if "valid" in df.columns:
        return df[df["valid"].astype(bool)]
    return df[df["status"].isin(OK_STATUSES)]


def stratum_keys(df: "pd.DataFrame") -> list[str]:
    from ptycho_exp.study.aggregate import group_keys

    return [k for k in group_keys(df) if k != "model"]


def strata(df: "pd.DataFrame") -> list[dict]:
    """The distinct values of the swept parameters (model and seed aside) among the valid trained-model jobs
    (all valid jobs when only iterative arms exist), sorted; ``[{}]`` when nothing else is swept."""
    keys = stratum_keys(df)
    v = _valid(df)
    if not keys:
        return [{}]
    trained = v[~v["model"].isin(ITERATIVE_MODELS) & ~v["model"].astype(str).str.startswith(EXTERNAL_PREFIX)]
    base = trained if len(trained) else v
    uniq = base[keys].drop_duplicates()
    recs = [dict(zip(keys, row)) for row in uniq.itertuples(index=False, name=None)]
    return sorted(recs, key=lambda r: tuple((_is_nan(r[k]), str(type(r[k])), r[k] if not _is_nan(r[k]) else 0)
                                            for k in keys))


def stratum_mask(df: "pd.DataFrame", stratum: dict) -> np.ndarray:
    """Rows matching ``stratum``; a missing value in a row (an iterative arm's n_train) matches any value."""
    mask = np.ones(len(df), bool)
    for k, v in stratum.items():
        col = df[k]
        if _is_nan(v):
            mask &= col.isna().to_numpy()
        else:
            mask &= ((col == v) | col.isna()).to_numpy()
    return mask


def stratum_label(stratum: dict) -> str:
    if not stratum:
        return "all jobs"
    return ", ".join(f"{k} = {fmt(v)}" for k, v in stratum.items())


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
    v = _valid(df)
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
    ref = reference or reference_model(_valid(df)["model"].dropna().unique())
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


# ----------------------------------------------------------------------------------------- sentences
def comparison_sentence(c: dict) -> str:
    """One sentence per comparison, every clause from the numbers."""
    dirn = "higher" if c["higher_is_better"] else "lower"
    w = c["winner"]
    others = ", ".join(f"{m} {fmt(c['means'][m])} (n={c['counts'][m]})" for m in c["ranking"][1:])
    if c["runner_up"] is None:
        return (f"`{c['metric']}` ({dirn} is better): only {w} has values here, mean {fmt(c['means'][w])} "
                f"(n={c['counts'][w]}).")
    head = (f"`{c['metric']}` ({dirn} is better): **{w}** leads with mean {fmt(c['means'][w])} "
            f"(n={c['counts'][w]})")
    head += f" vs {others}"
    r = c["runner_up"]
    s = f"{head}; {w} is better than {r} by {fmt(c['diff'])}"
    if not _is_nan(c["ci_lo"]):
        how = f"paired over {c['n_a']} seeds" if c["paired"] else f"{c['n_a']} vs {c['n_b']} seeds, unpaired"
        s += f", 95 % bootstrap CI [{fmt_signed(c['ci_lo'])}, {fmt_signed(c['ci_hi'])}] ({how})"
        resolved = c["ci_lo"] > 0
        s += ("; the interval excludes 0" if resolved else
              f"; the interval includes 0, so these seeds do not resolve {w} vs {r}")
    else:
        s += f" (too few seeds for an interval: {c['n_a']} vs {c['n_b']})"
    if not _is_nan(c["p_value"]):
        s += f"; {c['test']} p = {fmt_p(c['p_value'])}"
    return s + "."


def win_rate_sentence(rates: list[dict]) -> str:
    parts = []
    for r in rates:
        unit = "paired seeds" if r["paired"] else "job pairs (seeds not shared)"
        tie = f", {r['ties']} ties" if r["ties"] else ""
        kind = " (iterative)" if r["other"] in ITERATIVE_MODELS else ""
        parts.append(f"{r['model']} beats {r['other']}{kind} in {r['wins']}/{r['n']} {unit} "
                     f"(win rate {100 * r['rate']:.0f} %{tie})")
    return "Win rate: " + "; ".join(parts) + "."


def overall_sentences(comparisons: list[dict]) -> list[str]:
    """Per metric: in how many strata each model leads (and how many of those leads are resolved)."""
    out = []
    by_metric: dict[str, list[dict]] = {}
    for c in comparisons:
        by_metric.setdefault(c["metric"], []).append(c)
    for metric, cs in by_metric.items():
        models = sorted({m for c in cs for m in c["ranking"]}, key=model_sort_key)
        if len(models) < 2:
            continue
        parts = []
        for m in models:
            lead = [c for c in cs if c["winner"] == m]
            resolved = sum(1 for c in lead if not _is_nan(c["ci_lo"]) and c["ci_lo"] > 0)
            parts.append(f"{m} in {len(lead)}" + (f" ({resolved} of them with a bootstrap interval excluding 0)"
                                                  if lead else ""))
        n = len(cs)
        out.append(f"`{metric}`: over {n} group{'s' if n != 1 else ''}, the best mean is from "
                   + ", ".join(parts) + ".")
    return out


def trend_sentences(df: "pd.DataFrame", metrics: Sequence[str] = ("phase_ssim", "amp_ssim")) -> list[str]:
    """Per swept parameter (model and seed aside), model and metric: how the mean over everything else moves
    from the lowest to the highest value (numeric parameters) and where it is best."""
    v = _valid(df)
    out = []
    for col in stratum_keys(df):
        for metric in [m for m in metrics if m in v.columns]:
            d = v[v[col].notna() & np.isfinite(v[metric].astype(float))]
            for model, g in sorted(d.groupby("model"), key=lambda t: model_sort_key(str(t[0]))):
                means = g.groupby(col)[metric].mean()
                if len(means) < 2:
                    continue
                try:
                    means = means.sort_index()
                except TypeError:
                    pass
                hib = higher_is_better(metric)
                best_k = means.idxmax() if hib else means.idxmin()
                worst_k = means.idxmin() if hib else means.idxmax()
                if col == "data.n_train" or g[col].dtype.kind in "if":
                    out.append(f"{model} `{metric}` vs `{col}`: {fmt(means.iloc[0])} at {fmt(means.index[0])} -> "
                               f"{fmt(means.iloc[-1])} at {fmt(means.index[-1])} (change "
                               f"{fmt_signed(means.iloc[-1] - means.iloc[0])}; best mean {fmt(means[best_k])} at "
                               f"{fmt(best_k)}).")
                else:
                    out.append(f"{model} `{metric}` vs `{col}`: best mean {fmt(means[best_k])} at {fmt(best_k)}, "
                               f"worst {fmt(means[worst_k])} at {fmt(worst_k)}.")
    return out


# -------------------------------------------------------------------------------------------- summary
def _counts(df: "pd.DataFrame") -> dict[str, int]:
    st = df["status"].astype(str)
    return {"total": len(df), "ok": int((st == "ok").sum()), "skipped": int((st == "skipped").sum()),
            "failed": int((st == "failed").sum()), "running": int((st == "running").sum()),
            "pending": int((~st.isin(("ok", "skipped", "failed", "running"))).sum())}


def _hours(seconds: float) -> str:
    from ptycho_exp.study.status import format_seconds

    return format_seconds(seconds)


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


def _time_span(df: "pd.DataFrame") -> str | None:
    starts = [s for s in df.get("started_at", []) if isinstance(s, str) and s]
    ends = [s for s in df.get("finished_at", []) if isinstance(s, str) and s]
    if not starts:
        return None
    return f"{min(starts)} to {max(ends) if ends else 'now'}"


def _values(df: "pd.DataFrame", col: str) -> str:
    vals = [v for v in df[col].dropna().unique()]
    try:
        vals = sorted(vals)
    except TypeError:
        vals = sorted(vals, key=str)
    return ", ".join(fmt(v) for v in vals)


def results_markdown_table(results: "pd.DataFrame", keys: Sequence[str],
                           metrics: Sequence[str] = TABLE_METRICS) -> Block | None:
    """Groups x key metrics, cells ``mean ± std (n_valid/n)``."""
    r = results[results["metric"].isin(metrics)]
    if r.empty:
        return None
    present = [m for m in metrics if m in set(r["metric"])]
    rows = []
    groups = r.drop_duplicates(subset=list(keys))[list(keys)]
    cols = list(r.columns)
    ki = [cols.index(k) for k in keys]
    lookup = {}
    for vals in r.itertuples(index=False, name=None):
        lookup[(tuple(fmt(vals[i]) for i in ki), vals[cols.index("metric")])] = vals
    for g in groups.itertuples(index=False, name=None):
        gk = tuple(fmt(x) for x in g)
        line = list(gk)
        for m in present:
            vals = lookup.get((gk, m))
            if vals is None:
                line.append("")
                continue
            mean, std = vals[cols.index("mean")], vals[cols.index("std")]
            nv, n = vals[cols.index("n_valid")], vals[cols.index("n")]
            line.append(f"{fmt(mean)} ± {fmt(std)} ({nv}/{n})" if nv else f"n/a (0/{n})")
        rows.append(line)
    return ("table", [*keys, *present], rows,
            "mean ± std over seeds (valid values / jobs in the group); full statistics in results.csv")


def summary_blocks(df: "pd.DataFrame", results: "pd.DataFrame", comparisons: list[dict], rates: list[dict], *,
                   info: dict, paths: Sequence[Path], generated_at: datetime, best: dict | None = None,
                   ensemble: "pd.DataFrame | None" = None, ensemble_note: str | None = None,
                   min_ms_ssim_phase: float | None = None) -> list[Block]:
    """The study summary as blocks (rendered to STUDY_SUMMARY.md and into report.html)."""
    from ptycho_exp.study.aggregate import group_keys

    keys = group_keys(df)
    c = _counts(df)
    tot = compute_totals(df)
    blocks: list[Block] = [("h1", f"Study summary: {info['study_name']}")]
    blocks.append(("p", f"Aggregated {generated_at.strftime('%Y-%m-%d %H:%M UTC')} from "
                        + ", ".join(f"`{p}`" for p in paths) + "."))
    # --- jobs
    blocks.append(("h2", "Jobs"))
    items = [f"{c['total']} job folders: {c['ok'] + c['skipped']} done ({c['ok']} ok, {c['skipped']} skipped "
             f"as already done), {c['failed']} failed, {c['running']} running, {c['pending']} pending."]
    items.append(f"Total compute {_hours(tot['total_s'])} ({fmt(tot['total_s'])} s summed over {tot['n_timed']} "
                 f"jobs), of which training {_hours(tot['train_s'])}.")
    span = _time_span(df)
    if span:
        items.append(f"Jobs ran from {span}.")
    from ptycho_exp.study.collect import swept_parameters

    swept = swept_parameters(df, include_model=True, include_seed=True)
    if swept:
        items.append("Swept: " + "; ".join(f"`{k}` ({_values(df, k)})" for k in swept) + ".")
    n_ok = c["ok"] + c["skipped"]
    if min_ms_ssim_phase is None:
        items.append(f"No `--min-ms-ssim-phase` filter: all {n_ok} done jobs enter the statistics.")
    else:
        ex = df[df["excluded_by_filter"]]
        names = ", ".join(str(j) for j in ex["job"].head(20)) + (" ..." if len(ex) > 20 else "")
        items.append(f"Filter `phase_ms_ssim >= {fmt(min_ms_ssim_phase)}` (--min-ms-ssim-phase) excluded "
                     f"{len(ex)} of {n_ok} done jobs" + (f": {names}." if len(ex) else "."))
    blocks.append(("ul", items))
    failed = df[df["status"] == "failed"]
    if len(failed):
        blocks.append(("h3", f"Failed jobs ({len(failed)})"))
        fl = []
        for _, r in failed.head(50).iterrows():
            params = ", ".join(f"{k}={fmt(r[k])}" for k in ["model", "seed", *keys[1:]] if k in r)
            err = str(r.get("error") or "").strip().splitlines()
            fl.append(f"job `{r['job']}` ({params}): {err[0][:200] if err else 'no error text'}")
        if len(failed) > 50:
            fl.append(f"... and {len(failed) - 50} more (see raw_results_all_trials.csv)")
        blocks.append(("ul", fl))
    # --- findings
    blocks.append(("h2", "Findings"))
    if not comparisons:
        blocks.append(("p", f"No finding: none of the {n_ok} done jobs has a finite value of "
                            + ", ".join(f"`{m}`" for m in FINDING_METRICS) + "."))
    else:
        n_boot = comparisons[0]["n_boot"]
        blocks.append(("p", f"Each group of the swept parameters ranks the models by their mean over seeds; the "
                            f"leader is compared with the runner-up (difference > 0 means the leader is better), "
                            f"with a percentile bootstrap 95 % interval ({n_boot} resamples, seed {BOOT_SEED}) "
                            f"and a two-sided rank test over seeds."))
        overall = overall_sentences(comparisons)
        if overall:
            blocks.append(("h3", "Overall"))
            blocks.append(("ul", overall))
        trends = trend_sentences(df)
        if trends:
            blocks.append(("h3", "Effect of each swept parameter (mean over the other parameters and seeds)"))
            blocks.append(("ul", trends))
        by_label: dict[str, list[dict]] = {}
        for cmp_ in comparisons:
            by_label.setdefault(cmp_["label"], []).append(cmp_)
        rates_by: dict[tuple, list[dict]] = {}
        for r in rates:
            rates_by.setdefault((r["label"], r["metric"]), []).append(r)
        for label, cs in by_label.items():
            blocks.append(("h3", label))
            items = []
            for cmp_ in cs:
                s = comparison_sentence(cmp_)
                rr = rates_by.get((label, cmp_["metric"]))
                if rr:
                    s += " " + win_rate_sentence(rr)
                items.append(s)
            blocks.append(("ul", items))
    # --- tables
    tbl = results_markdown_table(results, keys)
    if tbl is not None:
        blocks.append(("h2", "Results (key metrics)"))
        blocks.append(tbl)
    if best:
        blocks.append(("h2", "Best parameters"))
        rows = []
        for m, b in best.items():
            bb = b["best"]
            params = ", ".join(f"{k}={fmt(v)}" for k, v in bb["params"].items())
            rows.append([m, b["direction"], params, f"{fmt(bb['mean'])} ± {fmt(bb['std'])}",
                         f"[{fmt(bb['p25'])}, {fmt(bb['p75'])}]", f"{bb['n_valid']}/{bb['n']}"])
        blocks.append(("table", ["metric", "direction", "best group", "mean ± std over seeds", "IQR",
                                 "n valid / n"], rows, "best_params.yaml has the best group of every model too"))
    if ensemble is not None and len(ensemble):
        blocks.append(("h2", "Seed ensembles"))
        mets = [m for m in ("phase_ssim", "amp_ssim", "phase_frc50") if m in ensemble.columns]
        ek = [k for k in keys if k in ensemble.columns]
        rows = []
        for _, r in ensemble.iterrows():
            line = [fmt(r[k]) for k in ek] + [str(int(r["n_members"]))]
            for m in mets:
                mm = r.get(f"members_mean_{m}", float("nan"))
                line.append(f"{fmt(r[m])} (members {fmt(mm)}, {fmt_signed(r[m] - mm)})")
            rows.append(line)
        blocks.append(("table", [*ek, "members", *mets], rows,
                       "complex mean of the registered seed reconstructions, scored like one reconstruction "
                       "(members: mean of the seeds' own scores)"))
    elif ensemble_note:
        blocks.append(("h2", "Seed ensembles"))
        blocks.append(("p", ensemble_note))
    return blocks


# --------------------------------------------------------------------------------------- rendering
def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def blocks_to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + b[1], ""]
        elif kind == "p":
            lines += [b[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in b[1]] + [""]
        elif kind == "table":
            header, rows = b[1], b[2]
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in rows]
            if len(b) > 3 and b[3]:
                lines += ["", f"*{b[3]}*"]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def terminal_summary(df: "pd.DataFrame", comparisons: list[dict], out_dir: Path, *, plots: bool,
                     n_figures: int, min_ms_ssim_phase: float | None) -> str:
    """A few lines for the terminal: counts, filter, the lead per key metric, where the files are."""
    c = _counts(df)
    lines = [f"aggregated {c['total']} jobs: {c['ok'] + c['skipped']} done, {c['failed']} failed, "
             f"{c['running']} running, {c['pending']} pending"]
    if min_ms_ssim_phase is not None:
        lines.append(f"filter phase_ms_ssim >= {fmt(min_ms_ssim_phase)}: excluded "
                     f"{int(df['excluded_by_filter'].sum())} jobs")
    for metric in ("phase_ssim", "amp_ssim"):
        cs = [x for x in comparisons if x["metric"] == metric]
        if not cs:
            continue
        wins: dict[str, int] = {}
        for x in cs:
            wins[x["winner"]] = wins.get(x["winner"], 0) + 1
        lines.append(f"{metric}: best mean in " + ", ".join(
            f"{m} {n}/{len(cs)}" for m, n in sorted(wins.items(), key=lambda t: -t[1])) + " groups")
    lines.append(f"wrote {out_dir}/results.csv, STUDY_SUMMARY.md, report.html"
                 + (f" and {n_figures} figures in plots/" if plots else " (no plots)"))
    return "\n".join(lines)
