"""Study plots (matplotlib Agg, no pyplot state; PNG at 300 dpi + SVG; plotly HTML for 3-D).

Every function takes the per-job table of *valid* rows (see :func:`ptycho_exp.aggregate.valid_rows`),
writes atomically into ``out_dir`` and returns the written paths; it returns [] when the data does not
support the plot (e.g. fewer than two training-set sizes).
"""
from __future__ import annotations

import io
import itertools
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ptycho_exp.files import atomic_write_bytes, atomic_write_text
from ptycho_exp.analysis.collect import is_numeric_param, swept_parameters
from ptycho_exp.analysis.metricinfo import KEY_METRICS, higher_is_better
from ptycho_exp.models.registry import MODEL_ORDER, is_iterative

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

HEATMAP_METRICS = ("phase_ssim", "amp_ssim")
DPI = 300
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf")


def _models(df: "pd.DataFrame") -> list[str]:
    present = [str(m) for m in df["model"].dropna().unique()]
    return sorted(present, key=lambda m: (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, m))


def model_colours(models: Iterable[str]) -> dict[str, str]:
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(models)}


def _figure(w: float = 6.4, h: float = 4.4, **kw: Any):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained", **kw)


def save_figure(fig: Any, base: Path) -> list[Path]:
    """Write ``base.png`` (300 dpi) and ``base.svg`` atomically; returns both paths."""
    import matplotlib

    out = []
    with matplotlib.rc_context({"svg.hashsalt": "ptycho_exp", "svg.fonttype": "none"}):
        for ext, kw in (("png", {"dpi": DPI, "metadata": {"Software": None}}),
                        ("svg", {"metadata": {"Date": None}})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, **kw)
            path = base.with_suffix(f".{ext}")
            atomic_write_bytes(path, buf.getvalue())
            out.append(path)
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _is_logish(values: Sequence[float]) -> tuple[bool, int]:
    """(log axis?, base): all powers of two -> base 2; spanning >= 2 decades -> base 10."""
    vals = [float(v) for v in values if v == v]
    if len(vals) < 2 or min(vals) <= 0:
        return False, 10
    if all(float(v).is_integer() and int(v) > 0 and (int(v) & (int(v) - 1)) == 0 for v in vals):
        return True, 2
    if max(vals) / min(vals) >= 100:
        return True, 10
    return False, 10


def _fmt_value(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        if v != v:
            return "n/a"
        if float(v).is_integer() and abs(v) < 1e5:
            return str(int(v))
        return f"{v:.3g}"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and abs(int(v)) >= 100_000:
        return f"{float(v):.3g}"
    return str(v)


def _other_params(df: "pd.DataFrame", exclude: Sequence[str]) -> list[str]:
    return [p for p in swept_parameters(df) if p not in exclude and df[p].nunique(dropna=True) > 1]


def _label(model: str, keys: Sequence[str], combo: Sequence[Any]) -> str:
    if not keys:
        return model
    return model + " (" + ", ".join(f"{k}={_fmt_value(v)}" for k, v in zip(keys, combo)) + ")"


# --------------------------------------------------------------------------------- metric vs n_train
def plot_metric_vs_n_train(df: "pd.DataFrame", out_dir: Path | str,
                           metrics: Sequence[str] | None = None) -> list[Path]:
    """Metric vs ``data.n_train`` (log2 axis): median line and IQR band per model; the iterative arms
    (no training set) as a horizontal median line + IQR band across the axis."""
    col = "data.n_train"
    if col not in df.columns or df[col].nunique(dropna=True) < 2:
        return []
    out_dir = Path(out_dir)
    metrics = [m for m in (metrics or KEY_METRICS) if m in df.columns and df[m].notna().any()]
    others = _other_params(df, exclude=(col,))
    models = _models(df)
    colours = model_colours(models)
    xs = sorted(float(v) for v in df[col].dropna().unique())
    written: list[Path] = []
    for metric in metrics:
        d = df[df[metric].notna()]
        if d.empty:
            continue
        fig = _figure()
        ax = fig.add_subplot()
        styles = itertools.cycle(["-", "--", ":", "-."])
        n_lines = 0
        for model in models:
            dm = d[d["model"] == model]
            if dm.empty:
                continue
            combos = [()] if not others else sorted(
                {tuple(r) for r in dm[others].itertuples(index=False)}, key=lambda t: tuple(map(str, t)))
            for combo in combos:
                sub = dm
                for k, v in zip(others, combo):
                    sub = sub[sub[k].isna()] if (isinstance(v, float) and v != v) else sub[sub[k] == v]
                ls = next(styles) if len(combos) > 1 else "-"
                label = _label(model, others, combo)
                net = sub[sub[col].notna()]
                if not net.empty:
                    g = net.groupby(col)[metric]
                    stats = g.quantile([0.25, 0.5, 0.75]).unstack()
                    x = stats.index.to_numpy(dtype=float)
                    ax.plot(x, stats[0.5], ls, marker="o", color=colours[model], label=label, lw=1.8, ms=4)
                    ax.fill_between(x, stats[0.25], stats[0.75], color=colours[model], alpha=0.2, lw=0)
                    n_lines += 1
                it = sub[sub[col].isna()]
                if not it.empty:
                    q25, q50, q75 = np.nanpercentile(it[metric].to_numpy(float), [25, 50, 75])
                    name = label + (" (iterative, no training set)" if is_iterative(model) else " (no n_train)")
                    ax.axhline(q50, color=colours[model], ls="--", lw=1.5, label=name)
                    ax.axhspan(q25, q75, color=colours[model], alpha=0.12, lw=0)
                    n_lines += 1
        if not n_lines:
            continue
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([_fmt_value(v) for v in xs])
        ax.minorticks_off()
        ax.set_xlabel("training-set size data.n_train (log2 scale)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs training-set size\n(median line, interquartile band over seeds)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        written += save_figure(fig, out_dir / f"metric_vs_n_train_{_safe(metric)}")
    return written


# ----------------------------------------------------------------------------------------- heatmaps
def _axis_positions(values: list[Any], numeric: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Cell centres, edges and scale note for one heatmap axis (log-spaced when values are log-ish)."""
    if numeric:
        logish, base = _is_logish(values)
        if logish:
            c = np.log(np.asarray(values, float)) / math.log(base)
            note = f" (log{base} scale)"
        else:
            c = np.arange(len(values), dtype=float)
            note = ""
    else:
        c = np.arange(len(values), dtype=float)
        note = ""
    if len(c) == 1:
        edges = np.array([c[0] - 0.5, c[0] + 0.5])
    else:
        mids = (c[1:] + c[:-1]) / 2
        edges = np.concatenate([[c[0] - (mids[0] - c[0])], mids, [c[-1] + (c[-1] - mids[-1])]])
    return c, edges, note


def plot_heatmaps(df: "pd.DataFrame", out_dir: Path | str, metrics: Sequence[str] | None = None) -> list[Path]:
    """One annotated heatmap (mean over seeds and other parameters) per pair of swept parameters, per
    metric, one panel per model. Axes are log-spaced when values span >= 2 decades or are powers of two."""
    params = _other_params(df, exclude=())
    if len(params) < 2:
        return []
    out_dir = Path(out_dir)
    metrics = [m for m in (metrics or HEATMAP_METRICS) if m in df.columns and df[m].notna().any()]
    written: list[Path] = []
    for a, b in itertools.combinations(params, 2):
        for metric in metrics:
            d = df[df[metric].notna() & df[a].notna() & df[b].notna()]
            models = _models(d)
            if d.empty or d[a].nunique() < 2 or d[b].nunique() < 2:
                continue
            xa = sorted(d[a].unique(), key=lambda v: (isinstance(v, str), v))
            yb = sorted(d[b].unique(), key=lambda v: (isinstance(v, str), v))
            xc, xe, xnote = _axis_positions(xa, is_numeric_param(d, a))
            yc, ye, ynote = _axis_positions(yb, is_numeric_param(d, b))
            fig = _figure(4.6 * len(models) + 0.8, 4.2)
            axes = fig.subplots(1, len(models), squeeze=False)[0]
            vmin, vmax = float(d[metric].min()), float(d[metric].max())
            mesh = None
            for ax, model in zip(axes, models):
                piv = (d[d["model"] == model].groupby([b, a])[metric].mean().unstack(a)
                       .reindex(index=yb, columns=xa))
                z = piv.to_numpy(dtype=float)
                mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(z), cmap="viridis", vmin=vmin, vmax=vmax,
                                     shading="flat")
                mid = (vmin + vmax) / 2
                for i, y in enumerate(yc):
                    for j, x in enumerate(xc):
                        if z[i, j] == z[i, j]:
                            ax.text(x, y, f"{z[i, j]:.3g}", ha="center", va="center", fontsize=7,
                                    color="white" if z[i, j] < mid else "black")
                ax.set_xticks(xc)
                ax.set_xticklabels([_fmt_value(v) for v in xa], rotation=45 if len(xa) > 6 else 0, fontsize=8)
                ax.set_yticks(yc)
                ax.set_yticklabels([_fmt_value(v) for v in yb], fontsize=8)
                ax.set_xlabel(a + xnote)
                ax.set_ylabel(b + ynote)
                ax.set_title(model, fontsize=10)
            if mesh is not None:
                fig.colorbar(mesh, ax=list(axes), label=f"mean {metric}")
            fig.suptitle(f"{metric}: mean over seeds" + (" and other parameters" if len(params) > 2 else ""),
                         fontsize=10)
            written += save_figure(fig, out_dir / f"heatmap_{_safe(metric)}_{_safe(a)}_x_{_safe(b)}")
    return written


# ------------------------------------------------------------------------------------- 3-D surface
def plot_surface_3d(df: "pd.DataFrame", out_dir: Path | str, metrics: Sequence[str] | None = None) -> list[Path]:
    """When >= 3 numeric parameters are swept: an interactive plotly figure per metric (offline HTML, the
    plotly.js bundle inline, no CDN) with one surface of mean metric over the first two parameters for each
    value of the third (and each model), plus the figure's JSON for embedding in the report."""
    params = [p for p in _other_params(df, exclude=()) if is_numeric_param(df, p)]
    if len(params) < 3:
        return []
    import plotly.graph_objects as go

    out_dir = Path(out_dir)
    pa, pb, pc = params[:3]
    metrics = [m for m in (metrics or HEATMAP_METRICS) if m in df.columns and df[m].notna().any()]
    written: list[Path] = []
    for metric in metrics:
        d = df[df[metric].notna() & df[pa].notna() & df[pb].notna() & df[pc].notna()]
        if d.empty:
            continue
        xa, yb, zc = (sorted(d[p].unique()) for p in (pa, pb, pc))
        fig = go.Figure()
        scales = ["Viridis", "Plasma", "Cividis", "Magma"]
        cmin, cmax = float(d[metric].min()), float(d[metric].max())
        for mi, model in enumerate(_models(d)):
            dm = d[d["model"] == model]
            for k, cval in enumerate(zc):
                piv = (dm[dm[pc] == cval].groupby([pb, pa])[metric].mean().unstack(pa)
                       .reindex(index=yb, columns=xa))
                if piv.notna().sum().sum() == 0:
                    continue
                z = piv.to_numpy(dtype=float)
                fig.add_trace(go.Surface(
                    x=[float(v) for v in xa], y=[float(v) for v in yb], z=z.tolist(),
                    colorscale=scales[mi % len(scales)], cmin=cmin, cmax=cmax, opacity=0.85,
                    showscale=(k == 0 and mi == 0), showlegend=True,
                    name=f"{model}, {pc}={_fmt_value(cval)}",
                    hovertemplate=(f"{pa}=%{{x}}<br>{pb}=%{{y}}<br>{metric}=%{{z:.4g}}"
                                   f"<extra>{model}, {pc}={_fmt_value(cval)}</extra>")))
        if not fig.data:
            continue
        scene = {}
        for axis, vals, name in (("xaxis", xa, pa), ("yaxis", yb, pb)):
            logish, _ = _is_logish(vals)
            scene[axis] = {"title": {"text": name}, "type": "log" if logish else "linear"}
        scene["zaxis"] = {"title": {"text": metric}}
        fig.update_layout(title={"text": f"mean {metric} over {pa} x {pb}, one surface per {pc} and model"},
                          scene=scene, margin={"l": 0, "r": 0, "t": 40, "b": 0},
                          legend={"itemsizing": "constant", "x": 0, "y": 1, "xanchor": "left"})
        base = out_dir / f"surface3d_{_safe(metric)}"
        html = fig.to_html(full_html=True, include_plotlyjs=True, include_mathjax=False,
                           config={"displaylogo": False, "responsive": True})
        atomic_write_text(base.with_suffix(".html"), html)
        atomic_write_text(base.with_suffix(".plotly.json"), fig.to_json())
        written += [base.with_suffix(".html"), base.with_suffix(".plotly.json")]
    return written


# ---------------------------------------------------------------------------------------- pareto
def pareto_mask(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Non-dominated rows of an (n, k) array; ``maximize[j]`` says the direction of objective j."""
    v = np.asarray(values, float) * np.where(np.asarray(maximize), 1.0, -1.0)  # all maximised
    n = len(v)
    keep = np.ones(n, bool)
    for i in range(n):
        if not keep[i]:
            continue
        dominated = np.all(v >= v[i], axis=1) & np.any(v > v[i], axis=1)
        if dominated.any():
            keep[i] = False
    return keep


def plot_pareto(df: "pd.DataFrame", out_dir: Path | str,
                objectives: Sequence[str] = ("phase_ssim", "timings.train_s"),
                maximize: Sequence[bool] | None = None) -> list[Path]:
    """Scatter of every valid job in two objectives, coloured by model, with the Pareto front (also written
    as ``pareto_front.csv``)."""
    a, b = objectives[:2]
    if a not in df.columns or b not in df.columns:
        return []
    d = df[df[a].notna() & df[b].notna()]
    if len(d) < 2:
        return []
    out_dir = Path(out_dir)
    maximize = list(maximize) if maximize is not None else [higher_is_better(a), higher_is_better(b)]
    vals = d[[a, b]].to_numpy(float)
    front = pareto_mask(vals, maximize)
    fig = _figure()
    ax = fig.add_subplot()
    colours = model_colours(_models(d))
    for model, c in colours.items():
        m = (d["model"] == model).to_numpy()
        ax.scatter(vals[m, 1], vals[m, 0], s=18, color=c, alpha=0.7, label=model)
    fv = vals[front]
    order = np.argsort(fv[:, 1])
    ax.step(fv[order, 1], fv[order, 0], where="post" if maximize[0] != maximize[1] else "pre", color="k", lw=1.2,
            label=f"Pareto front ({int(front.sum())})")
    ax.scatter(fv[:, 1], fv[:, 0], s=50, facecolors="none", edgecolors="k")
    if b.startswith("timings.") and (d[b] > 0).all() and d[b].max() / max(d[b].min(), 1e-12) >= 100:
        ax.set_xscale("log")
    ax.set_xlabel(f"{b} ({'higher' if maximize[1] else 'lower'} is better)")
    ax.set_ylabel(f"{a} ({'higher' if maximize[0] else 'lower'} is better)")
    ax.set_title(f"Pareto front: {a} vs {b} (each point one job)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    base = out_dir / f"pareto_{_safe(a)}_vs_{_safe(b)}"
    written = save_figure(fig, base)
    keep_cols = [c for c in ("job", "model", "seed", *swept_parameters(d), a, b, "job_dir") if c in d.columns]
    csv = d.loc[front, list(dict.fromkeys(keep_cols))].to_csv(index=False)
    atomic_write_text(out_dir / "pareto_front.csv", csv)
    return written + [out_dir / "pareto_front.csv"]


# ----------------------------------------------------------------------------------- sensitivity
def sensitivity_table(df: "pd.DataFrame", metrics: Sequence[str] | None = None) -> "pd.DataFrame":
    """Effect size of each swept parameter (and the model) on each metric over the valid jobs.

    eta2 = between-level sum of squares / total sum of squares (one-way, levels of that parameter; an
    iterative arm's missing n_train is its own level); ``range_over_pooled_std`` = (max - min of the level
    means) / pooled within-level std.
    """
    import pandas as pd

    params = _other_params(df, exclude=())
    if "model" in df.columns and df["model"].nunique() > 1:
        params = ["model"] + params
    metrics = [m for m in (metrics or KEY_METRICS) if m in df.columns and df[m].notna().sum() > 2]
    rows = []
    for p in params:
        for m in metrics:
            d = df[df[m].notna()]
            levels = d[p].astype(object).where(d[p].notna(), "n/a").astype(str)
            if levels.nunique() < 2:
                continue
            y = d[m].to_numpy(float)
            grand = y.mean()
            g = pd.DataFrame({"lvl": levels.to_numpy(), "y": y}).groupby("lvl")["y"]
            means, counts, var = g.mean(), g.count(), g.var(ddof=1).fillna(0.0)
            ss_between = float((counts * (means - grand) ** 2).sum())
            ss_total = float(((y - grand) ** 2).sum())
            dof = int((counts - 1).clip(lower=0).sum())
            pooled = math.sqrt(float(((counts - 1).clip(lower=0) * var).sum()) / dof) if dof > 0 else float("nan")
            rng = float(means.max() - means.min())
            rows.append({"parameter": p, "metric": m, "n_levels": int(len(means)), "n": int(len(y)),
                         "eta2": ss_between / ss_total if ss_total > 0 else float("nan"),
                         "range_of_means": rng,
                         "range_over_pooled_std": rng / pooled if pooled and pooled > 0 else float("nan")})
    return pd.DataFrame(rows, columns=["parameter", "metric", "n_levels", "n", "eta2", "range_of_means",
                                       "range_over_pooled_std"])


def plot_sensitivity(df: "pd.DataFrame", out_dir: Path | str, metrics: Sequence[str] | None = None) -> list[Path]:
    """Bar chart of eta2 per swept parameter (grouped by metric) and ``sensitivity.csv``."""
    table = sensitivity_table(df, metrics)
    if table.empty:
        return []
    out_dir = Path(out_dir)
    params = list(dict.fromkeys(table["parameter"]))
    mets = list(dict.fromkeys(table["metric"]))
    fig = _figure(max(5.0, 1.2 * len(params) + 3), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(mets)
    for j, m in enumerate(mets):
        t = table[table["metric"] == m].set_index("parameter").reindex(params)
        ax.bar(np.arange(len(params)) + (j - (len(mets) - 1) / 2) * width, t["eta2"].fillna(0), width,
               label=m, color=_PALETTE[j % len(_PALETTE)])
    ax.set_xticks(np.arange(len(params)))
    ax.set_xticklabels(params, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("effect size eta² (share of variance)")
    ax.set_title("parameter sensitivity (one-way eta² over valid jobs)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, axis="y", alpha=0.3)
    written = save_figure(fig, out_dir / "sensitivity")
    atomic_write_text(out_dir / "sensitivity.csv", table.to_csv(index=False))
    return written + [out_dir / "sensitivity.csv"]


# ----------------------------------------------------------------------------------------- optuna
def find_optuna_storages(sweep_dirs: Iterable[Path | str]) -> list[tuple[str, str | None]]:
    """(storage URL, study name or None) for each Optuna study DB belonging to the sweep dirs."""
    from ptycho_exp.analysis.status import is_optuna_sweep, read_multirun

    found: list[tuple[str, str | None]] = []
    for sd in sweep_dirs:
        sd = Path(sd)
        mr = read_multirun(sd)
        study_name = None
        if mr is not None and is_optuna_sweep(mr):
            sw = (mr.get("hydra") or {}).get("sweeper") or {}
            study_name = sw.get("study_name") if isinstance(sw.get("study_name"), str) else None
            storage = sw.get("storage")
            if isinstance(storage, str) and storage:
                storage = storage.replace("${hydra.sweep.dir}", str(sd))
                if storage.startswith("sqlite:///"):
                    p = Path(storage[len("sqlite:///"):])
                    for cand in (p, sd / p):
                        if cand.is_file():
                            found.append((f"sqlite:///{cand.resolve()}", study_name))
                            break
                elif "${" not in storage:
                    found.append((storage, study_name))
        for db in sorted(sd.glob("*.db")):
            url = f"sqlite:///{db.resolve()}"
            if all(u != url for u, _ in found):
                found.append((url, study_name))
    return found


def plot_optuna(sweep_dirs: Iterable[Path | str], out_dir: Path | str) -> list[Path]:
    """Optimisation history (value per trial + best so far) and parameter importance of each Optuna study
    found next to the sweep (``optuna.db`` or the sweeper's storage URL); [] when there is none."""
    storages = find_optuna_storages(sweep_dirs)
    if not storages:
        return []
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_dir = Path(out_dir)
    written: list[Path] = []
    for url, name in storages:
        try:
            names = [name] if name else optuna.get_all_study_names(storage=url)
        except Exception as exc:  # not an optuna DB
            log.warning("skipping %s: %s", url, exc)
            continue
        for study_name in names:
            try:
                written += _plot_one_study(optuna.load_study(study_name=study_name, storage=url), out_dir)
            except Exception as exc:
                log.warning("optuna plots for %s in %s failed: %s", study_name, url, exc)
    return written


def _plot_one_study(study: Any, out_dir: Path) -> list[Path]:
    import optuna

    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
    if not trials:
        return []
    directions = [d.name.lower() for d in study.directions]
    tag = _safe(study.study_name)
    written: list[Path] = []
    k = len(directions)
    fig = _figure(6.4, 2.8 * k + 0.6)
    axes = fig.subplots(k, 1, squeeze=False)[:, 0]
    for j, (ax, direction) in enumerate(zip(axes, directions)):
        num = np.array([t.number for t in trials])
        val = np.array([t.values[j] for t in trials], float)
        ax.scatter(num, val, s=14, alpha=0.7, label="trial")
        best = np.maximum.accumulate(val) if direction == "maximize" else np.minimum.accumulate(val)
        ax.step(num, best, where="post", color="C3", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"objective {j} ({direction})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Optuna history: {study.study_name} ({len(trials)} complete trials)", fontsize=10)
    written += save_figure(fig, out_dir / f"optuna_history_{tag}")
    try:
        imps = []
        for j in range(k):
            target = (lambda t, j=j: t.values[j]) if k > 1 else None
            imps.append(optuna.importance.get_param_importances(study, target=target))
    except Exception as exc:
        log.info("no parameter importance for %s: %s", study.study_name, exc)
        imps = []
    if imps and any(imps):
        params = list(dict.fromkeys(p for imp in imps for p in imp))
        fig = _figure(6.4, 0.4 * len(params) + 1.6)
        ax = fig.add_subplot()
        h = 0.8 / len(imps)
        for j, imp in enumerate(imps):
            ax.barh(np.arange(len(params)) + j * h, [imp.get(p, 0.0) for p in params], h,
                    label=f"objective {j}")
        ax.set_yticks(np.arange(len(params)) + h * (len(imps) - 1) / 2)
        ax.set_yticklabels(params, fontsize=8)
        ax.set_xlabel("importance (fANOVA)")
        ax.set_title(f"Optuna parameter importance: {study.study_name}", fontsize=10)
        if len(imps) > 1:
            ax.legend(fontsize=7)
        written += save_figure(fig, out_dir / f"optuna_importance_{tag}")
    try:
        atomic_write_text(out_dir / f"optuna_trials_{tag}.csv", study.trials_dataframe().to_csv(index=False))
        written.append(out_dir / f"optuna_trials_{tag}.csv")
    except Exception as exc:  # pragma: no cover - pandas quirks
        log.info("no trials table: %s", exc)
    return written


# ------------------------------------------------------------------------------------ headline bars
KEY_FIGURE_BARS = "headline_metrics"


def plot_headline_bars(df: "pd.DataFrame", out_dir: Path | str,
                       metrics: Sequence[str] = ("amp_ssim", "phase_ssim")) -> list[Path]:
    """Mean ± std over seeds of the headline metrics per model (one bar group per metric), with each model's
    null (flat-image) score drawn as a black dash on its bar: the key figure of a study with one training-set
    size. Returns [] when no headline metric has a value."""
    metrics = [m for m in metrics if m in df.columns and df[m].notna().any()]
    if not metrics:
        return []
    models = _models(df)
    colours = model_colours(models)
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    null_drawn = False
    for j, model in enumerate(models):
        dm = df[df["model"] == model]
        x = np.arange(len(metrics)) + (j - (len(models) - 1) / 2) * width
        mean = [float(dm[m].astype(float).mean()) for m in metrics]
        std = [float(dm[m].astype(float).std(ddof=1)) if dm[m].notna().sum() > 1 else 0.0 for m in metrics]
        ax.bar(x, mean, width * 0.9, yerr=std, color=colours[model], label=model, capsize=3)
        for xi, m in zip(x, metrics):
            nc = f"null_{m}"
            if nc in dm.columns and dm[nc].notna().any():
                ax.hlines(float(dm[nc].astype(float).mean()), xi - width * 0.45, xi + width * 0.45, colors="k",
                          linestyles="--", lw=1.5, label=None if null_drawn else "flat image (null)")
                null_drawn = True
    ax.set_xticks(np.arange(len(metrics)))
    ax.set_xticklabels(metrics)
    ax.set_ylabel("score (headline scale)")
    ax.set_title("headline metrics per model (mean ± std over seeds;\ndashed: the flat image's score)",
                 fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, Path(out_dir) / KEY_FIGURE_BARS)


# ------------------------------------------------------------------------------------------- all
def make_all_plots(df: "pd.DataFrame", out_dir: Path | str, *, sweep_dirs: Iterable[Path | str] = (),
                   pareto: bool | None = None, objectives: Sequence[str] | None = None,
                   maximize: Sequence[bool] | None = None) -> list[Path]:
    """Every plot the data supports; a failing plot is logged and skipped, never fatal."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    jobs: list[tuple[str, Any]] = [
        ("metric vs n_train", lambda: plot_metric_vs_n_train(df, out_dir)),
        ("headline bars", lambda: plot_headline_bars(df, out_dir)
         if "data.n_train" not in df.columns or df["data.n_train"].nunique(dropna=True) < 2 else []),
        ("heatmaps", lambda: plot_heatmaps(df, out_dir)),
        ("3-D surface", lambda: plot_surface_3d(df, out_dir)),
        ("sensitivity", lambda: plot_sensitivity(df, out_dir)),
        ("optuna", lambda: plot_optuna(sweep_dirs, out_dir)),
    ]
    if pareto or (pareto is None and objectives is not None and len(objectives) >= 2):
        objs = list(objectives) if objectives and len(objectives) >= 2 else ["phase_ssim", "timings.train_s"]
        jobs.append(("pareto", lambda: plot_pareto(df, out_dir, objs, maximize)))
    jobs.append(("three-way comparison", lambda: _three_way(df, out_dir)))
    for name, fn in jobs:
        try:
            written += fn()
        except Exception as exc:  # a plot must never sink the aggregate
            log.warning("plot %s skipped: %s: %s", name, type(exc).__name__, exc)
    return written


def _three_way(df: "pd.DataFrame", out_dir: Path) -> list[Path]:
    """GT | PINN | baseline | iterative figures from the jobs' recon.npz, when the optional
    ``ptycho_exp.report.compare`` module (``three_way_figures(df, out_dir) -> list[Path]``) exists."""
    try:
        from ptycho_exp.report.compare import three_way_figures
    except ModuleNotFoundError as exc:
        if exc.name == "ptycho_exp.report.compare":
            return []  # the optional module is not there: nothing to draw
        raise
    except ImportError:  # the module exists without three_way_figures
        return []
    return [Path(p) for p in three_way_figures(df, out_dir)]

