"""Three-way comparison figures: GT (or reference) | PINN | baseline | iterative, amplitude and phase rows.

One figure per seed (and per combination of the other swept parameters, e.g. ``data.nphotons``), built from
the jobs' ``recon.npz`` files (``recon``, ``gt``, ``origin``; see ``ptycho_exp.workflow._save_recon``). Each
network arm shows its job with the largest ``data.n_train``; the iterative arms (no training set) show their
job for that seed. Every job of one test scan is scored on the same box of the object, but the trimmed
border after registration depends on each job's shift, so the panels are cut to the common box (by their
``origin``), or, for files without an origin, centre-cropped to a common shape and aligned to the first
ground truth (sub-pixel shift + global phase, :func:`ptycho_exp.study.ensemble.align_to`).
numpy at import; pandas and matplotlib only inside the functions.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

NETWORK_ARMS = ("pinn", "baseline")
ITERATIVE_ARMS = ("ptylab", "tike")
LABELS = {"pinn": "PINN", "baseline": "baseline", "ptylab": "PtyLab", "tike": "Tike"}
DPI = 300
RECON_FILE = "recon.npz"


def load_recon_file(job_dir: Path | str) -> dict[str, Any] | None:
    """``recon``, ``gt`` (complex128), ``origin`` ((2,) int or None) and ``reference`` (str) of a job,
    or None when its ``recon.npz`` is absent or unreadable (no pickles)."""
    path = Path(job_dir) / RECON_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            rec, gt = np.asarray(z["recon"]), np.asarray(z["gt"])
            origin = np.asarray(z["origin"], dtype=np.int64).reshape(-1) if "origin" in z.files else None
            reference = str(z["reference"]) if "reference" in z.files else "ground_truth"
    except (OSError, KeyError, ValueError) as exc:
        log.warning("unreadable %s: %s", path, exc)
        return None
    if rec.ndim != 2 or rec.shape != gt.shape:
        log.warning("%s: recon %s and gt %s must be equal 2-D shapes; skipped", path, rec.shape, gt.shape)
        return None
    if origin is not None and origin.shape != (2,):
        origin = None
    return {"recon": rec.astype(np.complex128), "gt": gt.astype(np.complex128), "origin": origin,
            "reference": reference}


def _centre_crop(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    r0 = (a.shape[0] - shape[0]) // 2
    c0 = (a.shape[1] - shape[1]) // 2
    return a[r0:r0 + shape[0], c0:c0 + shape[1]]


def common_frame(items: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ground truth and every reconstruction on one common grid.

    With an ``origin`` for every item (object coordinate of ``gt[0, 0]``), all are cut to the intersection
    of their boxes and the first item's ``gt`` is the ground truth. Otherwise they are centre-cropped to
    the smallest shape and each reconstruction is aligned to the first ground truth.

    Returns
    -------
    gt : (H, W) complex
    recons : list of (H, W) complex, in the order of ``items``
    """
    if not items:
        raise ValueError("common_frame needs at least one reconstruction")
    if all(it["origin"] is not None for it in items):
        lo = np.max([it["origin"] for it in items], axis=0)
        hi = np.min([it["origin"] + np.asarray(it["gt"].shape) for it in items], axis=0)
        if np.all(hi - lo >= 8):
            def cut(it: dict[str, Any], key: str) -> np.ndarray:
                a, b = lo - it["origin"], hi - it["origin"]
                return it[key][a[0]:b[0], a[1]:b[1]]

            return cut(items[0], "gt"), [cut(it, "recon") for it in items]
        log.warning("reconstructions do not overlap on a common box; aligning them by correlation")
    from ptycho_exp.study.ensemble import align_to

    shape = tuple(int(v) for v in np.min([it["gt"].shape for it in items], axis=0))
    gt = _centre_crop(items[0]["gt"], shape)
    recons = []
    for it in items:
        rec = _centre_crop(it["recon"], shape)
        this_gt = _centre_crop(it["gt"], shape)
        # put the reconstruction in the frame of the first ground truth: align via this job's own gt
        if it is not items[0] and not np.allclose(this_gt, gt):
            rec = align_to(gt, rec)
        recons.append(rec)
    return gt, recons


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
        Per-job table from :func:`ptycho_exp.study.collect.collect_jobs` (columns ``job_dir``, ``model``,
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
    from ptycho_exp.external import EXTERNAL_PREFIX

    out_dir = Path(out_dir)
    if df is None or df.empty or "model" not in df.columns or "job_dir" not in df.columns:
        return []
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    if ok.empty:
        return []
    ext = ok["model"].astype(str).str.startswith(EXTERNAL_PREFIX) & ok["seed"].isna()
    if ext.any() and (~ext).any():  # an external arm scored without --seed joins every seed's figure
        ok = pd.concat([ok[~ext], *(ok[ext].assign(seed=s) for s in ok.loc[~ext, "seed"].dropna().unique())])
    n_col = "data.n_train" if "data.n_train" in ok.columns else None
    params = list(df.attrs.get("param_columns") or [])
    others = [c for c in params if c not in ("model", "seed", "data.n_train") and c in ok.columns]
    arms = [m for m in NETWORK_ARMS + ITERATIVE_ARMS if m in set(ok["model"].astype(str))]
    arms += sorted(m for m in set(ok["model"].astype(str)) if m not in arms)
    keys = ["seed", *others]
    written: list[Path] = []
    for key, group in ok.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        items, labels = [], []
        for arm in arms:
            row = _pick(group[group["model"].astype(str) == arm], n_col if arm not in ITERATIVE_ARMS else None)
            if row is None:
                continue
            loaded = load_recon_file(row["job_dir"])
            if loaded is None:
                continue
            label = LABELS.get(arm, arm)
            if arm not in ITERATIVE_ARMS and n_col and row.get(n_col) == row.get(n_col):  # not NaN
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
