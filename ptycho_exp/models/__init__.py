"""Neural-network models: PINN and supervised baseline (TensorFlow / Keras 3).

Importing this package does not import TensorFlow; the names below load their module on first
use. Modules: ``layers`` (physics ops and serialisable layers), ``blocks`` (encoder/decoder
blocks), ``pinn``, ``baseline``, ``losses``, ``callbacks``, ``fit`` (training, prediction, I/O).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "fit_network": "fit", "predict_patches": "fit", "load_network": "fit", "save_network": "fit",
    "release_tf": "fit", "FitResult": "fit", "compute_norm_factor": "fit",
    "build_pinn": "pinn", "build_baseline": "baseline",
}

__all__ = ["FitResult", "build_baseline", "build_pinn", "compute_norm_factor", "fit_network",
           "load_network", "predict_patches", "release_tf", "save_network"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
