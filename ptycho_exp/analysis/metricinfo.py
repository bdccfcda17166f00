"""Metric directions and meanings for the analysis: which result columns are metrics, which way is better.

The direction of every reconstruction metric has one home, :data:`ptycho_exp.evaluate.metrics.METRICS`
(:func:`ptycho_exp.evaluate.metrics.higher_is_better`, which also answers for the ``null_`` and ``ref_``
prefixed names). This module adds the other result columns the tables rank (times and resources are
minimised, throughput maximised) and the names the aggregate treats specially:

* :data:`HEADLINE_METRICS`: the metrics whose margin over the null (flat-image) reconstruction is checked
  and flagged in the findings and the report;
* :data:`LEGACY_RENAMES`: result folders written before ``metrics_version`` 2 scored phase SSIM / MS-SSIM on
  the reference publication's ``(phi+pi)/2pi`` scale; their values belong to the ``_ref`` columns.
"""
from __future__ import annotations

from ptycho_exp.evaluate.metrics import NULL_PREFIX, REF_PREFIX
from ptycho_exp.evaluate.metrics import higher_is_better as _metric_higher_is_better

__all__ = ["KEY_METRICS", "HEADLINE_METRICS", "LEGACY_RENAMES", "NULL_PREFIX", "REF_PREFIX", "higher_is_better",
           "lower_is_better", "direction", "null_column"]

# the metrics findings are computed for and figures are drawn of, by default (headline scales)
KEY_METRICS = ("phase_ssim", "amp_ssim", "phase_frc50", "amp_frc50", "phase_psnr", "amp_psnr")
# the metrics a model must beat the flat image in (ptycho_exp.analysis.margin)
HEADLINE_METRICS = ("amp_ssim", "phase_ssim")
# metrics_version < 2: what the old column meant -> the column it belongs to now
LEGACY_RENAMES = {"phase_ssim": "phase_ssim_ref", "phase_ms_ssim": "phase_ms_ssim_ref"}

# minimised: the cost records a job writes (times, memory)
_LOWER_PREFIXES = ("timings.", "resources.")
_HIGHER_PREFIXES = ("throughput.",)
_LOWER_NAMES = ("mae", "mse")


def higher_is_better(metric: str) -> bool:
    """True where a larger value of ``metric`` is better.

    Reconstruction metrics (also ``null_``/``ref_`` prefixed) follow
    :func:`ptycho_exp.evaluate.metrics.higher_is_better`; ``timings.*`` and ``resources.*`` are minimised,
    ``throughput.*`` maximised; any other column (e.g. ``reg_dy``) is maximised unless it ends in
    ``_mae``/``_mse``.

    Parameters
    ----------
    metric : str
        A result column, e.g. ``phase_ssim``, ``null_amp_mae`` or ``timings.train_s``.
    """
    m = str(metric)
    if m.startswith(_LOWER_PREFIXES):
        return False
    if m.startswith(_HIGHER_PREFIXES):
        return True
    try:
        return _metric_higher_is_better(m)
    except KeyError:
        low = m.lower()
        return not (low.endswith(tuple(f"_{n}" for n in _LOWER_NAMES)) or low in _LOWER_NAMES)


def lower_is_better(metric: str) -> bool:
    """The negation of :func:`higher_is_better`."""
    return not higher_is_better(metric)


def direction(metric: str) -> str:
    """``"maximize"`` or ``"minimize"`` (Optuna's words) for ``metric``."""
    return "maximize" if higher_is_better(metric) else "minimize"


def null_column(metric: str) -> str:
    """The column holding the null (best constant image) score of ``metric``: ``null_<metric>``."""
    return f"{NULL_PREFIX}{metric}"
