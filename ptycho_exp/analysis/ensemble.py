"""Seed ensembles: per parameter group, the complex mean of the registered reconstructions, scored.

Each member's ``recon.npz`` holds ``recon`` and ``gt`` (aligned complex images of equal shape). Members are
aligned to the first one (sub-pixel phase correlation on amplitudes, Fourier shift, then a global phase
factor), averaged, and the ensemble is scored against ``gt`` with
:func:`ptycho_exp.evaluate.metrics.compute_metrics` (imported lazily).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ptycho_exp.analysis.recon import align_to, common_frame, load_recon_file

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)


def load_recon(job_dir: Path | str) -> tuple[np.ndarray, np.ndarray] | None:
    """(recon, gt) from ``recon.npz`` (no pickles), or None when absent/unreadable."""
    loaded = load_recon_file(job_dir)
    return None if loaded is None else (loaded["recon"], loaded["gt"])


def ensemble_mean(recons: Sequence[np.ndarray]) -> np.ndarray:
    """Complex mean of the members after aligning each to the first."""
    ref = recons[0]
    aligned = [ref] + [align_to(ref, r) for r in recons[1:]]
    return np.mean(np.stack(aligned), axis=0)


def _default_metrics() -> Callable[[np.ndarray, np.ndarray], dict]:
    from ptycho_exp.evaluate.metrics import compute_metrics  # written elsewhere; imported lazily

    return compute_metrics


def _members_on_common_grid(job_dirs: Sequence[str]) -> tuple[np.ndarray | None, list[np.ndarray], list[str]]:
    """(gt, recons, used job dirs) on one pixel grid.

    Jobs of one test scan are scored on the same object box, but the border trimmed after registration
    depends on each job's shift, so their ``gt``/``recon`` shapes differ by a few pixels. With the
    ``origin`` saved in ``recon.npz`` they are cut to the common box
    (:func:`ptycho_exp.analysis.recon.common_frame`).
    """
    items, dirs = [], []
    for job_dir in job_dirs:
        it = load_recon_file(job_dir)
        if it is not None:
            items.append(it)
            dirs.append(str(job_dir))
    if not items:
        return None, [], []
    gt, recons = common_frame(items)
    return gt, recons, dirs


def ensemble_table(valid: "pd.DataFrame", group_keys: Sequence[str],
                   compute_metrics: Callable[[np.ndarray, np.ndarray], dict] | None = None,
                   compare_metrics: Sequence[str] = ()) -> "pd.DataFrame":
    """One row per group of valid jobs that has ``recon.npz`` files: group keys, ``n_members``, the
    ensemble's metrics, and ``members_mean_<m>`` (mean of the members' own scores) for ``compare_metrics``.

    Members are put on a common grid first (see :func:`_members_on_common_grid`), aligned to the first one and
    averaged (complex mean); the ensemble is scored against the common ground truth.
    """
    import pandas as pd

    compute_metrics = compute_metrics or _default_metrics()
    rows = []
    for key, g in valid.groupby(list(group_keys), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        gt, members, dirs = _members_on_common_grid([str(d) for d in g["job_dir"]])
        if not members or gt is None:
            continue
        ens = ensemble_mean(members)
        scores = compute_metrics(gt.astype(np.complex64), ens.astype(np.complex64))
        row: dict[str, Any] = dict(zip(group_keys, key))
        row["n_members"] = len(members)
        row["shape"] = "x".join(str(n) for n in gt.shape)
        row.update({k: float(v) for k, v in scores.items() if np.isscalar(v)})
        used = g[g["job_dir"].astype(str).isin(dirs)]
        for m in compare_metrics:
            if m in used.columns:
                row[f"members_mean_{m}"] = float(used[m].mean())
        row["members"] = " ".join(Path(d).name for d in dirs)
        rows.append(row)
    return pd.DataFrame(rows)
