"""Synthetic and natural-image test objects (docs/CONTRACT.md §2).

Every generator is a pure function of its arguments and the numpy Generator it is given, so the same
seed gives byte-identical objects. Amplitudes lie in [0, 1]; phases are chosen by ``make_object(..., phase=...)``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from ptycho_exp.config import OBJECT_NAMES as SYNTHETIC_OBJECTS
from ptycho_exp.config import PHASE_MODES, SKIMAGE_OBJECTS

N_LINES = 400
N_POINTS = 400
INDEPENDENT_PHASE_RANGE = np.pi / 2  # independent phase spans [-pi/2, pi/2]


def _normalise_max(img: np.ndarray) -> np.ndarray:
    """Scale to a maximum of 1 (an all-zero image stays zero)."""
    peak = float(np.max(img))
    return img / peak if peak > 0 else img


def _normalise_range(img: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (a constant image becomes zeros)."""
    lo, hi = float(np.min(img)), float(np.max(img))
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def _center_crop(img: np.ndarray, size: int) -> np.ndarray:
    top = (img.shape[0] - size) // 2
    left = (img.shape[1] - size) // 2
    return img[top:top + size, left:left + size]


def _multiscale_blur(canvas: np.ndarray) -> np.ndarray:
    """PtychoPINN's line-object filter: ``gf(sigma 1) + 2 gf(sigma 5) + 5 gf(sigma 10)``."""
    return (gaussian_filter(canvas, 1.0) + 2.0 * gaussian_filter(canvas, 5.0)
            + 5.0 * gaussian_filter(canvas, 10.0))


def _draw_segments(canvas: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Draw 1-px line segments ``starts[k] -> ends[k]`` ((row, col) int arrays) onto ``canvas`` in place."""
    from skimage.draw import line

    h, w = canvas.shape
    rows, cols = [], []
    for (r0, c0), (r1, c1) in zip(starts, ends):
        rr, cc = line(int(r0), int(c0), int(r1), int(c1))
        rows.append(rr)
        cols.append(cc)
    if rows:
        rr = np.clip(np.concatenate(rows), 0, h - 1)
        cc = np.clip(np.concatenate(cols), 0, w - 1)
        canvas[rr, cc] = 1.0


def lines_amplitude(size: int, rng: np.random.Generator, n_lines: int = N_LINES) -> np.ndarray:
    """``n_lines`` random 1-px segments on a 2S×2S canvas, multiscale blur, centre crop S×S, max 1."""
    big = 2 * size
    canvas = np.zeros((big, big), dtype=np.float64)
    endpoints = rng.integers(0, big, size=(n_lines, 2, 2))
    _draw_segments(canvas, endpoints[:, 0], endpoints[:, 1])
    return _normalise_max(_center_crop(_multiscale_blur(canvas), size))


def diagonals_amplitude(size: int, rng: np.random.Generator, n_lines: int = N_LINES // 4) -> np.ndarray:
    """Like ``lines`` but every segment runs at +45° or -45°."""
    big = 2 * size
    canvas = np.zeros((big, big), dtype=np.float64)
    starts = rng.integers(0, big, size=(n_lines, 2))
    lengths = rng.integers(size // 8, size, size=n_lines)
    signs = rng.choice(np.array([-1, 1]), size=n_lines)
    ends = np.stack([starts[:, 0] + lengths, starts[:, 1] + signs * lengths], axis=1)
    ends = np.clip(ends, 0, big - 1)
    _draw_segments(canvas, starts, ends)
    return _normalise_max(_center_crop(_multiscale_blur(canvas), size))


def points_amplitude(size: int, rng: np.random.Generator, n_points: int = N_POINTS) -> np.ndarray:
    """Random point scatterers blurred by gaussians of sigma 1 and 3 px, max 1."""
    canvas = np.zeros((size, size), dtype=np.float64)
    idx = rng.integers(0, size, size=(n_points, 2))
    np.add.at(canvas, (idx[:, 0], idx[:, 1]), rng.uniform(0.5, 1.0, size=n_points))
    return _normalise_max(gaussian_filter(canvas, 1.0) + 0.5 * gaussian_filter(canvas, 3.0))


def grf_amplitude(size: int, rng: np.random.Generator, power: float = 3.0) -> np.ndarray:
    """Gaussian random field with power spectrum ``|k|**-power``, min-max scaled to [0, 1]."""
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.fftfreq(size)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = np.inf  # no DC power
    amplitude_spectrum = k ** (-power / 2.0)
    noise = rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))
    field = np.real(np.fft.ifft2(noise * amplitude_spectrum))
    return _normalise_range(field)


def skimage_amplitude(name: str, size: int) -> np.ndarray:
    """A ``skimage.data`` image (grey, centre-cropped square, resized to ``size``), scaled to [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    if name not in SKIMAGE_OBJECTS:
        raise ValueError(f"unknown scikit-image object {name!r}: choose one of {', '.join(SKIMAGE_OBJECTS)}")
    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
    if img.ndim == 3:
        img = rgb2gray(img[..., :3])
    side = min(img.shape)
    img = _center_crop(img, side)
    img = resize(img, (size, size), order=1, anti_aliasing=side > size, preserve_range=True)
    return _normalise_range(img)


_GENERATORS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "lines": lines_amplitude,
    "grf": grf_amplitude,
    "points": points_amplitude,
    "diagonals": diagonals_amplitude,
}


def object_amplitude(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Amplitude image in [0, 1], float64 (size, size), of object ``name``."""
    if name in _GENERATORS:
        return _GENERATORS[name](size, rng)
    if name in SKIMAGE_OBJECTS:
        return skimage_amplitude(name, size)
    raise ValueError(f"unknown object {name!r}: choose one of "
                     f"{', '.join(SYNTHETIC_OBJECTS + SKIMAGE_OBJECTS)}")


def tanh_phase(amplitude: np.ndarray) -> np.ndarray:
    """PtychoPINN's phase: ``pi * tanh((A - max(A)/2) / (3 * mean(A)))`` (zero for an all-zero A)."""
    mean = float(np.mean(amplitude))
    if not mean > 0:
        return np.zeros_like(amplitude)
    return np.pi * np.tanh((amplitude - np.max(amplitude) / 2.0) / (3.0 * mean))


def independent_phase(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """An independent phase image in [-pi/2, pi/2].

    A fresh draw of the same synthetic kind; for a scikit-image object (which has only one
    realisation) a Gaussian random field.
    """
    kind = name if name in _GENERATORS else "grf"
    image = _normalise_range(_GENERATORS[kind](size, rng))
    return INDEPENDENT_PHASE_RANGE * (2.0 * image - 1.0)


def make_object(name: str, size: int, rng: np.random.Generator, phase: str = "tanh") -> np.ndarray:
    """Complex object ``A * exp(i phi)``.

    Parameters
    ----------
    name : ``lines`` | ``grf`` | ``points`` | ``diagonals`` | a name in ``SKIMAGE_OBJECTS``
    size : side S (px)
    rng : numpy Generator (amplitude first, then an independent phase if requested)
    phase : ``none`` (phi=0) | ``tanh`` (phi from the amplitude) | ``independent``

    Returns
    -------
    (size, size) complex64
    """
    if phase not in PHASE_MODES:
        raise ValueError(f"unknown phase mode {phase!r}: choose one of {', '.join(PHASE_MODES)}")
    amplitude = object_amplitude(name, size, rng)
    if phase == "none":
        phi = np.zeros_like(amplitude)
    elif phase == "tanh":
        phi = tanh_phase(amplitude)
    else:
        phi = independent_phase(name, size, rng)
    return (amplitude * np.exp(1j * phi)).astype(np.complex64)
