"""Comparison and FRC figures (matplotlib imported lazily, Agg backend)."""

from __future__ import annotations


import numpy as np

from .metrics import ground_truth_problems, headline_ssims, normalise_pair

__all__ = ["panel_scores", "plot_comparison", "plot_frc"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi=150):
    from ptycho_exp.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


def _limits(*imgs, lo=1.0, hi=99.0):
    v = np.concatenate([np.ravel(i)[np.isfinite(np.ravel(i))] for i in imgs])
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    if not b > a:
        a, b = float(v.min()), float(v.max())
        if not b > a:
            b = a + 1.0
    return float(a), float(b)


def panel_scores(gt, recon) -> tuple[float, float]:
    """Amplitude and phase SSIM of one comparison panel, exactly as the job scores them.

    Parameters
    ----------
    gt, recon : ndarray, complex, shape (H, W)
        Aligned ground truth (or reference) and reconstruction.

    Returns
    -------
    (float, float)
        The ``amp_ssim`` and ``phase_ssim`` that :func:`~.metrics.compute_metrics` reports
        (without its other metrics): NaN for a channel whose ground truth is flat (e.g. the
        phase of an amplitude-only object), where any score would be meaningless.
    """
    return headline_ssims(*normalise_pair(gt, np.asarray(recon)), ground_truth_problems(gt))


def _title(label: str, channel: str, score) -> str:
    if score is None:
        return f"{label} {channel}"
    if not np.isfinite(score):
        return f"{label} {channel}\nnot scored (flat truth)"
    return f"{label} {channel}\nSSIM {score:.3f}"


def plot_comparison(path, gt, recon_dict, dpi: int = 150, gt_label: str = "GT") -> None:
    """Ground truth beside reconstructions: amplitude row and phase row.

    Parameters
    ----------
    path : str or os.PathLike
        PNG destination (written atomically).
    gt : ndarray, complex, shape (H, W)
        Aligned ground truth.
    recon_dict : mapping of str to ndarray
        Label (``"PINN"``, ``"baseline"``, ``"ptylab"``, ...) -> aligned complex
        reconstruction of the same shape as ``gt``.
    dpi : int, optional
        Resolution (default 150).
    gt_label : str, optional
        Title of the first column (``"GT"``, or ``"reference"`` when scored
        against a reference reconstruction).

    Notes
    -----
    Each reconstruction is shown exactly as scored
    (:func:`~.metrics.normalise_pair`: scaled amplitude, plane-removed phase).
    Colour limits are shared per row (1st-99th percentile of the ground truth
    and all reconstructions). Titles give the SSIM of each panel as scored
    (:func:`panel_scores`); a channel whose ground truth is flat says it is not scored.
    """
    plt = _plt()
    gt = np.asarray(gt)
    items = []
    gt_amp = np.abs(gt).astype(np.float64)
    gt_ph = None
    problems = ground_truth_problems(gt)
    for label, rec in recon_dict.items():
        ga, pa, gp, pp = normalise_pair(gt, np.asarray(rec))
        gt_ph = gp
        items.append((str(label), pa, pp, *headline_ssims(ga, pa, gp, pp, problems)))
    if gt_ph is None:
        from .metrics import remove_phase_plane

        gt_ph = remove_phase_plane(np.angle(gt))
    amp_lim = _limits(gt_amp, *[it[1] for it in items])
    ph_lim = _limits(gt_ph, *[it[2] for it in items])
    ncol = 1 + len(items)
    fig, axes = plt.subplots(2, ncol, figsize=(3.2 * ncol, 6.2), squeeze=False)
    try:
        cols = [(gt_label, gt_amp, gt_ph, None, None)] + items
        for j, (label, a, p, sa, sp) in enumerate(cols):
            ima = axes[0, j].imshow(a, cmap="gray", vmin=amp_lim[0], vmax=amp_lim[1])
            imp = axes[1, j].imshow(p, cmap="twilight", vmin=ph_lim[0], vmax=ph_lim[1])
            axes[0, j].set_title(_title(label, "amplitude", sa))
            axes[1, j].set_title(_title(label, "phase", sp))
            for ax in axes[:, j]:
                ax.set_xticks([])
                ax.set_yticks([])
        fig.colorbar(ima, ax=list(axes[0, :]), shrink=0.8, label="amplitude")
        fig.colorbar(imp, ax=list(axes[1, :]), shrink=0.8, label="phase (rad)")
        _save(fig, path, dpi)
    finally:
        plt.close(fig)


def plot_frc(path, frc, dpi: int = 150) -> None:
    """Plot FRC curves with the 0.5 and 1/7 thresholds.

    Parameters
    ----------
    path : str or os.PathLike
        PNG destination (written atomically).
    frc : dict
        Either one curve set ``{'rings', 'amp', 'phase'}`` (e.g.
        ``EvalResult.frc``) or a mapping label -> such a dict.
    dpi : int, optional
        Resolution (default 150).
    """
    plt = _plt()
    sets = {"": frc} if "rings" in frc else dict(frc)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    try:
        for ax, key in zip(axes, ("amp", "phase")):
            for label, f in sets.items():
                ax.plot(np.asarray(f["rings"]), np.asarray(f[key]), label=label or key)
            ax.axhline(0.5, color="k", ls="--", lw=0.8, label="0.5")
            ax.axhline(1 / 7, color="gray", ls=":", lw=0.8, label="1/7")
            ax.set_xlabel("spatial frequency (cycles / image width)")
            ax.set_title(f"FRC {key}")
            ax.set_ylim(-0.2, 1.05)
            ax.legend(fontsize=8)
        axes[0].set_ylabel("FRC")
        _save(fig, path, dpi)
    finally:
        plt.close(fig)
