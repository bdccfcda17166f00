"""Three-way comparison figures: GT (or reference) | PINN | baseline | iterative, amplitude and phase rows.

One figure per seed (and per combination of the other swept parameters, e.g. ``data.nphotons``), built from
the jobs' ``recon.npz`` files (``recon``, ``gt``, ``origin``; see ``ptycho_exp.workflow._save_recon``). Each
network arm shows its job with the largest ``data.n_train``; the iterative arms (no training set) show their
job for that seed. Every job of one test scan is scored on the same box of the object, but the trimmed
border after registration depends on each job's shift, so the panels are cut to the common box (by their
``origin``), or, for files without an origin, centre-cropped to a common shape and aligned to the first
ground truth (sub-pixel shift + global phase, :func:`ptycho_exp.analysis.recon.align_to`).
numpy at import; pandas and matplotlib only inside the functions.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any


from ptycho_exp.analysis.recon import common_frame, load_recon_file
from ptycho_exp.models.registry import MODEL_LABELS, MODEL_ORDER, is_external, is_iterative

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

DPI = 300


def _pick(rows: pd.DataFrame, n_train_col: str | None) -> pd.Series | None:
    """The row with the largest n_train (networks) or the first row (iterative arms)."""
    if rows.empty:
        return None
    if n_train_col and n_train_col in rows.columns and rows[n_train_col].notna().any():
        rows = rows.sort_values(n_train_col, ascending=False, kind="stable")
    return rows.iloc[0]


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def three_way_figures(df: pd.DataFrame, out_dir: Path | str, min_arms: int = 2) -> list[Path]:
    """GT (or reference) | PINN | baseline | iterative figures, amplitude and phase rows, per seed.

    Parameters
    ----------
    df : DataFrame
        Per-job table from :func:`ptycho_exp.analysis.collect.collect_jobs` (columns ``job_dir``, ``model``,
        ``seed``, ``status`` and the swept parameters, e.g. ``data.n_train``).
    out_dir : path
        Where ``three_way_seed<seed>[_<param>=<value>...].png`` (300 dpi) are written (atomically).
    min_arms : int
        Draw a figure only when at least this many arms have a reconstruction for it (default 2).

    Returns
    -------
    list of Path
        The figures written ([] when no group has ``min_arms`` arms with a ``recon.npz``).

    Notes
    -----
    Each network arm shows its job with the largest ``data.n_train`` (its column title says n=<n_train>); each
    iterative arm (``ptylab``, ``tike``) its job for the seed. Other swept parameters (anything but
    ``model``, ``seed`` and ``data.n_train``) give one figure per combination. The first column is titled
    ``GT`` when the jobs were scored against the ground truth, else ``reference`` (the iterative reference
    named in ``recon.npz``). The panels are shown as scored (:func:`ptycho_exp.evaluate.figures.plot_comparison`:
    scaled amplitude, plane-removed phase, SSIM per panel).
    """
    import pandas as pd

    from ptycho_exp.evaluate.figures import plot_comparison

    out_dir = Path(out_dir)
    if df is None or df.empty or "model" not in df.columns or "job_dir" not in df.columns:
        return []
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    if ok.empty:
        return []
    ext = ok["model"].map(is_external) & ok["seed"].isna()
    if ext.any() and (~ext).any():  # an external arm scored without --seed joins every seed's figure
        ok = pd.concat([ok[~ext], *(ok[ext].assign(seed=s) for s in ok.loc[~ext, "seed"].dropna().unique())])
    n_col = "data.n_train" if "data.n_train" in ok.columns else None
    params = list(df.attrs.get("param_columns") or [])
    others = [c for c in params if c not in ("model", "seed", "data.n_train") and c in ok.columns]
    arms = [m for m in MODEL_ORDER if m in set(ok["model"].astype(str))]
    arms += sorted(m for m in set(ok["model"].astype(str)) if m not in arms)
    keys = ["seed", *others]
    written: list[Path] = []
    for key, group in ok.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        items, labels = [], []
        for arm in arms:
            row = _pick(group[group["model"].astype(str) == arm], n_col if not is_iterative(arm) else None)
            if row is None:
                continue
            loaded = load_recon_file(row["job_dir"])
            if loaded is None:
                continue
            label = MODEL_LABELS.get(arm, arm)
            if not is_iterative(arm) and n_col and row.get(n_col) == row.get(n_col):  # not NaN
                label += f" n={_fmt(row[n_col])}"
            items.append(loaded)
            labels.append(label)
        if len(items) < max(1, int(min_arms)):
            continue
        gt, recons = common_frame(items)
        references = {it["reference"] for it in items}
        if references == {"ground_truth"}:
            gt_label = "GT"
        else:
            gt_label = "reference"
            if len(references) > 1:
                log.warning("three-way figure %s: the jobs were scored against different references %s",
                            key, sorted(references))
        suffix = "".join(f"_{_safe(str(k))}={_safe(_fmt(v))}" for k, v in zip(others, key[1:]))
        path = out_dir / f"three_way_seed{_safe(_fmt(key[0]))}{suffix}.png"
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_comparison(path, gt, dict(zip(labels, recons)), dpi=DPI, gt_label=gt_label)
        written.append(path)
    return written
