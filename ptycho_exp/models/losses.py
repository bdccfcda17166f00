"""Loss terms of the networks (TensorFlow, float32)."""
from __future__ import annotations

import tensorflow as tf

EPS = 1e-6


def poisson_nll(lam: tf.Tensor, k: tf.Tensor, eps: float = EPS) -> tf.Tensor:
    """Poisson negative log-likelihood of counts ``k`` under rates ``lam``, offset to be >= 0.

    Returns ``mean(lam - k log(lam + eps)) - mean(k - k log(k + eps))`` computed as
    ``mean(lam - k - k log((lam + eps) / (k + eps)))``: the usual NLL minus a data-only constant
    (half the Poisson deviance). The gradient is that of the plain NLL; the value is 0 at a
    perfect fit and, unlike the plain NLL at 1e9 photons (~ -1e7 per pixel), keeps its precision
    in float32 near the optimum.
    """
    lam = tf.cast(lam, tf.float32)
    k = tf.cast(k, tf.float32)
    return tf.reduce_mean(lam - k - k * tf.math.log((lam + eps) / (k + eps)))


def mae(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Mean absolute error (float32)."""
    return tf.reduce_mean(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))


def total_variation(obj: tf.Tensor) -> tf.Tensor:
    """Anisotropic total variation of complex images ``(n, H, W, C)``: mean |d Re| + |d Im| along y and x."""
    parts = (tf.math.real(obj), tf.math.imag(obj)) if obj.dtype.is_complex else (obj,)
    tv = 0.0
    for p in parts:
        tv += tf.reduce_mean(tf.abs(p[:, 1:] - p[:, :-1])) + tf.reduce_mean(tf.abs(p[:, :, 1:] - p[:, :, :-1]))
    return tv
