"""The study summary: sentences built from the findings' numbers, as blocks rendered to Markdown.

:func:`summary_blocks` turns the job table, the results table and the comparisons of
:mod:`ptycho_exp.analysis.findings` into a list of blocks (heading / paragraph / list / table);
:func:`blocks_to_markdown` writes ``STUDY_SUMMARY.md`` and :mod:`ptycho_exp.report.page` renders the same
blocks to HTML. Every sentence is built from the numbers.
"""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ptycho_exp.analysis.collect import swept_parameters
from ptycho_exp.analysis.findings import (
    BOOT_SEED,
    FINDING_METRICS,
    TABLE_METRICS,
    Block,
    status_counts,
    is_nan,
    valid_jobs,
    compute_totals,
    fmt,
    fmt_p,
    fmt_signed,
    model_sort_key,
    reference_label,
    stratum_keys,
)
from ptycho_exp.analysis.margin import MIN_BOOT, min_margin, null_flags
from ptycho_exp.analysis.metricinfo import HEADLINE_METRICS, higher_is_better
from ptycho_exp.analysis.status import format_seconds
from ptycho_exp.analysis.tables import group_keys
from ptycho_exp.models.registry import is_iterative

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


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
    if not is_nan(c["ci_lo"]):
        how = f"paired over {c['n_a']} seeds" if c["paired"] else f"{c['n_a']} vs {c['n_b']} seeds, unpaired"
        s += f", 95 % bootstrap CI [{fmt_signed(c['ci_lo'])}, {fmt_signed(c['ci_hi'])}] ({how})"
        resolved = c["ci_lo"] > 0
        s += ("; the interval excludes 0" if resolved else
              f"; the interval includes 0, so these seeds do not resolve {w} vs {r}")
    else:
        s += f" (too few seeds for an interval: {c['n_a']} vs {c['n_b']})"
    if not is_nan(c["p_value"]):
        s += f"; {c['test']} p = {fmt_p(c['p_value'])}"
    return s + "."


def win_rate_sentence(rates: list[dict]) -> str:
    parts = []
    for r in rates:
        unit = "paired seeds" if r["paired"] else "job pairs (seeds not shared)"
        tie = f", {r['ties']} ties" if r["ties"] else ""
        kind = " (iterative)" if is_iterative(r["other"]) else ""
        parts.append(f"{r['model']} beats {r['other']}{kind} in {r['wins']}/{r['n']} {unit} "
                     f"(win rate {100 * r['rate']:.0f} %{tie})")
    return "Win rate: " + "; ".join(parts) + "."


def overall_sentences(comparisons: list[dict]) -> list[str]:
    """Per metric: in how many strata each model leads (and how many of those leads are resolved)."""
    out = []
    by_metric: dict[tuple, list[dict]] = {}
    for c in comparisons:
        by_metric.setdefault((c["metric"], str(c["stratum"].get("scored_against"))), []).append(c)
    several = len({k[1] for k in by_metric}) > 1
    for (metric, _), cs in by_metric.items():
        models = sorted({m for c in cs for m in c["ranking"]}, key=model_sort_key)
        if len(models) < 2:
            continue
        parts = []
        for m in models:
            lead = [c for c in cs if c["winner"] == m]
            resolved = sum(1 for c in lead if not is_nan(c["ci_lo"]) and c["ci_lo"] > 0)
            parts.append(f"{m} in {len(lead)}" + (f" ({resolved} of them with a bootstrap interval excluding 0)"
                                                  if lead else ""))
        n = len(cs)
        ref = (f" (scored against {reference_label(cs[0]['stratum'].get('scored_against'))})"
               if several and "scored_against" in cs[0]["stratum"] else "")
        out.append(f"`{metric}`{ref}: over {n} group{'s' if n != 1 else ''}, the best mean is from "
                   + ", ".join(parts) + ".")
    return out


def trend_sentences(df: "pd.DataFrame", metrics: Sequence[str] = ("phase_ssim", "amp_ssim")) -> list[str]:
    """Per swept parameter (model and seed aside), model and metric: how the mean over everything else moves
    from the lowest to the highest value (numeric parameters) and where it is best."""
    v = valid_jobs(df)
    out = []
    refs = v["scored_against"].astype(object).drop_duplicates().tolist() if "scored_against" in v.columns else [None]
    for ref in refs:
        vr = v if ref is None and "scored_against" not in v.columns else v[
            v["scored_against"].isna() if is_nan(ref) else v["scored_against"] == ref]
        tag = f" (scored against {reference_label(ref)})" if len(refs) > 1 else ""
        out += [t.replace(":", tag + ":", 1) if tag else t for t in _trends(vr, df, metrics)]
    return out


def _trends(v: "pd.DataFrame", df: "pd.DataFrame", metrics: Sequence[str]) -> list[str]:
    out = []
    for col in [k for k in stratum_keys(df) if k != "scored_against"]:
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
def _hours(seconds: float) -> str:
    return format_seconds(seconds)


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


FLAG_OPEN, FLAG_CLOSE = "{{flag:", "}}"  # a warning badge in a cell or sentence (rendered by each output)


def flag_mark(text: str) -> str:
    """``text`` marked as a warning badge: Markdown shows ``⚠ text``, the HTML report a coloured badge."""
    return f"{FLAG_OPEN}{text}{FLAG_CLOSE}"


def metric_words(metric: str) -> str:
    """``phase_ssim`` -> "phase SSIM", ``amp_ms_ssim`` -> "amplitude MS-SSIM"."""
    part, _, m = metric.partition("_")
    ch = {"amp": "amplitude", "phase": "phase"}.get(part, part)
    return f"{ch} {m.replace('_', '-').upper()}" if m else metric


def null_flag_sentence(f: dict, with_reference: bool = False) -> str:
    """"pinn at data.n_train=256: no better than a flat image in phase (phase SSIM 0.05 vs 0.03 for a flat
    image; margin +0.02, needs >= 0.1)"."""
    params = ", ".join(f"{k}={fmt(v)}" for k, v in f["params"].items() if k not in ("model", "scored_against"))
    where = f"{f['model']}" + (f" at {params}" if params else "")
    if with_reference and "scored_against" in f["params"]:
        where += f" (scored against {reference_label(f['params']['scored_against'])})"
    ch = "phase" if f["metric"].startswith("phase") else "amplitude"
    s = (f"{where}: {f['verdict']} in {ch} ({metric_words(f['metric'])} {fmt(f['mean'])} vs "
         f"{fmt(f['null_mean'])} for a flat image; margin {fmt_signed(f['margin'])}")
    if not is_nan(f["margin_ci_lo"]):
        s += f", 95 % bootstrap CI [{fmt_signed(f['margin_ci_lo'])}, {fmt_signed(f['margin_ci_hi'])}]"
    thr = min_margin(f["metric"])
    return s + (f"; a clear margin is >= {fmt(thr)}" if thr is not None else "") + ")"


def _cell_key(values: Sequence[Any]) -> tuple:
    return tuple(fmt(x) for x in values)


def results_markdown_table(results: "pd.DataFrame", keys: Sequence[str],
                           metrics: Sequence[str] = TABLE_METRICS, flags: Sequence[dict] = ()) -> Block | None:
    """Groups x key metrics, cells ``mean ± std (n_valid/n)``; a cell of a group that does not beat the flat
    image clearly (``flags`` from :func:`ptycho_exp.analysis.margin.null_flags`) carries a warning badge.
    A single ``scored_against`` value is named in the caption instead of a column."""
    r = results[results["metric"].isin(metrics)]
    if r.empty:
        return None
    ref_note = ""
    if "scored_against" in keys:
        refs = r["scored_against"].astype(object).drop_duplicates().tolist()
        if len(refs) == 1:
            ref_note = f"All scored against {reference_label(refs[0])}. "
            keys = [k for k in keys if k != "scored_against"]
    flagged = {(_cell_key([f["params"][k] for k in keys]), f["metric"]): f for f in flags}
    present = [m for m in metrics if m in set(r["metric"])]
    rows = []
    groups = r.drop_duplicates(subset=list(keys))[list(keys)]
    cols = list(r.columns)
    ki = [cols.index(k) for k in keys]
    lookup = {}
    for vals in r.itertuples(index=False, name=None):
        lookup[(tuple(fmt(vals[i]) for i in ki), vals[cols.index("metric")])] = vals
    for g in groups.itertuples(index=False, name=None):
        gk = _cell_key(g)
        line = list(gk)
        for m in present:
            vals = lookup.get((gk, m))
            if vals is None:
                line.append("")
                continue
            mean, std = vals[cols.index("mean")], vals[cols.index("std")]
            nv, n = vals[cols.index("n_valid")], vals[cols.index("n")]
            cell = f"{fmt(mean)} ± {fmt(std)} ({nv}/{n})" if nv else f"n/a (0/{n})"
            f = flagged.get((gk, m))
            if f is not None:
                cell += " " + flag_mark(f"{f['verdict']} ({fmt(f['null_mean'])})")
            line.append(cell)
        rows.append([reference_label(raw) if k == "scored_against" else shown
                     for k, raw, shown in zip(keys, g, gk)] + line[len(keys):])
    return ("table", [*keys, *present], rows,
            ref_note + "mean ± std over seeds (valid values / jobs in the group); ⚠: the group does not beat the "
            "flat image (its score in brackets) by a clear margin; full statistics and margins in results.csv")


def key_findings(df: "pd.DataFrame", results: "pd.DataFrame", comparisons: list[dict], keys: Sequence[str],
                 flags: list[dict]) -> list[Block]:
    """The opening findings: which model wins the headline metrics, which groups fail to beat a flat image,
    what the jobs were scored against, and notes on older result folders."""
    items: list[str] = []
    refs = (df.loc[df["status"].isin(("ok", "skipped")), "scored_against"].astype(object).drop_duplicates().tolist()
            if "scored_against" in df.columns else [])
    several = len(refs) > 1
    if several:
        items.append(f"Jobs were scored against {len(refs)} different references ("
                     + "; ".join(reference_label(r) for r in refs) + "): each is its own group, and models are "
                     "compared only among jobs scored against the same one.")
    elif refs:
        items.append(f"Every job was scored against {reference_label(refs[0])}.")
    for metric in HEADLINE_METRICS:
        cs = [x for x in comparisons if x["metric"] == metric and x["runner_up"] is not None]
        by_ref: dict[str, list[dict]] = {}
        for x in cs:
            by_ref.setdefault(str(x["stratum"].get("scored_against")), []).append(x)
        for ref_cs in by_ref.values():
            wins: dict[str, int] = {}
            for x in ref_cs:
                wins[x["winner"]] = wins.get(x["winner"], 0) + 1
            top = sorted(wins.items(), key=lambda t: (-t[1], model_sort_key(t[0])))
            ref = (f" (scored against {reference_label(ref_cs[0]['stratum'].get('scored_against'))})"
                   if several else "")
            resolved = sum(1 for x in ref_cs if x["winner"] == top[0][0] and not is_nan(x["ci_lo"]) and x["ci_lo"] > 0)
            items.append(f"Winner in {metric_words(metric)} (`{metric}`){ref}: **{top[0][0]}**, best mean in "
                         f"{top[0][1]} of {len(ref_cs)} group{'s' if len(ref_cs) != 1 else ''}"
                         + (f" ({resolved} resolved by a bootstrap interval excluding 0)" if resolved else "")
                         + ("; " + ", ".join(f"{m} in {n}" for m, n in top[1:]) if len(top) > 1 else "") + ".")
    has_null = "null_mean" in results.columns and results.loc[
        results["metric"].isin(HEADLINE_METRICS), "null_mean"].notna().any()
    if flags:
        items.append(f"{flag_mark('Failed to beat the null reconstruction')}: {len(flags)} group/metric "
                     f"pair{'s' if len(flags) != 1 else ''} did not beat a flat image by a clear margin:")
    elif has_null:
        items.append("Every model beats the flat (null) image by a clear margin in "
                     + " and ".join(f"`{m}`" for m in HEADLINE_METRICS) + " in every group.")
    else:
        items.append("No job recorded null (flat-image) scores (result folders from an older version): whether the "
                     "models beat a flat image cannot be checked.")
    legacy = int(df.attrs.get("legacy_jobs", 0) or 0)
    if legacy:
        items.append(f"{legacy} job{'s' if legacy != 1 else ''} predate `metrics_version` 2: their phase SSIM / "
                     "MS-SSIM were on the reference publication's (φ+π)/2π scale, so they are reported as "
                     "`phase_ssim_ref` / `phase_ms_ssim_ref` and their headline `phase_ssim` / `phase_ms_ssim` "
                     "are empty (never averaged with headline scores).")
    blocks: list[Block] = [("h2", "Key findings"), ("ul", items)]
    if flags:
        badge = flag_mark("fails the flat-image check")
        blocks.append(("ul", [f"{badge} {null_flag_sentence(f, with_reference=several)}" for f in flags]))
    blocks.append(("p", f"Rule: a group beats the flat image clearly when its mean margin over the null score is at "
                        f"least {fmt(min_margin('amp_ssim'))} (SSIM-type metrics) and, with {MIN_BOOT} or more "
                        "seeds, the 95 % bootstrap interval of the paired margin excludes 0."))
    return blocks


def summary_blocks(df: "pd.DataFrame", results: "pd.DataFrame", comparisons: list[dict], rates: list[dict], *,
                   info: dict, paths: Sequence[Path], generated_at: datetime, best: dict | None = None,
                   ensemble: "pd.DataFrame | None" = None, ensemble_note: str | None = None,
                   min_ms_ssim_phase: float | None = None) -> list[Block]:
    """The study summary as blocks (rendered to STUDY_SUMMARY.md and into report.html)."""
    keys = group_keys(df)
    c = status_counts(df)
    tot = compute_totals(df)
    blocks: list[Block] = [("h1", f"Study summary: {info['study_name']}")]
    blocks.append(("p", f"Aggregated {generated_at.strftime('%Y-%m-%d %H:%M UTC')} from "
                        + ", ".join(f"`{p}`" for p in paths) + "."))
    flags = null_flags(results, keys)
    blocks += key_findings(df, results, comparisons, keys, flags)
    # --- jobs
    blocks.append(("h2", "Jobs"))
    items = [f"{c['total']} job folders: {c['ok'] + c['skipped']} done ({c['ok']} ok, {c['skipped']} skipped "
             f"as already done), {c['failed']} failed, {c['running']} running, {c['pending']} pending."]
    items.append(f"Total compute {_hours(tot['total_s'])} ({fmt(tot['total_s'])} s summed over {tot['n_timed']} "
                 f"jobs), of which training {_hours(tot['train_s'])}.")
    span = _time_span(df)
    if span:
        items.append(f"Jobs ran from {span}.")
    swept = swept_parameters(df, include_model=True, include_seed=True)
    if swept:
        items.append("Swept: " + "; ".join(f"`{k}` ({_values(df, k)})" for k in swept) + ".")
    n_ok = c["ok"] + c["skipped"]
    n_inv = int(df["metrics_invalid"].sum()) if "metrics_invalid" in df.columns else 0
    if n_inv:
        items.append(f"{n_inv} done job{'s' if n_inv != 1 else ''} recorded invalid scores (`metrics_valid` false) "
                     "and are left out of the statistics (counted as `n_invalid` in results.csv); reasons below.")
        n_ok -= n_inv
    if min_ms_ssim_phase is None:
        items.append(f"No `--min-ms-ssim-phase` filter: all {n_ok} done jobs with valid scores enter the "
                     "statistics.")
    else:
        ex = df[df["excluded_by_filter"]]
        names = ", ".join(str(j) for j in ex["job"].head(20)) + (" ..." if len(ex) > 20 else "")
        items.append(f"Filter `phase_ms_ssim >= {fmt(min_ms_ssim_phase)}` (--min-ms-ssim-phase) excluded "
                     f"{len(ex)} of {n_ok} done jobs" + (f": {names}." if len(ex) else "."))
    blocks.append(("ul", items))
    invalid = df[df["metrics_invalid"].astype(bool)] if "metrics_invalid" in df.columns else df.iloc[:0]
    if len(invalid):
        blocks.append(("h3", f"Jobs with invalid scores ({len(invalid)}), left out of the statistics"))
        il = []
        for _, r in invalid.head(50).iterrows():
            params = ", ".join(f"{k}={fmt(r[k])}" for k in ["model", "seed", *keys[1:]] if k in r)
            il.append(f"job `{r['job']}` ({params}): {str(r.get('invalid_reason') or 'no reason recorded')[:200]}")
        if len(invalid) > 50:
            il.append(f"... and {len(invalid) - 50} more (see raw_results_all_trials.csv)")
        blocks.append(("ul", il))
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
    tbl = results_markdown_table(results, keys, flags=flags)
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
def md_flags(text: str) -> str:
    """Warning badges (:func:`flag_mark`) as ``⚠ text`` in Markdown."""
    return re.sub(re.escape(FLAG_OPEN) + r"(.*?)" + re.escape(FLAG_CLOSE), r"⚠ **\1**", str(text))


def _md_cell(s: Any) -> str:
    return md_flags(str(s)).replace("|", "\\|").replace("\n", " ")


def blocks_to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + b[1], ""]
        elif kind == "p":
            lines += [md_flags(b[1]), ""]
        elif kind == "ul":
            lines += [f"- {md_flags(item)}" for item in b[1]] + [""]
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
                     n_figures: int, min_ms_ssim_phase: float | None,
                     results: "pd.DataFrame | None" = None) -> str:
    """A few lines for the terminal: counts, filter, the lead per key metric, where the files are."""
    c = status_counts(df)
    lines = [f"aggregated {c['total']} jobs: {c['ok'] + c['skipped']} done, {c['failed']} failed, "
             f"{c['running']} running, {c['pending']} pending"]
    if df.attrs.get("unreadable"):  # named one by one as they were read
        lines[0] += f"; {len(df.attrs['unreadable'])} unreadable result file(s) skipped"
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
    n_inv = int(df["metrics_invalid"].sum()) if "metrics_invalid" in df.columns else 0
    if n_inv:
        lines.append(f"{n_inv} jobs with invalid scores left out of the statistics")
    if results is not None:
        for f in null_flags(results, group_keys(df)):
            lines.append("WARNING " + null_flag_sentence(f, with_reference=True))
    lines.append(f"wrote {out_dir}/results.csv, STUDY_SUMMARY.md, report.html"
                 + (f" and {n_figures} figures in plots/" if plots else " (no plots)"))
    return "\n".join(lines)
