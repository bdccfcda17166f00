"""Convolutional building blocks shared by the PINN and the supervised baseline (docs/CONTRACT.md §5).

The encoder is a stack of conv3x3-ReLU-conv3x3-ReLU-maxpool blocks without skip connections.
At N=64 it has filters ``n_filters_scale * [32, 64, 128]``; each doubling of N adds one level in
front (``[16, 32, 64, 128]`` at N=128) and N=32 drops the first one (``[64, 128]``), so the
bottleneck is always 8x8 with ``128 * n_filters_scale`` channels. A fractional scale is allowed;
each level's count is rounded to the nearest integer.
"""
from __future__ import annotations

import math

import keras


def scaled_filters(base: int, n_filters_scale: float) -> int:
    """``base * n_filters_scale`` channels, rounded to the nearest integer (a width of 1.5 gives 48 for 32)."""
    return max(1, int(round(base * float(n_filters_scale))))


def encoder_filters(N: int, n_filters_scale: float) -> list[int]:
    """Filters of the encoder levels for patch size ``N`` (a power of two >= 16), rounded to integers."""
    levels = round(math.log2(N)) - 3
    if N < 16 or 2 ** (levels + 3) != N:
        raise ValueError(f"N={N} must be a power of two >= 16")
    return [scaled_filters(max(1, 128 >> (levels - 1 - i)), n_filters_scale) for i in range(levels)]


def conv_pool_block(x, filters: int, name: str, dtype):
    """conv3x3-ReLU-conv3x3-ReLU-maxpool2."""
    for k in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", dtype=dtype,
                                name=f"{name}_conv{k}")(x)
    return keras.layers.MaxPooling2D(2, dtype=dtype, name=f"{name}_pool")(x)


def conv_up_block(x, filters: int, name: str, dtype):
    """conv3x3-ReLU-conv3x3-ReLU-upsample2 (nearest)."""
    for k in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", dtype=dtype,
                                name=f"{name}_conv{k}")(x)
    return keras.layers.UpSampling2D(2, dtype=dtype, name=f"{name}_up")(x)


def encoder(x, N: int, n_filters_scale: float, dtype):
    """Encoder of the diffraction input ``(n, N, N, C)`` -> bottleneck ``(n, 8, 8, 128*scale)``."""
    for i, filters in enumerate(encoder_filters(N, n_filters_scale)):
        x = conv_pool_block(x, filters, f"enc{i}", dtype)
    return x


def decoder_trunk(x, filters: list[int], name: str, dtype):
    """Up-blocks with the given filters (each doubles the spatial size)."""
    for i, f in enumerate(filters):
        x = conv_up_block(x, f, f"{name}_up{i}", dtype)
    return x
