"""Metric directions: the one place that says whether a larger value of a result column is better.

Every table, finding, figure and sweep default that ranks values asks :func:`higher_is_better` (or
:func:`lower_is_better`), so a new metric's direction is declared here once.
"""
from __future__ import annotations

__all__ = ["KEY_METRICS", "higher_is_better", "lower_is_better", "direction"]

# the metrics findings are computed for and figures are drawn of, by default
KEY_METRICS = ("phase_ssim", "amp_ssim", "phase_frc50", "amp_frc50", "phase_psnr", "amp_psnr")

# minimised: errors, and the cost records a job writes (times, memory)
_LOWER_PREFIXES = ("timings.", "resources.")
_LOWER_NAMES = ("mae", "mse")


def lower_is_better(metric: str) -> bool:
    """True for error metrics (``*_mae``, ``*_mse``), times and resources; False for every other metric.

    Parameters
    ----------
    metric : str
        A result column, e.g. ``phase_ssim``, ``amp_mae`` or ``timings.train_s``.
    """
    m = metric.lower()
    if m.startswith(_LOWER_PREFIXES):
        return True
    return m.endswith(tuple(f"_{n}" for n in _LOWER_NAMES)) or m in _LOWER_NAMES


def higher_is_better(metric: str) -> bool:
    """True where a larger value of ``metric`` is better (the negation of :func:`lower_is_better`)."""
    return not lower_is_better(metric)


def direction(metric: str) -> str:
    """``"maximize"`` or ``"minimize"`` (Optuna's words) for ``metric``."""
    return "maximize" if higher_is_better(metric) else "minimize"
