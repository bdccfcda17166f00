"""The files of a job folder and of an aggregate folder, by name, in one place.

A job folder (``hydra.run.dir`` or one ``hydra.sweep.dir/<n>``) holds:

* :data:`RESULT_FILE` - the outcome record (written last, atomically; its presence marks a finished job),
* :data:`JOB_CONFIG_FILE` - the resolved config the isolated child process reads,
* :data:`RECON_FILE` - the registered reconstruction and its ground truth (``recon``, ``gt``, ``origin``),
* :data:`HISTORY_FILE`, :data:`FRC_FILE` - the training history and the Fourier ring correlation curves,
* :data:`JOB_LOG_FILE` - the child's log,
* :data:`MODEL_DIR` / :data:`MODEL_FILE` (+ :data:`NORM_FILE`) - a trained network,
* :data:`HYDRA_DIR` - Hydra's record of the composed config and overrides.
"""
from __future__ import annotations

from pathlib import Path

# --- job folder
RESULT_FILE = "result.json"
JOB_CONFIG_FILE = "job_config.json"
RECON_FILE = "recon.npz"
HISTORY_FILE = "history.csv"
FRC_FILE = "frc.csv"
JOB_LOG_FILE = "job.log"
WRITE_PROBE_FILE = ".write_probe"
MODEL_DIR = "model"
MODEL_FILE = "model.keras"
NORM_FILE = "norm.json"
TENSORBOARD_DIR = "tensorboard"
HYDRA_DIR = ".hydra"
OVERRIDES_FILE = Path(HYDRA_DIR) / "overrides.yaml"
HYDRA_CONFIG_FILE = Path(HYDRA_DIR) / "config.yaml"

# --- sweep folder
MULTIRUN_FILE = "multirun.yaml"

# --- aggregate folder
RAW_FILE = "raw_results_all_trials.csv"
RESULTS_FILE = "results.csv"
BEST_FILE = "best_params.yaml"
ENSEMBLE_FILE = "ensemble.csv"
FINDINGS_FILE = "findings.csv"
SUMMARY_FILE = "STUDY_SUMMARY.md"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
