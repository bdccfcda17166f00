"""Evaluation: stitching, registration, metrics, FRC and figures (docs/CONTRACT.md §6).

Pure numpy/scipy/scikit-image; no TensorFlow. Figures import matplotlib lazily.
"""

from .metrics import METRICS, compute_metrics, higher_is_better, null_metrics
from .pipeline import EvalResult, evaluate_object, evaluate_reconstruction, metrics_validity, write_frc_csv
from .stitch import Stitched, crop_to_scanned_box, default_crop, stitch_patches

__all__ = [
    "METRICS",
    "EvalResult",
    "Stitched",
    "compute_metrics",
    "crop_to_scanned_box",
    "default_crop",
    "evaluate_object",
    "evaluate_reconstruction",
    "higher_is_better",
    "metrics_validity",
    "null_metrics",
    "stitch_patches",
    "write_frc_csv",
]
