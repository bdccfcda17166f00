"""Illumination probes (docs/CONTRACT.md §2).

All probes are centred on pixel ``(N/2, N/2)`` (the patch centre of the position convention)
and returned as complex64 arrays of shape ``(N, N)``.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
from scipy.ndimage import gaussian_filter

PROBE_WINDOW_STD_FACTOR = 0.7 * np.pi ** 2  # window std = N / (0.7 pi^2)


def _radius_grid(N: int) -> np.ndarray:
    """Distance (px) of every pixel of an N×N array from the centre pixel (N/2, N/2)."""
    axis = np.arange(N) - N // 2
    return np.hypot(axis[:, None], axis[None, :])


def window_std(N: int) -> float:
    """Std (px) of the 1-D Gaussian window that defines the ideal disk: ``N / (0.7 pi^2)``."""
    return N / PROBE_WINDOW_STD_FACTOR


def disk_radius(N: int) -> float:
    """Radius (px) of the ideal disk: where the outer-product Gaussian window falls to 1/2."""
    return window_std(N) * np.sqrt(2.0 * np.log(2.0))


def ideal_disk_probe(N: int) -> np.ndarray:
    """PtychoPINN's default "ideal disk" probe.

    Outer product of a 1-D Gaussian window (std ``N/(0.7 pi^2)``), thresholded at > 0.5,
    blurred by a Gaussian of sigma 1 px; real valued. At N=64 the disk is ≈22 px across.

    Returns
    -------
    (N, N) complex64 (zero phase), peak ≈ 1, not normalised
    """
    axis = np.arange(N) - N // 2
    window = np.exp(-0.5 * (axis / window_std(N)) ** 2)
    disk = (np.outer(window, window) > 0.5).astype(np.float64)
    return gaussian_filter(disk, sigma=1.0).astype(np.complex64)


def gaussian_probe(N: int, sigma: float | None = None) -> np.ndarray:
    """Real Gaussian probe ``exp(-r**2 / (2 sigma**2))``.

    Parameters
    ----------
    N : probe size (px)
    sigma : std (px); default ``N/(0.7 pi^2)`` (same half-maximum width as the ideal disk)
    """
    sigma = window_std(N) if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"gaussian_probe: sigma must be > 0, got {sigma}")
    r = _radius_grid(N)
    return np.exp(-0.5 * (r / sigma) ** 2).astype(np.complex64)


def defocused_probe(N: int, strength: float) -> np.ndarray:
    """Ideal disk times a quadratic (defocus) phase ``exp(i * strength * (r / r_disk)**2)``.

    ``strength`` is the phase (rad) at the disk edge ``r_disk = disk_radius(N)``.
    """
    r = _radius_grid(N)
    phase = float(strength) * (r / disk_radius(N)) ** 2
    return (ideal_disk_probe(N) * np.exp(1j * phase)).astype(np.complex64)


def disk_mask(N: int, radius: float | None = None) -> np.ndarray:
    """Boolean disk of ``radius`` (default N/4) centred on (N/2, N/2)."""
    radius = N / 4.0 if radius is None else float(radius)
    return _radius_grid(N) < radius


def normalise_probe(probe: np.ndarray, probe_scale: float = 4.0) -> np.ndarray:
    """``P / (probe_scale * mean(|P| * M))`` with M the disk mask of radius N/4 (docs/CONTRACT.md §2).

    The mean runs over all N×N pixels, so afterwards ``probe_scale * mean(|P| * M) == 1``.
    """
    P = np.asarray(probe)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"normalise_probe: probe must be square (N, N), got shape {P.shape}")
    norm = float(np.mean(np.abs(P).astype(np.float64) * disk_mask(P.shape[0])))
    if not norm > 0:
        raise ValueError("normalise_probe: the probe is zero inside the central disk of radius N/4; "
                         "check that the probe is centred")
    return (P / (float(probe_scale) * norm)).astype(np.complex64)


def probe_diameter(probe: np.ndarray) -> float:
    """Equivalent diameter (px) of the area where ``|P| > max|P|/2``."""
    mag = np.abs(np.asarray(probe))
    area = float(np.count_nonzero(mag > 0.5 * mag.max())) if mag.size and mag.max() > 0 else 0.0
    return 2.0 * np.sqrt(area / np.pi)


def load_probe(path: str) -> np.ndarray:
    """Load ``probeGuess`` (N, N) from an NPZ file (``allow_pickle=False``).

    Raises
    ------
    FileNotFoundError
        The path does not exist or is not a file.
    ValueError
        The file is not a readable NPZ, lacks ``probeGuess``, or it is not a square 2-D numeric array.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"probe file {path!r} does not exist or is not a file; "
                                "set data.probe_path to an NPZ holding 'probeGuess'")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        # numpy reports a file that is neither .npy nor a zip as "pickled data": it is simply not an NPZ
        raise ValueError(f"probe file {path!r} is not a readable NPZ (truncated, or not a zip file: "
                         f"{type(exc).__name__}); re-save it with numpy.savez(path, probeGuess=probe)") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"probe file {path!r} is a single .npy array, not an NPZ with the key "  # noqa: TRY004
                         "'probeGuess'; re-save it with numpy.savez(path, probeGuess=probe)")
    with archive:
        if "probeGuess" not in archive.files:
            raise ValueError(f"probe file {path!r} has no key 'probeGuess' (keys: {sorted(archive.files)}); "
                             "save the probe as probeGuess=<(N, N) complex64>")
        try:
            probe = archive["probeGuess"]
        except ValueError as exc:
            raise ValueError(f"probe file {path!r}: key 'probeGuess' cannot be loaded without pickle ({exc}); "
                             "re-save it as a plain numeric array") from exc
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise ValueError(f"probe file {path!r} is not a readable NPZ: 'probeGuess' is corrupt or truncated "
                             f"({type(exc).__name__}: {exc}); re-save it with numpy.savez") from exc
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1] or probe.size == 0:
        raise ValueError(f"probe file {path!r}: 'probeGuess' must be a square (N, N) array, got shape {probe.shape}")
    if not (np.issubdtype(probe.dtype, np.number)):
        raise ValueError(f"probe file {path!r}: 'probeGuess' must be numeric, got dtype {probe.dtype}")
    if not np.all(np.isfinite(probe)):
        raise ValueError(f"probe file {path!r}: 'probeGuess' contains NaN or Inf")
    return probe.astype(np.complex64)


def make_probe(name: str, N: int, probe_scale: float = 4.0, defocus: float = 0.0,
               path: str | None = None) -> np.ndarray:
    """Build and normalise a probe by name.

    Parameters
    ----------
    name : ``ideal_disk`` | ``gaussian`` | ``defocused`` | ``file``
    N : probe size (px)
    probe_scale : normalisation constant (docs/CONTRACT.md §2, default 4)
    defocus : quadratic phase (rad at the disk edge) for ``defocused``
    path : NPZ with ``probeGuess`` for ``file``

    Returns
    -------
    (N, N) complex64, normalised with :func:`normalise_probe`
    """
    if name == "ideal_disk":
        probe = ideal_disk_probe(N)
    elif name == "gaussian":
        probe = gaussian_probe(N)
    elif name == "defocused":
        probe = defocused_probe(N, defocus)
    elif name == "file":
        if not path:
            raise ValueError("probe 'file' needs a path to an NPZ holding 'probeGuess' (data.probe_path)")
        probe = load_probe(path)
        if probe.shape != (N, N):
            raise ValueError(f"probe file {path!r}: 'probeGuess' has shape {probe.shape} but data.N={N}; "
                             f"set data.N={probe.shape[0]} or use a ({N}, {N}) probe")
    else:
        raise ValueError(f"unknown probe {name!r}: choose ideal_disk, gaussian, defocused or file")
    return normalise_probe(probe, probe_scale)


def probe_power_ratio(probe: np.ndarray, support: int | None = None) -> float:
    """Power of ``probe`` on the object's support over the normalised patterns' mean energy.

    The networks see patterns normalised to a mean ``sum X**2`` of ``(N/2)**2`` (docs/CONTRACT.md §1), and the
    unitary forward model gives ``sum |X|**2 == sum |P O|**2`` (Parseval), so a patch of uniform
    amplitude ``a`` predicts patterns of energy ``a**2 * sum_support |P|**2``. The ratio returned here
    is ``sum_support |P|**2 / (N/2)**2``: the object amplitude the network must output to match the
    data is ``1 / sqrt(ratio)`` (times the object's relative amplitude).

    Parameters
    ----------
    probe : (N, N) complex array
    support : side of the central square on which the object is defined (default N, the whole patch;
        the PINN uses N/2 unless its probe_big branch is on)

    Returns
    -------
    float (float64 sums); 0 for a probe that is zero on the support
    """
    P = np.asarray(probe)
    N = P.shape[-1]
    support = N if support is None else int(support)
    lo = (N - support) // 2
    inner = P[lo:lo + support, lo:lo + support]
    power = float(np.sum(np.square(np.abs(inner).astype(np.float64))))
    return power / (N / 2.0) ** 2


def reference_power_ratio(N: int, support: int | None = None, probe_scale: float = 4.0) -> float:
    """:func:`probe_power_ratio` of the docs/CONTRACT.md §2 normalised ideal disk at size ``N``.

    The scale the PINN's sigmoid amplitude is built for: with it, an object of amplitude ~1 is
    predicted at ~0.6-0.7 (about 2.1 at N=32, 2.5 at N=64, 2.6 at N=128).
    """
    return probe_power_ratio(normalise_probe(ideal_disk_probe(int(N)), probe_scale), support)


def fitted_probe_factor(probe: np.ndarray, support: int | None = None) -> float:
    """Factor ``c`` such that ``c * probe`` has the power of the normalised ideal disk on the support.

    ``c = sqrt(reference_power_ratio(N, support) / probe_power_ratio(probe, support))``: the closed-form
    scale between a probe in arbitrary units and the normalised patterns, exactly 1 for the normalised
    ideal disk (and for any probe of the same modulus).

    Raises
    ------
    ValueError
        The probe is zero (or not finite) on the support.
    """
    P = np.asarray(probe)
    ratio = probe_power_ratio(P, support)
    if not (ratio > 0 and np.isfinite(ratio)):
        raise ValueError(f"the probe has no power on the central {support or P.shape[-1]} px of the patch "
                         f"(power ratio {ratio}); check that probeGuess is centred and not zero")
    return float(np.sqrt(reference_power_ratio(P.shape[-1], support) / ratio))
