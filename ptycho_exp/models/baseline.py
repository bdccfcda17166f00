"""Supervised baseline (PtychoNN-style, docs/CONTRACT.md §5): same encoder, two full-resolution linear decoders.

Input: the normalised diffraction amplitude (n,N,N,C). Targets: ground-truth amplitude and phase
patches (n,N,N,C). Loss: MAE(amplitude) + MAE(phase).
"""
from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np

from . import losses
from .blocks import decoder_trunk, encoder, encoder_filters
from .layers import ComplexFromAmpPhase

log = logging.getLogger(__name__)


class BaselineModel(keras.Model):
    """Trainer around the baseline network; ``inference_model`` (complex patches) is what gets saved.

    Parameters
    ----------
    inference_model : keras.Model
        diffraction -> complex patches ``amp * exp(i phase)``.
    net : keras.Model
        diffraction -> [amplitude, phase] (shares the inference model's layers).
    """

    def __init__(self, inference_model, net, **kwargs):
        super().__init__(**kwargs)
        self.inference_model = inference_model
        self.net = net
        self.term_names = ["amp_mae", "phase_mae"]
        self.amp_mae_tracker = keras.metrics.Mean(name="amp_mae")
        self.phase_mae_tracker = keras.metrics.Mean(name="phase_mae")
        self.n_params = int(inference_model.count_params())
        self.built = True

    def call(self, inputs, training=False):
        diff = inputs["diffraction"] if isinstance(inputs, dict) else inputs
        return self.net(diff, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        amp_true, phase_true = y
        amp_pred, phase_pred = y_pred
        amp_term = losses.mae(amp_pred, amp_true)
        phase_term = losses.mae(phase_pred, phase_true)
        self.amp_mae_tracker.update_state(amp_term)
        self.phase_mae_tracker.update_state(phase_term)
        return amp_term + phase_term


def build_baseline(cfg: Any, N: int, gridsize: int, *, dtype: str = "float32") -> BaselineModel:
    """Build the supervised baseline.

    Parameters
    ----------
    cfg : ModelConfig-like
        Reads ``n_filters_scale``.
    N, gridsize : int
        Patch size (power of two >= 16) and group side (C = gridsize**2 channels).
    dtype : str
        Dtype policy of the hidden layers ("float32" or "mixed_float16"); outputs are float32.

    Returns
    -------
    BaselineModel
        With ``.inference_model``, ``.net`` and ``.n_params`` (~4.6 M at N=64, scale 2).
    """
    C = int(gridsize) ** 2
    scale = float(cfg.n_filters_scale)
    trunk = list(reversed(encoder_filters(N, scale)))
    diff_in = keras.Input((N, N, C), name="diffraction")
    z = encoder(diff_in, N, scale, dtype)
    outs = []
    for name in ("amp", "phase"):
        x = decoder_trunk(z, trunk, name, dtype)
        outs.append(keras.layers.Conv2D(C, 3, padding="same", dtype="float32", name=f"{name}_out")(x))
    net = keras.Model(diff_in, outs, name="baseline_net")
    obj = ComplexFromAmpPhase(name="object")(outs)
    inference = keras.Model(diff_in, obj, name="baseline_inference")
    model = BaselineModel(inference, net, name="baseline")
    log.info("baseline: N=%d gridsize=%d n_filters_scale=%g -> %d parameters", N, gridsize, scale,
             model.n_params)
    return model


def split_targets(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth complex patches -> (amplitude, phase) float32 arrays."""
    return np.abs(patches).astype(np.float32), np.angle(patches).astype(np.float32)
