"""HTML pages of a study: the full self-contained report and the cheap live page.

* :func:`write_report` -> ``<out_dir>/report.html``: one file, viewable offline: the summary blocks of
  :mod:`ptycho_exp.report.summary`, tables, every figure (PNG embedded as base64, plotly figures drawn by the
  plotly.js bundle inlined once; no CDN, no network), the per-job status with relative links to each job's
  ``compare_amp_phase.png``.
* :func:`write_live_report` -> ``<sweep_dir>/report.html``: counts, ETA, a per-model metric table and the
  status table, refreshed by the browser every 30 s. It runs after every job (Hydra callback), so it uses no
  pandas and no matplotlib.

Both are written atomically.
"""
from __future__ import annotations

import base64
import html
import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ptycho_exp.files import PLOTS_DIR, REPORT_FILE, atomic_write_text, remove_stale_temp_files
from ptycho_exp.results import folder_lock

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

COMPARE_FIG = "compare_amp_phase.png"
LIVE_METRICS = ("phase_ssim", "amp_ssim", "phase_frc50", "amp_frc50")
JOB_METRICS = ("phase_ssim", "amp_ssim", "phase_frc50")
# Figure sections of the report, by file-name prefix; anything else is a comparison figure.
SECTIONS = (("metric_vs_n_train", "Metric vs training-set size"), ("headline_metrics", "Headline metrics"),
            ("heatmap", "Heatmaps"),
            ("surface3d", "3-D surfaces"), ("pareto", "Pareto front"), ("sensitivity", "Parameter sensitivity"),
            ("optuna", "Optuna"))
OTHER_SECTION = "Reconstructions compared"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1em 2em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3;position:sticky;top:0}tr:nth-child(even){background:#fafafa}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}figure{margin:.5em .4em;display:inline-block;
width:calc(50% - 1em);vertical-align:top}figure.wide{width:calc(100% - 1em)}
figure img{width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.8em;color:#555}.scroll{max-height:40em;overflow:auto;border:1px solid #eee}
.ok,.done{color:#1a7f37}.failed{color:#c62828;font-weight:bold}.running{color:#b26a00}.pending{color:#888}
.caption{font-size:.8em;color:#555;font-style:italic}.plotly-fig{width:100%;height:640px}
nav a{margin-right:1em}
.null-flag{display:inline-block;background:#fff3cd;color:#7a4a00;border:1px solid #e0a800;border-radius:3px;
padding:0 .3em;font-size:.85em;font-weight:bold;white-space:nowrap}
.key-figures figure{width:calc(50% - 1em)}.key-figures figure.wide{width:calc(100% - 1em)}
.scored-against{font-size:.85em;color:#333;background:#eef3fb;border-left:3px solid #3b6fb6;padding:.2em .5em}
"""


# ------------------------------------------------------------------------------------------- helpers
def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_FLAG = re.compile(r"\{\{flag:(.*?)\}\}")


def inline(text: str) -> str:
    """Escape, then render the inline marks the summary uses (`code`, **bold**, warning badges)."""
    s = esc(text)
    s = _FLAG.sub(r'<span class="null-flag" title="does not beat a flat image by a clear margin">&#9888; \1</span>', s)
    s = _CODE.sub(r"<code>\1</code>", s)
    return _BOLD.sub(r"<strong>\1</strong>", s)


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def blocks_to_html(blocks: Sequence[tuple]) -> str:
    """Render summary blocks (see :func:`ptycho_exp.analysis.findings.summary_blocks`) as HTML."""
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f'<{kind} id="{_anchor(b[1])}">{inline(b[1])}</{kind}>')
        elif kind == "p":
            out.append(f"<p>{inline(b[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            out.append(html_table(b[1], b[2], caption=b[3] if len(b) > 3 else None, raw=False))
    return "\n".join(out)


def html_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], caption: str | None = None,
               raw: bool = False, scroll: bool = False) -> str:
    """A table; cells are escaped unless ``raw`` (then they are trusted HTML built here)."""
    cell = (lambda x: str(x)) if raw else (lambda x: inline(str(x)))
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{cell(x)}</td>" for x in row) + "</tr>" for row in rows)
    t = f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"
    if scroll:
        t = f'<div class="scroll">{t}</div>'
    if caption:
        t += f'<p class="caption">{inline(caption)}</p>'
    return t


def _fmt(v: Any) -> str:
    from ptycho_exp.analysis.findings import fmt

    return fmt(v)


def _rel(path: Path | str, start: Path | str) -> str:
    """Relative URL of ``path`` from folder ``start`` (posix separators, %-quoted)."""
    from urllib.parse import quote

    try:
        rel = os.path.relpath(Path(path).resolve(), Path(start).resolve())
    except ValueError:  # another drive
        rel = Path(path).resolve().as_uri()
        return rel
    return quote(rel.replace(os.sep, "/"))


def _page(title: str, body: str, head_extra: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"{head_extra}<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


# -------------------------------------------------------------------------------------- full report
def _section_of(name: str) -> str:
    for prefix, title in SECTIONS:
        if name.startswith(prefix):
            return title
    return OTHER_SECTION


def _png_figure(path: Path, out_dir: Path, label: str | None = None) -> str:
    raw = path.read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    svg = path.with_suffix(".svg")
    links = f' · <a href="{_rel(svg, out_dir)}">SVG</a>' if svg.is_file() else ""
    wide = ""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) >= 24:  # wide figures (multi-panel heatmaps): full width
        w, h = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
        wide = ' class="wide"' if h and w / h > 2.2 else ""
    return (f'<figure{wide}><img src="data:image/png;base64,{data}" alt="{esc(path.stem)}" '
            f'data-figure="{esc(path.name)}" loading="eager">'
            f"<figcaption>{esc(path.stem)} · <a href=\"{_rel(path, out_dir)}\">PNG</a>{links}"
            + (f'<br><span class="scored-against">{esc(label)}</span>' if label else "") + "</figcaption></figure>")


def _plotly_figure(path: Path, out_dir: Path, idx: int, label: str | None = None) -> str:
    text = path.read_text(encoding="utf-8").replace("</", "<\\/")
    html_file = path.with_name(path.name.replace(".plotly.json", ".html"))
    link = f' · <a href="{_rel(html_file, out_dir)}">standalone HTML</a>' if html_file.is_file() else ""
    return (f'<figure class="wide"><div id="plotly-{idx}" class="plotly-fig" '
            f'data-figure="{esc(path.name)}"></div>'
            f'<script type="application/json" id="plotly-data-{idx}">{text}</script>'
            f"<figcaption>{esc(path.name.replace('.plotly.json', ''))} (interactive: drag to rotate){link}"
            + (f'<br><span class="scored-against">{esc(label)}</span>' if label else "") + "</figcaption></figure>")


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


_PLOTLY_INIT = """<script>
document.querySelectorAll('script[id^="plotly-data-"]').forEach(function (el) {
  var fig = JSON.parse(el.textContent);
  var div = document.getElementById(el.id.replace('plotly-data-', 'plotly-'));
  Plotly.newPlot(div, fig.data, fig.layout, {displaylogo: false, responsive: true});
});
</script>"""


KEY_FIGURE_ORDER = ("metric_vs_n_train_phase_ssim", "metric_vs_n_train_amp_ssim", "headline_metrics")


def key_figures(figures: Sequence[Path]) -> list[Path]:
    """The figures the report opens with: the study's key figure (phase SSIM vs training-set size, else the
    headline bar chart with the null level) and the first three-way reconstruction figure."""
    pngs = sorted({Path(f) for f in figures if Path(f).suffix == ".png" and Path(f).is_file()},
                  key=lambda p: (str(p.parent), p.name))
    out: list[Path] = []
    for stem in KEY_FIGURE_ORDER:
        hit = [f for f in pngs if f.stem == stem]
        if hit:
            out += hit
            break
    out += [f for f in pngs if f.stem.startswith("three_way")][:1]
    return out


def figures_html(figures: Sequence[Path], out_dir: Path,
                 labels: dict[Path, str] | None = None) -> tuple[str, bool, list[str]]:
    """(HTML of all figures by section, whether plotly is needed, section titles); ``labels`` adds a line
    (e.g. what the jobs were scored against) to a figure's caption."""
    sections: dict[str, list[str]] = {}
    needs_plotly = False
    tables: list[Path] = []
    for i, f in enumerate(sorted(set(Path(p) for p in figures), key=lambda p: p.name)):
        if not f.is_file():
            continue
        name = f.name
        label = (labels or {}).get(f)
        if name.endswith(".plotly.json"):
            sections.setdefault(_section_of(name), []).append(_plotly_figure(f, out_dir, i, label))
            needs_plotly = True
        elif f.suffix == ".png":
            sections.setdefault(_section_of(name), []).append(_png_figure(f, out_dir, label))
        elif f.suffix == ".csv":
            tables.append(f)
    order = [t for _, t in SECTIONS] + [OTHER_SECTION]
    parts = []
    titles = []
    for title in order:
        if title in sections:
            titles.append(title)
            parts.append(f'<h3 id="{_anchor(title)}">{esc(title)}</h3>' + "\n".join(sections[title]))
    if tables:
        parts.append("<p>Figure data: " + ", ".join(f'<a href="{_rel(t, out_dir)}">{esc(t.name)}</a>'
                                                   for t in tables) + "</p>")
    return "\n".join(parts), needs_plotly, titles


def _csv_table(path: Path, max_rows: int = 200) -> str | None:
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError:
        return None
    if len(rows) < 2:
        return None

    def cell(x: str) -> str:
        try:
            return _fmt(float(x))
        except ValueError:
            return x

    return html_table(rows[0], [[cell(x) for x in r] for r in rows[1:max_rows + 1]], raw=False)


def job_table_html(df: "pd.DataFrame", out_dir: Path, keys: Sequence[str]) -> str:
    """Per-job status rows with elapsed time, key metrics, first error line and the comparison figure."""
    from ptycho_exp.analysis.status import format_seconds

    params = [k for k in keys if k != "model"]
    mets = [m for m in JOB_METRICS if m in df.columns]
    from ptycho_exp.analysis.findings import reference_label

    params = [k for k in params if k != "scored_against"]
    header = ["job", "model", "seed", *params, "status", "scored against", "elapsed", *mets, "error", "figure"]
    rows = []
    several = "sweep_dir" in df.columns and df["sweep_dir"].nunique() > 1  # job numbers repeat across sweeps
    for r in df.to_dict("records"):
        job_dir = Path(str(r["job_dir"]))
        label = f"{job_dir.parent.name}/{r['job']}" if several else str(r["job"])
        st = str(r["status"])
        fig = job_dir / COMPARE_FIG
        link = f'<a href="{_rel(fig, out_dir)}">{COMPARE_FIG}</a>' if fig.is_file() else ""
        err = str(r.get("error") or "").strip().splitlines()
        el = r.get("elapsed_s")
        rows.append([f'<a href="{_rel(job_dir, out_dir)}/">{esc(label)}</a>', esc(r["model"]),
                     esc(_fmt(r["seed"])), *[esc(_fmt(r.get(k))) for k in params],
                     f'<span class="{esc(st)}">{esc(st)}</span>'
                     + (" (filtered)" if r.get("excluded_by_filter") else "")
                     + (f' <span class="null-flag" title="{esc(r.get("invalid_reason") or "")}">invalid scores</span>'
                        if r.get("metrics_invalid") else ""),
                     esc(reference_label(r.get("scored_against"))) if st in ("ok", "skipped") else "",
                     esc(format_seconds(el) if isinstance(el, (int, float)) and el == el else ""),
                     *[esc(_fmt(r.get(m))) for m in mets], esc(err[0][:160] if err else ""), link])
    return html_table(header, rows, raw=True, scroll=len(rows) > 30)


def write_report(out_dir: Path | str, *, df: "pd.DataFrame", results: "pd.DataFrame", blocks: Sequence[tuple],
                 figures: Sequence[Path] = (), ensemble: "pd.DataFrame | None" = None,
                 title: str = "ptycho_exp study", generated_at: datetime | None = None,
                 plots: bool = True, figure_labels: dict[Path, str] | None = None) -> Path:
    """Write the self-contained ``<out_dir>/report.html``; returns its path.

    Parameters
    ----------
    out_dir : path
        Aggregate folder (CSV files and ``plots/`` are linked relative to it).
    df : DataFrame
        Job table from :func:`ptycho_exp.aggregate.mark_valid`.
    results : DataFrame
        :func:`ptycho_exp.aggregate.results_table` (linked; its key metrics are in ``blocks``).
    blocks : sequence
        Summary blocks from :func:`ptycho_exp.analysis.findings.summary_blocks`.
    figures : sequence of Path
        Files written by :func:`ptycho_exp.report.plots.make_all_plots` (PNG embedded, plotly JSON drawn).
    ensemble : DataFrame, optional
        Already in ``blocks``; linked when present.
    plots : bool
        Whether figures were asked for (says why there is none).
    figure_labels : dict, optional
        Figure path -> what its jobs were scored against (shown under the figure).

    The page opens with the study's key figure and the three-way reconstruction figure (:func:`key_figures`),
    above the text; the other figures follow the summary.
    """
    from ptycho_exp.analysis.tables import group_keys

    out_dir = Path(out_dir)
    generated_at = generated_at or datetime.now(timezone.utc)
    labels = {Path(k): v for k, v in (figure_labels or {}).items()}
    top = key_figures(figures)
    fig_html, needs_plotly, fig_titles = figures_html([f for f in figures if Path(f) not in top], out_dir, labels)
    nav = [f'<a href="#{_anchor(b[1])}">{esc(b[1])}</a>' for b in blocks if b[0] == "h2"]
    nav += ['<a href="#figures">Figures</a>', '<a href="#jobs">Jobs table</a>', '<a href="#files">Files</a>']
    head = [b for b in blocks[:1] if b[0] == "h1"]
    body = [blocks_to_html(head)]
    if top:
        body.append('<div class="key-figures" id="key-figures">'
                    + "".join(_png_figure(f, out_dir, labels.get(f)) for f in top) + "</div>")
    body += ["<nav>" + "".join(nav) + "</nav>", blocks_to_html(blocks[len(head):])]
    body.append('<h2 id="figures">Figures</h2>')
    if fig_html:
        body.append("<p>" + ", ".join(esc(t) for t in fig_titles) + ".</p>")
        body.append(fig_html)
    else:
        body.append("<p>No figure: " + ("the data supports none of the plots." if plots
                                        else "aggregate ran with --no-plots.") + "</p>")
    sens = out_dir / PLOTS_DIR / "sensitivity.csv"
    if sens.is_file():
        t = _csv_table(sens)
        if t:
            body.append('<h3 id="sensitivity-table">Parameter sensitivity (table)</h3>' + t)
    body.append(f'<h2 id="jobs">Jobs ({len(df)})</h2>')
    body.append(job_table_html(df, out_dir, group_keys(df)))
    files = [f for f in ("results.csv", "raw_results_all_trials.csv", "best_params.yaml", "findings.csv",
                         "ensemble.csv", "STUDY_SUMMARY.md") if (out_dir / f).is_file() or f == "STUDY_SUMMARY.md"]
    body.append('<h2 id="files">Files</h2><ul>' + "".join(f'<li><a href="{esc(f)}">{esc(f)}</a></li>' for f in files)
                + "</ul>")
    body.append(f'<p class="caption">Generated {esc(generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"))} by '
                f"ptycho-exp aggregate.</p>")
    if needs_plotly:
        body.append(f"<script>{_plotly_js()}</script>")
        body.append(_PLOTLY_INIT)
    path = out_dir / REPORT_FILE
    atomic_write_text(path, _page(title, "\n".join(body)))
    return path


# ---------------------------------------------------------------------------------------- live page
def _varying_keys(records: Sequence[dict]) -> list[str]:
    keys: list[str] = []
    for rec in records:
        for k in rec["_overrides"]:
            if k not in keys and k not in ("model", "seed"):
                keys.append(k)
    out = []
    for k in keys:
        vals = {repr(rec["_overrides"].get(k)) for rec in records}
        if len(vals) > 1:
            out.append(k)
    return out


def _mean_std(vals: list[float]) -> tuple[float, float]:
    n = len(vals)
    if not n:
        return float("nan"), float("nan")
    m = sum(vals) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
    return m, sd


def live_metric_rows(records: Sequence[dict], metrics: Sequence[str] = LIVE_METRICS) -> tuple[list[str], list[list]]:
    """Per (model, scored_against when several, varying overrides) group of done jobs with valid scores:
    mean ± std (n) of each metric; no pandas."""
    from ptycho_exp.analysis.collect import OK_STATUSES
    from ptycho_exp.models.registry import is_iterative

    done = [r for r in records if r["status"] in OK_STATUSES and r.get("metrics_valid") is not False]
    keys = _varying_keys([r for r in records])
    refs = {str(r.get("scored_against")) for r in done}
    by_ref = len(refs) > 1  # jobs scored against different references are never pooled
    groups: dict[tuple, list[dict]] = {}
    for r in done:
        k = (r["model"],) + ((str(r.get("scored_against")),) if by_ref else ()) + tuple(
            "n/a" if (k_ == "data.n_train" and is_iterative(r["model"])) else r["_overrides"].get(k_)
            for k_ in keys)
        groups.setdefault(k, []).append(r)
    rows = []
    for k in sorted(groups, key=lambda t: tuple(str(x) for x in t)):
        g = groups[k]
        line = [esc(_fmt(x)) for x in k] + [str(len(g))]
        for m in metrics:
            vals = [float(r[m]) for r in g if isinstance(r.get(m), (int, float)) and math.isfinite(r[m])]
            mean, sd = _mean_std(vals)
            line.append(f"{_fmt(mean)} ± {_fmt(sd)} ({len(vals)})" if vals else "n/a")
        rows.append(line)
    return ["model", *(["scored against"] if by_ref else []), *keys, "done", *metrics], rows


def write_live_report(sweep_dir: Path | str, refresh_s: int = 30) -> Path:
    """Write the light auto-refreshing ``<sweep_dir>/report.html`` (counts, ETA, metric and status tables).

    Cheap by design (runs after every job): no pandas, no matplotlib; reads each job's result once.
    """
    from ptycho_exp.analysis.status import format_seconds, sweep_records

    sweep_dir = Path(sweep_dir)
    rows, a = sweep_records(sweep_dir)
    c = a["counts"]
    now = datetime.now(timezone.utc)
    records = [r["record"] for r in rows if r["record"] is not None]
    planned = a["planned"] if a["planned"] is not None else "unknown"
    body = [f"<h1>Sweep {esc(sweep_dir.name)} (live)</h1>",
            f"<p><code>{esc(sweep_dir)}</code>; refreshed {esc(now.strftime('%Y-%m-%d %H:%M:%S UTC'))}; this page "
            f"reloads every {int(refresh_s)} s.</p>",
            "<p>" + " · ".join(f'<span class="{k}">{k} {c[k]}</span>' for k in ("done", "failed", "running",
                                                                               "pending"))
            + f" (planned {esc(planned)}, parallelism {a['parallelism']}); "
            + ("all planned jobs finished" if not (c["pending"] + c["running"])
               else f"ETA {esc(format_seconds(a['eta_s']))} (mean done job {esc(format_seconds(a['mean_done_s']))})")
            + ".</p>"]
    agg = sweep_dir / "aggregate" / REPORT_FILE
    if agg.is_file():
        body.append(f'<p>Full report: <a href="aggregate/{REPORT_FILE}">aggregate/{REPORT_FILE}</a>.</p>')
    if records:
        header, mrows = live_metric_rows(records)
        if mrows:
            body.append("<h2>Metrics of done jobs</h2>" + html_table(header, mrows, raw=True))
    status_rows = []
    for r in rows:
        rec = r["record"]
        job_dir = Path(r["job_dir"])
        fig = job_dir / COMPARE_FIG
        link = f'<a href="{_rel(fig, sweep_dir)}">figure</a>' if rec is not None and fig.is_file() else ""
        el = r["elapsed_s"]
        metric = ""
        if rec is not None and isinstance(rec.get("phase_ssim"), (int, float)):
            metric = _fmt(rec["phase_ssim"])
        status_rows.append([esc(r["job"]), esc(r["overrides"]), f'<span class="{r["state"]}">{esc(r["status"])}</span>',
                            esc(format_seconds(el) if isinstance(el, (int, float)) and el == el else ""),
                            esc(metric), esc(r["error"]), link])
    body.append("<h2>Jobs</h2>" + html_table(["job", "overrides", "status", "elapsed", "phase_ssim", "error",
                                              "figure"], status_rows, raw=True, scroll=len(status_rows) > 30))
    page = _page(f"sweep {sweep_dir.name} (live)", "\n".join(body),
                 head_extra=f'<meta http-equiv="refresh" content="{int(refresh_s)}">')
    path = sweep_dir / REPORT_FILE
    with folder_lock(sweep_dir):  # jobs ending together refresh it in turn; a killed refresh's temp goes
        remove_stale_temp_files(sweep_dir, [REPORT_FILE])
        atomic_write_text(path, page)
    return path
