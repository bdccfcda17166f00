"""Physics-informed network (PtychoPINN-style, docs/CONTRACT.md §5): encoder, two N/2 decoders, physics layers.

The trainable :class:`PinnModel` wraps two functional models that share their layers:

- ``inference_model``: normalised diffraction (n,N,N,C) -> complex object patches (n,N,N,C),
  without the probe and diffraction layers; with C>1 it also takes the offsets and returns each
  position's patch re-extracted from its group's merged object (``object_big``) or from the single
  centroid-frame object (``object_big=False``), as the reference's inference returns the merged object;
- ``physics_model``: [diffraction, offsets] -> [predicted normalised amplitude, object patches]:
  merge per group -> re-extract per position -> x probe -> unitary diffraction.

The loss (``PinnModel.compute_loss``) is evaluated in counts: ``lam = (s * Xhat)**2`` with
``s = exp(log_scale)`` (initialised to ``s_model = sqrt(nphotons) / (N/2)``, trainable if
``intensity_scale_trainable``) and ``k = (s_model * x)**2`` for the normalised input ``x``.
``k`` uses the fixed ``s_model`` (data in counts): with the same trainable ``s`` on both sides
the NLL would simply drive ``s`` to 0.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from . import losses
from .blocks import conv_up_block, decoder_trunk, encoder, encoder_filters, scaled_filters
from .layers import (
    BorderCombine,
    CentreOnCanvas,
    ChannelSlice,
    ComplexFromAmpPhase,
    Diffract,
    ExtractGroup,
    MergeGroup,
    PiTanh,
    ProbeIllumination,
)

log = logging.getLogger(__name__)

PROBE_SCALING_MODES = ("auto", "fit", "off")
# a probe whose power ratio (see :func:`ptycho_exp.physics.probe.probe_power_ratio`) lies outside this band
# asks the network for an object amplitude far outside what its sigmoid output reaches comfortably
POWER_RATIO_BAND = (0.1, 10.0)


BORDER_ACTIVATIONS = ("decoder", "swish")


def _pinn_decoder(z, trunk: list[int], c_out: int, name: str, activation, N: int, border_filters: int,
                  probe_big: bool, dtype, border_channels: int = 0, border_activation: str = "decoder"):
    """Decoder to N/2, output conv + activation (float32), zero-padded to N; optional border branch.

    With ``border_channels = k > 0`` the last ``k`` channels of the decoder trunk are reserved for the
    border branch: the central output convolution reads the others, the branch (when ``probe_big``)
    reads only those ``k``; without ``probe_big`` they are unused. ``border_activation`` is the
    branch's output activation: ``decoder`` (the central one: sigmoid / pi*tanh) or ``swish``.
    """
    x = decoder_trunk(z, trunk, name, dtype)
    central_in, border_in = x, x
    if border_channels:
        k = int(x.shape[-1]) - int(border_channels)
        central_in = ChannelSlice(0, k, dtype=dtype, name=f"{name}_central_channels")(x)
        border_in = ChannelSlice(k, None, dtype=dtype, name=f"{name}_border_channels")(x)
    c = keras.layers.Conv2D(c_out, 3, padding="same", dtype="float32", name=f"{name}_out")(central_in)
    c = activation(f"{name}_act")(c)
    c = keras.layers.ZeroPadding2D(N // 4, dtype="float32", name=f"{name}_pad")(c)
    if probe_big:
        b = conv_up_block(border_in, border_filters, f"{name}_border", dtype)
        b = keras.layers.Conv2D(c_out, 3, padding="same", dtype="float32", name=f"{name}_border_out")(b)
        if border_activation == "swish":
            b = keras.layers.Activation("swish", dtype="float32", name=f"{name}_border_act")(b)
        else:
            b = activation(f"{name}_border_act")(b)
        c = BorderCombine(N // 2, name=f"{name}_with_border")([c, b])
    return c


def object_support(cfg: Any, N: int) -> int:
    """Side of the central square the PINN's object is defined on: N with ``probe_big``, else N/2."""
    return N if bool(cfg.probe_big) else N // 2


def probe_scaling_mode(mode: str, data_kind: str) -> str:
    """Resolve ``model.probe_scaling`` for this data: ``auto`` is ``fit`` for file data (``data=npz``: a
    probe in the file's own units) and ``off`` for simulated data (normalised by docs/CONTRACT.md §2, where
    ``data.probe_scale`` is the knob); ``fit`` and ``off`` are returned as they are."""
    if mode not in PROBE_SCALING_MODES:
        raise ValueError(f"model.probe_scaling={mode!r} is invalid: choose {', '.join(PROBE_SCALING_MODES)}")
    if mode == "auto":
        return "fit" if data_kind != "simulate" else "off"
    return mode


def scale_probe(probe: np.ndarray, support: int, mode: str,
                data_energy: float | None = None) -> tuple[np.ndarray, dict]:
    """The probe the PINN multiplies its object by, scaled to the normalised patterns.

    The normalised patterns have a mean energy of ``(N/2)**2``; by Parseval a uniform object of
    amplitude ``a`` predicts ``a**2 * sum_support |P|**2``. A probe in arbitrary units (a measured
    ``probeGuess``) can therefore ask the sigmoid amplitude (<= 1) for any ``a`` at all. With
    ``mode="fit"`` the probe is multiplied by the closed-form factor
    :func:`~ptycho_exp.physics.probe.fitted_probe_factor` that gives it the power of the docs/CONTRACT.md §2
    normalised ideal disk on the support (the network then outputs ~0.6-0.7 for an object of amplitude 1,
    whatever the probe's overall scale); ``"off"`` uses it as given.

    A warning with the ratio is logged when the probe's power lies outside :data:`POWER_RATIO_BAND`:
    with ``fit``, its power against the data's own mean pattern energy (``data_energy``, in the data's
    units; about ``1 / mean |O|**2`` for a probe in the data's units, so far from 1 means the probe and
    the patterns were scaled differently); with ``off``, its power against the normalised patterns (what
    the network has to make up).

    Parameters
    ----------
    probe : (N, N) complex probe as supplied
    support : side of the object's support (:func:`object_support`)
    mode : ``fit`` or ``off`` (resolved with :func:`probe_scaling_mode`)
    data_energy : mean ``sum X**2`` per pattern of the training data as stored (optional)

    Returns
    -------
    (probe used, record) where record holds ``mode``, ``power_ratio`` (support power over the normalised
    patterns' energy, before scaling), ``data_power_ratio`` (probe power over ``data_energy``, or None),
    ``target_ratio``, ``probe_scale_fitted`` (the factor applied; 1.0 with ``off``) and ``power_ratio_used``.
    """
    from ptycho_exp.physics.probe import fitted_probe_factor, probe_power_ratio, reference_power_ratio

    probe = np.asarray(probe, np.complex64)
    N = probe.shape[-1]
    ratio = probe_power_ratio(probe, support)
    target = reference_power_ratio(N, support)
    data_ratio = None
    if data_energy is not None and data_energy > 0:
        data_ratio = probe_power_ratio(probe) * (N / 2.0) ** 2 / float(data_energy)
    factor = fitted_probe_factor(probe, support) if mode == "fit" else 1.0
    lo, hi = POWER_RATIO_BAND
    if mode == "fit" and data_ratio is not None and not lo <= data_ratio <= hi:
        log.warning("probe power / mean pattern energy of the data = %.3g (outside [%g, %g]): the probe and the "
                    "patterns are not in the same units; the probe is rescaled by %.4g to the normalised patterns "
                    "(model.probe_scaling=fit)", data_ratio, lo, hi, factor)
    elif mode != "fit" and not lo <= ratio <= hi:
        log.warning("probe power / normalised pattern energy = %.3g (outside [%g, %g]; %.3g for the normalised "
                    "ideal disk): the network would need an object amplitude of %.3g; the probe is used as given "
                    "(model.probe_scaling=off): set model.probe_scaling=fit to rescale it",
                    ratio, lo, hi, target, 1.0 / np.sqrt(ratio) if ratio > 0 else float("inf"))
    if mode == "fit" and factor != 1.0:
        probe = (probe * np.float32(factor)).astype(np.complex64)
        log.info("probe scaled by %.4g to the normalised patterns (power ratio %.3g -> %.3g)", factor, ratio, target)
    record = {"mode": mode, "power_ratio": ratio, "data_power_ratio": data_ratio, "target_ratio": target,
              "probe_scale_fitted": factor, "power_ratio_used": ratio * factor ** 2}
    return probe, record


def _sigmoid(name: str):
    return keras.layers.Activation("sigmoid", dtype="float32", name=name)


def _pi_tanh(name: str):
    return PiTanh(name=name)


class PinnModel(keras.Model):
    """Trainer around the PINN's physics model; ``inference_model`` is what gets saved.

    Parameters
    ----------
    inference_model, physics_model : keras.Model
        Functional models sharing the network layers (see module docstring).
    channels, N : int
        C = gridsize**2 and the patch size.
    nphotons : float
        Mean counts per pattern; sets ``s_model = sqrt(nphotons) / (N/2)``.
    weights : dict
        Loss weights ``nll``, ``mae``, ``tv``, ``realspace``.
    scale_trainable : bool
        Train ``log_scale``.
    support : int
        Side of the central region the object is defined on (for the real-space term).
    """

    def __init__(self, inference_model, physics_model, *, channels: int, N: int, nphotons: float,
                 weights: dict, scale_trainable: bool, support: int, **kwargs):
        super().__init__(**kwargs)
        self.inference_model = inference_model
        self.physics_model = physics_model
        self.channels = int(channels)
        self.N = int(N)
        self.support = int(support)
        self.s_model = math.sqrt(float(nphotons)) / (N / 2)
        self.loss_weights_ = {k: float(v) for k, v in weights.items()}
        self.norm_factor = 1.0  # set by fit_network; scales the real-space target
        self.log_scale = self.add_weight(shape=(), name="log_scale", trainable=bool(scale_trainable),
                                         initializer=keras.initializers.Constant(math.log(self.s_model)))
        self.term_names = ["nll", "mae"] + [k for k in ("tv", "realspace") if self.loss_weights_[k] > 0]
        for k in self.term_names:
            setattr(self, f"{k}_tracker", keras.metrics.Mean(name=k))
        self.n_params = int(inference_model.count_params())
        self.built = True

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            diff, offsets = inputs["diffraction"], inputs.get("offsets")
        else:
            diff, offsets = inputs, None
        if self.channels > 1:
            return self.physics_model([diff, offsets], training=training)
        return self.physics_model(diff, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        amp_pred, patches = y_pred
        x_amp = tf.cast(x["diffraction"] if isinstance(x, dict) else x, tf.float32)
        s = tf.exp(tf.cast(self.log_scale, tf.float32))
        s0 = self.s_model
        terms = {
            "nll": losses.poisson_nll(tf.square(s * amp_pred), tf.square(s0 * x_amp)),
            "mae": losses.mae(amp_pred * (s / s0), x_amp),
        }
        if "tv" in self.term_names:
            terms["tv"] = losses.total_variation(patches)
        if "realspace" in self.term_names:
            terms["realspace"] = self._realspace(patches, y, s)
        total = 0.0
        for k, v in terms.items():
            getattr(self, f"{k}_tracker").update_state(v)
            w = self.loss_weights_.get(k, 0.0)
            if w > 0:
                total = total + w * v
        return total

    def _realspace(self, patches, y, s):
        """MAE of |object| against the ground-truth amplitude (scaled like the network's) on the support."""
        if y is None:
            return tf.constant(0.0)
        lo = (self.N - self.support) // 2
        target = tf.cast(y, tf.float32) * (self.norm_factor * self.s_model / s)
        sl = (slice(None), slice(lo, lo + self.support), slice(lo, lo + self.support))
        return losses.mae(tf.abs(patches)[sl], target[sl])


def build_pinn(cfg: Any, N: int, gridsize: int, probe: np.ndarray, nphotons: float, *,
               dtype: str = "float32") -> PinnModel:
    """Build the PINN for ``N x N`` patches and ``gridsize**2`` channels.

    Parameters
    ----------
    cfg : ModelConfig-like
        Reads ``n_filters_scale``, ``object_big``, ``probe_big``, ``border_channels``,
        ``border_activation``, ``probe_trainable``,
        ``intensity_scale_trainable`` and the loss weights.
    N, gridsize : int
        Patch size (power of two >= 16) and group side (C = gridsize**2 channels).
    probe : np.ndarray
        (N, N) complex probe.
    nphotons : float
        Mean counts per pattern (sets the model-side intensity scale).
    dtype : str
        Keras dtype policy of the convolutional layers ("float32" or "mixed_float16"); the
        output activations and physics layers always run in float32 / complex64.

    Returns
    -------
    PinnModel
        With ``.inference_model``, ``.physics_model`` and ``.n_params`` (network parameters,
        ~2.25 M at N=64, gridsize 1, scale 2).
    """
    C = int(gridsize) ** 2
    scale = float(cfg.n_filters_scale)
    object_big = bool(cfg.object_big)
    probe_big = bool(cfg.probe_big)
    support = object_support(cfg, N)
    canvas = 2 * N
    enc = encoder_filters(N, scale)
    trunk = list(reversed(enc[:-1]))
    c_dec = C if object_big else 1

    diff_in = keras.Input((N, N, C), name="diffraction")
    z = encoder(diff_in, N, scale, dtype)
    border_channels = int(cfg.border_channels)
    border_activation = str(cfg.border_activation)
    if border_activation not in BORDER_ACTIVATIONS:
        raise ValueError(f"model.border_activation={border_activation!r} is invalid: choose "
                         f"{', '.join(BORDER_ACTIVATIONS)}")
    last = enc[0]  # channels the output convolutions read: the decoder's last block (N=16: the bottleneck)
    if not 0 <= border_channels < last:
        raise ValueError(f"model.border_channels={border_channels} is invalid: choose 0 to {last - 1} "
                         f"(the decoder's last block has {last} channels)")
    dec = dict(border_channels=border_channels, border_activation=border_activation)
    border_filters = scaled_filters(32, scale)
    amp = _pinn_decoder(z, trunk, c_dec, "amp", _sigmoid, N, border_filters, probe_big, dtype, **dec)
    phase = _pinn_decoder(z, trunk, c_dec, "phase", _pi_tanh, N, border_filters, probe_big, dtype, **dec)
    obj = ComplexFromAmpPhase(name="object")([amp, phase])

    if C > 1:
        off_in = keras.Input((C, 2), name="offsets")
        if object_big:
            big = MergeGroup(support, canvas, align_phase=bool(cfg.align_phase),
                             name="merge_group")([obj, off_in])
        else:
            big = CentreOnCanvas(canvas, name="centre_on_canvas")(obj)
        patches = ExtractGroup(N, name="extract_group")([big, off_in])
        inputs = [diff_in, off_in]
        # each position's patch cut from its group's merged object: what the loss constrains (the raw
        # per-channel decoder outputs are only constrained through their overlap average)
        inference = keras.Model(inputs, patches, name="pinn_inference")
    else:
        patches, inputs = obj, diff_in
        inference = keras.Model(diff_in, obj, name="pinn_inference")
    psi = ProbeIllumination(N, probe, trainable=bool(cfg.probe_trainable),
                            name="probe_illumination")(patches)
    amp_pred = Diffract(name="diffract")(psi)
    physics = keras.Model(inputs, [amp_pred, patches], name="pinn_physics")

    weights = {"nll": cfg.nll_weight, "mae": cfg.mae_weight,
               "tv": cfg.tv_weight, "realspace": cfg.realspace_weight}
    model = PinnModel(inference, physics, channels=C, N=N, nphotons=nphotons, weights=weights,
                      scale_trainable=bool(cfg.intensity_scale_trainable),
                      support=support, name="pinn")
    log.info("PINN: N=%d gridsize=%d n_filters_scale=%g -> %d parameters", N, gridsize, scale, model.n_params)
    return model
