"""TensorFlow physics ops and serialisable Keras layers of the PINN (docs/CONTRACT.md §1, §5).

Conventions
-----------
- Images are complex64 with the two spatial axes last in the *functions* below
  (``(..., H, W)``); the *layers* take and return channels-last tensors ``(n, H, W, C)``.
- Diffraction is the unitary amplitude ``X = |fftshift(FFT2(psi))| / N`` (zero frequency at
  ``(N/2, N/2)``), so ``sum |X|**2 == sum |psi|**2``.
- A shift ``t = (dy, dx)`` moves content by ``+t`` (rows, cols): ``out[i, j] = img[i - dy, j - dx]``.
- ``offsets`` (n, C, 2) [y, x] are the positions of a group's patches relative to the group
  centroid. Patch ``c`` of a group is the group's object, centred on the centroid, seen at
  ``+offsets[c]``: ``patch_c = crop_N(shift(big, -offsets[c]))``.

Nothing here is built at import time; the ``register_keras_serializable`` decorators only
register the classes so that ``keras.saving.load_model(..., safe_mode=True)`` finds them.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

PACKAGE = "ptycho_exp"


# --------------------------------------------------------------------------- pure TF functions
def diffract_amplitude(psi: tf.Tensor) -> tf.Tensor:
    """Unitary far-field amplitude of exit waves.

    Parameters
    ----------
    psi : tf.Tensor
        Complex exit waves, shape ``(..., N, N)``.

    Returns
    -------
    tf.Tensor
        float32 amplitude ``|fftshift(FFT2(psi))| / N``, same shape.
    """
    psi = tf.cast(psi, tf.complex64)
    n = psi.shape[-1]
    far = tf.signal.fftshift(tf.signal.fft2d(psi), axes=(-2, -1))
    return tf.abs(far) / float(n)


def complex_from_amp_phase(amp: tf.Tensor, phase: tf.Tensor) -> tf.Tensor:
    """``amp * exp(i * phase)`` as complex64."""
    amp = tf.cast(amp, tf.float32)
    phase = tf.cast(phase, tf.float32)
    return tf.complex(amp * tf.cos(phase), amp * tf.sin(phase))


def _shift_ramp(shape: tuple[int, int], shifts: tf.Tensor) -> tf.Tensor:
    """Fourier phase ramp ``exp(-2 pi i (ky dy + kx dx))`` for ``shifts`` (..., 2) -> (..., H, W)."""
    h, w = shape
    ky = tf.constant(np.fft.fftfreq(h), tf.float32)
    kx = tf.constant(np.fft.fftfreq(w), tf.float32)
    shifts = tf.cast(shifts, tf.float32)
    dy = shifts[..., 0, None, None]
    dx = shifts[..., 1, None, None]
    arg = -2.0 * math.pi * (ky[:, None] * dy + kx[None, :] * dx)
    return tf.complex(tf.cos(arg), tf.sin(arg))


def fourier_shift(img: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
    """Sub-pixel translation of complex images by ``shifts`` (content moves by ``+t``).

    Parameters
    ----------
    img : tf.Tensor
        complex64 ``(..., H, W)``.
    shifts : tf.Tensor
        float ``(..., 2)`` [dy, dx] in pixels, batch dims broadcast against ``img``'s.

    Returns
    -------
    tf.Tensor
        complex64 ``(..., H, W)``; the shift is circular, so pad first if content may wrap.
    """
    img = tf.cast(img, tf.complex64)
    ramp = _shift_ramp((img.shape[-2], img.shape[-1]), shifts)
    return tf.signal.ifft2d(tf.signal.fft2d(img) * ramp)


def translate(img: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
    """Translate complex images by ``shifts`` with bilinear interpolation (content moves by ``+t``).

    Unlike :func:`fourier_shift`, a sub-pixel shift does not ring at sharp edges (the decoder's
    output is cut off at its support), and content that leaves the frame is dropped, not wrapped;
    integer shifts are exact in both.

    Parameters
    ----------
    img : tf.Tensor
        complex64 ``(..., H, W)``.
    shifts : tf.Tensor
        float ``(..., 2)`` [dy, dx] with the same leading dims as ``img``.

    Returns
    -------
    tf.Tensor
        complex64 ``(..., H, W)``; pixels that come from outside the frame are 0.
    """
    img = tf.cast(img, tf.complex64)
    h, w = img.shape[-2], img.shape[-1]
    lead = tf.shape(img)[:-2]
    flat = tf.reshape(img, (-1, h, w))
    stacked = tf.stack([tf.math.real(flat), tf.math.imag(flat)], axis=-1)  # (b, H, W, 2)
    t = tf.reshape(tf.cast(shifts, tf.float32), (-1, 2))
    one, zero = tf.ones_like(t[:, 0]), tf.zeros_like(t[:, 0])
    # output pixel (x, y) samples input (x - dx, y - dy)
    transforms = tf.stack([one, zero, -t[:, 1], zero, one, -t[:, 0], zero, zero], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(images=stacked, transforms=transforms, output_shape=[h, w],
                                                fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.reshape(tf.complex(out[..., 0], out[..., 1]), tf.concat([lead, [h, w]], axis=0))


def pad_center(img: tf.Tensor, size: int) -> tf.Tensor:
    """Zero-pad the last two axes of ``img`` symmetrically to ``size`` (``size - H`` even)."""
    h = img.shape[-1]
    p = (size - h) // 2
    paddings = [[0, 0]] * (len(img.shape) - 2) + [[p, p], [p, p]]
    return tf.pad(img, paddings)


def crop_center(img: tf.Tensor, size: int) -> tf.Tensor:
    """Central ``size x size`` crop of the last two axes."""
    p = (img.shape[-1] - size) // 2
    return img[..., p:p + size, p:p + size]


def shifted_box_mask(size: int, lo: int, hi: int, shifts: tf.Tensor) -> tf.Tensor:
    """Box mask ``[lo, hi)**2`` on a ``size**2`` grid, moved by ``shifts`` with bilinear weights.

    Parameters
    ----------
    size : int
        Side of the grid.
    lo, hi : int
        The unshifted box covers pixels ``lo .. hi-1`` on both axes.
    shifts : tf.Tensor
        float ``(..., 2)`` [dy, dx].

    Returns
    -------
    tf.Tensor
        float32 ``(..., size, size)`` in [0, 1]: exact for integer shifts, linear edges otherwise.
    """
    i = tf.range(size, dtype=tf.float32)
    shifts = tf.cast(shifts, tf.float32)

    def profile(t: tf.Tensor) -> tf.Tensor:
        u = i - t[..., None]
        return tf.clip_by_value(tf.minimum(u - lo + 1.0, hi - u), 0.0, 1.0)

    return profile(shifts[..., 0])[..., :, None] * profile(shifts[..., 1])[..., None, :]


def merge_group(patches: tf.Tensor, offsets: tf.Tensor, support: int, canvas: int,
                align_phase: bool = False) -> tf.Tensor:
    """Merge each group's C patches into one object on a ``canvas x canvas`` frame (per group).

    Each patch's central ``support x support`` region is trusted (the decoder output lives there).
    Patch c is moved by ``+offsets[c]`` into the group frame (bilinear, :func:`translate`);
    overlapping regions are averaged by dividing by the overlap count of the (moved) masks, floored
    at 1 so that the fading fringe of a lone mask is kept rather than amplified. Groups never mix.

    Parameters
    ----------
    patches : tf.Tensor
        complex64 ``(n, C, N, N)``.
    offsets : tf.Tensor
        float ``(n, C, 2)`` relative to the group centroid.
    support : int
        Side of the central trusted region (``N//2``, or ``N`` with the probe_big branch).
    canvas : int
        Side of the group frame (>= N + 2 max|offset|; the models use 2N).
    align_phase : bool
        Before averaging, turn each patch by the constant phase that best matches it to the group's
        first patch on their overlap (``arg sum conj(p_c) p_0``). A patch's constant phase cannot be
        read from its own diffraction pattern, so a network has to agree on one across channels; with
        the alignment, patches that agree up to a constant phase merge without cancelling each other,
        and patches that already agree are unchanged. A patch with no overlap is left as it is.

    Returns
    -------
    tf.Tensor
        complex64 ``(n, canvas, canvas)``.
    """
    n_px = patches.shape[-1]
    lo = (canvas - support) // 2
    mask0 = shifted_box_mask(n_px, (n_px - support) // 2, (n_px + support) // 2, tf.zeros((2,)))
    padded = pad_center(tf.cast(patches, tf.complex64) * tf.cast(mask0, tf.complex64), canvas)
    moved = translate(padded, offsets)
    masks = shifted_box_mask(canvas, lo, lo + support, offsets)
    if align_phase:
        weight = tf.cast(masks * masks[:, :1], tf.complex64)
        inner = tf.reduce_sum(moved[:, :1] * tf.math.conj(moved) * weight, axis=(-2, -1))  # (n, C)
        size = tf.abs(inner)
        ok = size > 1e-12
        turn = tf.where(ok[..., None], tf.stack([tf.math.real(inner), tf.math.imag(inner)], -1)
                        / tf.maximum(size, 1e-12)[..., None], tf.constant([1.0, 0.0]))
        moved = moved * tf.complex(turn[..., 0], turn[..., 1])[..., None, None]
    count = tf.reduce_sum(masks, axis=1)
    total = tf.reduce_sum(moved, axis=1)
    return total / tf.cast(tf.maximum(count, 1.0), tf.complex64)


def extract_group(big: tf.Tensor, offsets: tf.Tensor, size: int) -> tf.Tensor:
    """Re-extract each position's ``size x size`` patch from its group's object.

    Parameters
    ----------
    big : tf.Tensor
        complex64 ``(n, M, M)`` group objects centred on the group centroid.
    offsets : tf.Tensor
        float ``(n, C, 2)``.
    size : int
        Patch side N.

    Returns
    -------
    tf.Tensor
        complex64 ``(n, C, N, N)``: ``crop_N(translate(big, -offsets[c]))`` (bilinear).
    """
    big = tf.cast(big, tf.complex64)
    c = offsets.shape[1]
    return crop_center(translate(tf.repeat(big[:, None], c, axis=1), -tf.cast(offsets, tf.float32)), size)


def _channels_first(x: tf.Tensor) -> tf.Tensor:
    return tf.transpose(x, (0, 3, 1, 2))


def _channels_last(x: tf.Tensor) -> tf.Tensor:
    return tf.transpose(x, (0, 2, 3, 1))


# --------------------------------------------------------------------------- Keras layers
@keras.saving.register_keras_serializable(package=PACKAGE)
class ComplexFromAmpPhase(keras.layers.Layer):
    """``[amp, phase]`` (n, H, W, C) float -> complex64 object ``amp * exp(i phase)``."""

    def call(self, inputs):
        amp, phase = inputs
        return complex_from_amp_phase(amp, phase)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, dtype="complex64")


@keras.saving.register_keras_serializable(package=PACKAGE)
class PiTanh(keras.layers.Layer):
    """Phase activation ``pi * tanh(x)`` (float32)."""

    def call(self, x):
        return math.pi * tf.tanh(tf.cast(x, tf.float32))

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, dtype="float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelSlice(keras.layers.Layer):
    """``x[..., start:stop]``: a contiguous range of channels (``stop=None``: to the last).

    Parameters
    ----------
    start, stop : int, int or None
        Channel range, as in a Python slice with non-negative bounds.
    """

    def __init__(self, start: int, stop: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.start = int(start)
        self.stop = None if stop is None else int(stop)

    def call(self, x):
        return x[..., self.start:self.stop]

    def compute_output_spec(self, x):
        c = len(range(x.shape[-1])[self.start:self.stop])
        return keras.KerasTensor((*x.shape[:-1], c), dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BorderCombine(keras.layers.Layer):
    """``central + (1 - centre mask) * border``: the optional probe_big border branch.

    Parameters
    ----------
    support : int
        Side of the central region the main decoder fills (N//2).
    """

    def __init__(self, support: int, **kwargs):
        super().__init__(**kwargs)
        self.support = int(support)

    def call(self, inputs):
        central, border = (tf.cast(t, tf.float32) for t in inputs)
        n = central.shape[1]
        lo = (n - self.support) // 2
        mask = shifted_box_mask(n, lo, lo + self.support, tf.zeros((2,)))
        return central + (1.0 - mask)[None, :, :, None] * border

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "support": self.support}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MergeGroup(keras.layers.Layer):
    """``[patches (n,N,N,C) complex, offsets (n,C,2)]`` -> group object ``(n, M, M)`` (see merge_group)."""

    def __init__(self, support: int, canvas: int, align_phase: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.support = int(support)
        self.canvas = int(canvas)
        self.align_phase = bool(align_phase)

    def call(self, inputs):
        patches, offsets = inputs
        return merge_group(_channels_first(patches), offsets, self.support, self.canvas, self.align_phase)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs[0].shape[0], self.canvas, self.canvas), dtype="complex64")

    def get_config(self):
        return {**super().get_config(), "support": self.support, "canvas": self.canvas,
                "align_phase": self.align_phase}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CentreOnCanvas(keras.layers.Layer):
    """A single-channel object (n,N,N,1) centred on the group centroid -> ``(n, M, M)`` (object_big off)."""

    def __init__(self, canvas: int, **kwargs):
        super().__init__(**kwargs)
        self.canvas = int(canvas)

    def call(self, obj):
        return pad_center(tf.cast(obj[..., 0], tf.complex64), self.canvas)

    def compute_output_spec(self, obj):
        return keras.KerasTensor((obj.shape[0], self.canvas, self.canvas), dtype="complex64")

    def get_config(self):
        return {**super().get_config(), "canvas": self.canvas}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ExtractGroup(keras.layers.Layer):
    """``[big (n,M,M), offsets (n,C,2)]`` -> patches ``(n, N, N, C)`` complex (see extract_group)."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, inputs):
        big, offsets = inputs
        return _channels_last(extract_group(big, offsets, self.size))

    def compute_output_spec(self, inputs):
        big, offsets = inputs
        return keras.KerasTensor((big.shape[0], self.size, self.size, offsets.shape[1]), dtype="complex64")

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ProbeIllumination(keras.layers.Layer):
    """Exit waves ``P * O`` for object patches (n,N,N,C) complex; the probe is a (non-)trainable weight.

    Parameters
    ----------
    size : int
        Probe side N.
    probe : array-like, optional
        Initial complex probe (N, N); omitted when the layer is rebuilt from its config (the
        saved weights then restore it).
    trainable : bool
        Refine the probe during training (``model.probe_trainable``).
    """

    def __init__(self, size: int, probe=None, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self._initial = None if probe is None else np.asarray(probe, np.complex64)
        if self._initial is not None and self._initial.shape != (self.size, self.size):
            raise ValueError(f"probe shape {self._initial.shape} != ({self.size}, {self.size})")

    def build(self, input_shape):
        shape = (self.size, self.size)
        self.probe_re = self.add_weight(shape=shape, initializer="zeros", name="probe_re",
                                        trainable=self.trainable)
        self.probe_im = self.add_weight(shape=shape, initializer="zeros", name="probe_im",
                                        trainable=self.trainable)
        if self._initial is not None:
            self.probe_re.assign(self._initial.real.astype(np.float32))
            self.probe_im.assign(self._initial.imag.astype(np.float32))

    def call(self, patches):
        probe = tf.complex(tf.cast(self.probe_re, tf.float32), tf.cast(self.probe_im, tf.float32))
        return tf.cast(patches, tf.complex64) * probe[None, :, :, None]

    def compute_output_spec(self, patches):
        return keras.KerasTensor(patches.shape, dtype="complex64")

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Diffract(keras.layers.Layer):
    """Exit waves (n,N,N,C) complex -> unitary diffraction amplitude (n,N,N,C) float32."""

    def call(self, psi):
        return _channels_last(diffract_amplitude(_channels_first(psi)))

    def compute_output_spec(self, psi):
        return keras.KerasTensor(psi.shape, dtype="float32")
