"""Measured scans in, contract NPZ out: CXI, PtyLab HDF5, Tike-style NPZ and contract NPZ readers.

``ptycho-exp data import FILE --format cxi|ptylab|tike|npz --N 64 --out scan.npz`` turns a file as a
beamline or another package writes it into the contract (:mod:`ptycho_exp.data.npz`): amplitude
``sqrt(counts)`` with the zero frequency at ``(N/2, N/2)``, patch centres in object pixels, an
``(N, N)`` probe on the same pixel grid.

Geometry
--------
- The object (real-space) pixel of an ``n``-pixel detector window is ``dx = wavelength * z / (n * dxd)``
  (``z`` the sample-detector distance, ``dxd`` the detector pixel). Cropping the detector to ``N``
  pixels around the zero frequency keeps ``dxd`` and gives ``dx = wavelength z / (N dxd)``; binning by
  ``b`` (``--bin``) takes ``N*b`` pixels and sums ``b x b`` blocks, so ``dx = wavelength z / (N b dxd)``.
- Positions in metres become ``p / dx`` pixels, placed so the smallest coordinate is ``N/2`` (the patch
  touches the object's first row/column). CXI stores the *sample* translation (x, y, z): the beam's
  position on the sample is minus it. PtyLab's ``encoder`` (row, col) is the beam position itself.
  Tike's ``scan`` (row, col) is the corner of the probe window in pixels of the stored detector: its
  centre is ``scan + n/2``; scaled by the pixel-size ratio and kept (shifted only if a patch would
  leave the object). A contract NPZ's ``xcoords``/``ycoords`` are handled the same way.
- A probe stored with side ``n_p`` is taken to be sampled at ``wavelength z / (n_p dxd)`` (the pixel of
  a reconstruction from ``n_p`` detector pixels). It is resampled to the output ``dx`` by cropping or
  padding its spectrum (total power kept) and then centre-cropped or padded to ``N x N``.

Patterns
--------
Frames are read from HDF5 in chunks (never the whole file). Negative counts are clipped to 0;
saturated pixels (the integer dtype's maximum, or ``--saturation``) and the detector's bad-pixel mask
are set to 0; all three are counted and reported. The zero frequency is *found* (brightest pixel of
the median-filtered mean pattern, checked by its centre of mass) and compared with where the format
puts it; patterns with it at the corners are ``fftshift``-ed.

Every geometry fact the file lacks is an :class:`~ptycho_exp.data.npz.DataContractError` naming the
key and the command-line option that supplies it.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptycho_exp.data.container import ScanData
from ptycho_exp.data.npz import DataContractError, DataPathError

FORMATS = ("cxi", "ptylab", "tike", "npz")
_CHUNK = 64  # frames per read
_MEAN_FRAMES = 256  # frames averaged to find the zero frequency
_CORNER = "corner"
_CENTRE = "centre"

_CXI_DATA = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
_CXI_DETECTOR = "entry_1/instrument_1/detector_1"
_CXI_SOURCE = "entry_1/instrument_1/source_1"
_CXI_TRANSLATION = ("entry_1/sample_1/geometry_1/translation", "entry_1/sample_1/geometry/translation",
                    "entry_1/data_1/translation")
_CXI_PROBE = ("entry_1/instrument_1/source_1/illumination", "entry_1/instrument_1/source_1/probe",
              "entry_1/data_1/probe", "entry_1/probe")


@dataclass
class ImportOptions:
    """How to turn a measured scan into a contract scan.

    Attributes
    ----------
    N : output pattern side (even)
    bin : detector binning factor b (1: plain crop of N pixels around the zero frequency)
    frames : ``(start, stop)`` frame range (Python slice semantics) or None for all
    distance, wavelength, pixel_size : geometry in metres, overriding (or supplying) the file's
    energy_ev : photon energy (eV), an alternative to ``wavelength``
    saturation : counts at or above which a pixel is saturated (default: the integer dtype's maximum)
    mask_good : the file's mask marks good pixels with non-zero values (default: non-zero = bad)
    probe_path : NPZ with ``probeGuess`` when the file has no probe
    """

    N: int = 64
    bin: int = 1
    frames: tuple[int | None, int | None] | None = None
    distance: float | None = None
    wavelength: float | None = None
    energy_ev: float | None = None
    pixel_size: float | None = None
    saturation: float | None = None
    mask_good: bool = False
    probe_path: str | None = None


@dataclass
class Source:
    """A measured scan as opened from a file: lazy frames plus the geometry found (None = absent)."""

    path: str
    fmt: str
    frames: Any  # (n, H, W) intensity, h5py.Dataset or ndarray; read in chunks
    positions: np.ndarray  # (n, 2) [y, x]: beam position in metres, or window centre in file pixels
    position_unit: str  # "m" or "px"
    zero_at: str  # where the format puts the zero frequency: "centre" or "corner"
    wavelength: float | None = None
    distance: float | None = None
    pixel_size: tuple[float, float] | None = None  # (y, x) metres
    mask: np.ndarray | None = None  # (H, W) bool, True = bad
    probe: np.ndarray | None = None
    probe_key: str | None = None
    keys: dict = field(default_factory=dict)  # fact -> file key, for messages
    notes: list = field(default_factory=list)


# --------------------------------------------------------------------------- small pure helpers

def _fail(path: str, key: str | None, problem: str, fix: str) -> DataContractError:
    where = f"{path}: {key}" if key else f"{path}:"
    return DataContractError(f"{where} {problem}; fix: {fix}", path=path, key=key)


def energy_to_wavelength(energy_ev: float) -> float:
    """Photon wavelength (m) of ``energy_ev`` electron-volts: ``h c / (e E)``."""
    from scipy.constants import c, e, h

    return float(h * c / (e * float(energy_ev)))


def object_pixel_size(wavelength: float, distance: float, n: int, detector_pixel: float) -> float:
    """Real-space pixel ``wavelength * distance / (n * detector_pixel)`` of an ``n``-pixel detector window."""
    return float(wavelength) * float(distance) / (int(n) * float(detector_pixel))


def parse_frames(text: str | None) -> tuple[int | None, int | None] | None:
    """``"a:b"``, ``"a:"`` or ``":b"`` -> ``(a, b)`` (None for an open end); None for None."""
    if text is None:
        return None
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return tuple(int(p) if p.strip() else None for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise ValueError(f"--frames {text!r}: expected START:STOP (e.g. 0:500, 100:, :200)") from None


def clean_frames(frames: np.ndarray, bad: np.ndarray | None, saturation: float | None
                 ) -> tuple[np.ndarray, int, int]:
    """Float64 copy of ``frames`` with negative counts clipped and bad/saturated pixels set to 0.

    Parameters
    ----------
    frames : (n, H, W) counts, any real dtype
    bad : (H, W) bool mask of bad pixels (True = bad) or None
    saturation : counts at or above which a pixel is saturated, or None

    Returns
    -------
    (cleaned, negative values clipped, saturated values zeroed)
    """
    x = np.asarray(frames, dtype=np.float64)
    saturated = 0
    if saturation is not None:
        hot = x >= float(saturation)
        saturated = int(np.count_nonzero(hot))
        x[hot] = 0.0
    negative = x < 0
    clipped = int(np.count_nonzero(negative))
    x[negative] = 0.0
    if bad is not None:
        x[:, bad] = 0.0
    return x, clipped, saturated


def find_zero_frequency(mean_pattern: np.ndarray, iterations: int = 3) -> tuple[tuple[int, int], tuple[float, float]]:
    """Pixel of the zero frequency of a mean diffraction pattern, and its local centre of mass.

    Starts at the brightest pixel of the 3x3 median-filtered pattern (a single hot pixel cannot win),
    then moves to the rounded centre of mass of the window of half-width ``max(2, min(H, W) // 16)``
    around it, ``iterations`` times (the brightest pixel of a few patterns can sit a pixel off the
    symmetry centre; the centre of mass of a centro-symmetric mean intensity does not). Indices wrap
    around the edges, so a zero frequency at the corners is found at (0, 0).

    Returns
    -------
    ((row, col) integer zero frequency, (row, col) centre of mass around it)
    """
    from scipy.ndimage import median_filter

    m = np.asarray(mean_pattern, dtype=np.float64)
    r, c = (int(v) for v in np.unravel_index(int(np.argmax(median_filter(m, size=3, mode="wrap"))), m.shape))
    w = max(2, min(m.shape) // 16)
    com = (float(r), float(c))
    for _ in range(max(1, int(iterations))):
        rr, cc = np.arange(r - w, r + w + 1), np.arange(c - w, c + w + 1)
        win = m[np.ix_(rr % m.shape[0], cc % m.shape[1])]
        total = float(win.sum())
        if not total > 0:
            break
        com = (float((win.sum(axis=1) * rr).sum() / total), float((win.sum(axis=0) * cc).sum() / total))
        moved = (int(np.rint(com[0])) % m.shape[0], int(np.rint(com[1])) % m.shape[1])
        if moved == (r, c):
            break
        r, c = moved
    return (r, c), com


def at_corner(peak: tuple[int, int], shape: tuple[int, int]) -> bool:
    """True when ``peak`` is nearer (with wrap-around) to pixel (0, 0) than to the centre ``(H/2, W/2)``."""
    def wrap(d, n):
        d = abs(d) % n
        return min(d, n - d)

    to_corner = np.hypot(wrap(peak[0], shape[0]), wrap(peak[1], shape[1]))
    to_centre = np.hypot(peak[0] - shape[0] // 2, peak[1] - shape[1] // 2)
    return bool(to_corner < to_centre)


def window_start(centre: int, N: int, b: int) -> int:
    """First detector pixel of the ``N*b`` window whose binned pixel ``N/2`` holds ``centre``.

    For odd ``b`` the zero frequency is the centre of its ``b x b`` block; for even ``b`` it is half a
    detector pixel before it (blocks have no centre pixel).
    """
    return int(centre) - (N // 2) * b - (b - 1) // 2


def crop_and_bin(frames: np.ndarray, centre: tuple[int, int], N: int, b: int) -> tuple[np.ndarray, int]:
    """The ``N*b`` square window around ``centre``, summed in ``b x b`` blocks to ``(n, N, N)``.

    Window pixels outside the detector are 0. Returns (binned frames, outside pixels per frame).
    """
    n, H, W = frames.shape
    side = N * b
    r0, c0 = window_start(centre[0], N, b), window_start(centre[1], N, b)
    out = np.zeros((n, side, side), dtype=np.float64)
    rs, cs = max(r0, 0), max(c0, 0)
    re_, ce = min(r0 + side, H), min(c0 + side, W)
    if re_ > rs and ce > cs:
        out[:, rs - r0:re_ - r0, cs - c0:ce - c0] = frames[:, rs:re_, cs:ce]
    outside = side * side - max(re_ - rs, 0) * max(ce - cs, 0)
    if b > 1:
        out = out.reshape(n, N, b, N, b).sum(axis=(2, 4))
    return out, int(outside)


def resample_probe(probe: np.ndarray, ratio: float, N: int) -> np.ndarray:
    """Resample ``probe`` to a pixel ``1/ratio`` times its own and centre-crop/pad it to ``N x N``.

    ``ratio = dx_old / dx_new``. The grid keeps its field of view at ``round(n_p * ratio)`` pixels by
    cropping or zero-padding the (unitary, centred) spectrum, so total power ``sum |P|**2`` is kept
    for a band-limited probe; then the real-space array is centre-cropped or zero-padded to ``N``.
    """
    p = np.asarray(probe, dtype=np.complex128)
    n_p = p.shape[-1]
    m = int(round(n_p * float(ratio)))
    if m < 2:
        raise ValueError(f"probe of {n_p} px resampled by {ratio:g} would have {m} px")
    if m != n_p:
        spec = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(p), norm="ortho"))
        spec = _centre_fit(spec, m)
        p = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(spec), norm="ortho"))
    return _centre_fit(p, N).astype(np.complex64)


def _centre_fit(a: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop or zero-pad a square array to ``n x n`` keeping pixel ``(s/2, s/2)`` at ``(n/2, n/2)``."""
    s = a.shape[-1]
    out = np.zeros((n, n), dtype=a.dtype)
    src0, dst0 = max(s // 2 - n // 2, 0), max(n // 2 - s // 2, 0)
    k = min(s, n)
    out[dst0:dst0 + k, dst0:dst0 + k] = a[src0:src0 + k, src0:src0 + k]
    return out


def _first_mode(probe: np.ndarray, notes: list, key: str) -> np.ndarray:
    p = np.asarray(probe)
    if p.ndim > 2:
        modes = int(np.prod(p.shape[:-2]))
        p = p.reshape((-1,) + p.shape[-2:])[0]
        if modes > 1:
            notes.append(f"probe {key} holds {modes} modes: the first is used")
    return p


# --------------------------------------------------------------------------- opening files

def _h5_read(f, key: str):
    if key not in f:
        return None
    value = f[key][()]
    return value.decode() if isinstance(value, bytes) else value


def _h5_scalar(f, key: str) -> float | None:
    value = _h5_read(f, key)
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    return float(arr[0]) if arr.size else None


def _open_h5(path: str):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise _fail(path, None, f"is not a readable HDF5 file ({exc})",
                    "check the path and --format (cxi and ptylab read HDF5; tike and npz read NPZ)") from None


def open_cxi(f, path: str) -> Source:
    """Describe a CXI file ``f`` (open h5py.File): frames, translations, geometry, mask, probe."""
    data_key = next((k for k in _CXI_DATA if k in f), None)
    if data_key is None:
        raise _fail(path, " or ".join(_CXI_DATA), "missing (no diffraction frames)",
                    "write the (n, H, W) frames at entry_1/data_1/data")
    trans_key = next((k for k in _CXI_TRANSLATION if k in f), None)
    if trans_key is None:
        raise _fail(path, _CXI_TRANSLATION[0], "missing (no scan positions)",
                    "write the sample translations (n, 3) in metres at entry_1/sample_1/geometry_1/translation")
    trans = np.asarray(f[trans_key][()], dtype=np.float64)
    if trans.ndim != 2 or trans.shape[1] < 2:
        raise _fail(path, trans_key, f"has shape {trans.shape}", "store (n, 3) translations (x, y, z) in metres")
    positions = -trans[:, [1, 0]]  # beam on the sample = -(sample translation); [y, x]
    src = Source(path=path, fmt="cxi", frames=f[data_key], positions=positions, position_unit="m",
                 zero_at=_CENTRE, keys={"data": data_key, "positions": trans_key})
    src.distance = _h5_scalar(f, f"{_CXI_DETECTOR}/distance")
    px, py = _h5_scalar(f, f"{_CXI_DETECTOR}/x_pixel_size"), _h5_scalar(f, f"{_CXI_DETECTOR}/y_pixel_size")
    if px is not None or py is not None:
        src.pixel_size = (py if py is not None else px, px if px is not None else py)
    src.wavelength = _h5_scalar(f, f"{_CXI_SOURCE}/wavelength")
    if src.wavelength is None:
        energy = _h5_scalar(f, f"{_CXI_SOURCE}/energy")
        if energy is not None and energy > 0:
            from scipy.constants import e

            src.wavelength = energy_to_wavelength(energy / e)  # CXI energy is in joules
    src.keys.update(distance=f"{_CXI_DETECTOR}/distance", pixel_size=f"{_CXI_DETECTOR}/x_pixel_size",
                    wavelength=f"{_CXI_SOURCE}/energy (or wavelength)")
    if f"{_CXI_DETECTOR}/mask" in f:
        src.mask = np.asarray(f[f"{_CXI_DETECTOR}/mask"][()])
        src.keys["mask"] = f"{_CXI_DETECTOR}/mask"
    probe_key = next((k for k in _CXI_PROBE if k in f), None)
    if probe_key is not None:
        src.probe, src.probe_key = _first_mode(f[probe_key][()], src.notes, probe_key), probe_key
    src.keys["probe"] = _CXI_PROBE[0]
    return src


def open_ptylab(f, path: str) -> Source:
    """Describe a PtyLab HDF5 file ``f``: ``ptychogram``, ``encoder`` (m), ``wavelength``, ``zo``, ``dxd``."""
    for key in ("ptychogram", "encoder"):
        if key not in f:
            what = "(n, Nd, Nd) intensity" if key == "ptychogram" else "(n, 2) beam positions (row, col) in metres"
            raise _fail(path, key, "missing", f"write the {what} as '{key}'")
    encoder = np.asarray(f["encoder"][()], dtype=np.float64)
    if encoder.ndim != 2 or encoder.shape[1] != 2:
        raise _fail(path, "encoder", f"has shape {encoder.shape}", "store (n, 2) positions (row, col) in metres")
    src = Source(path=path, fmt="ptylab", frames=f["ptychogram"], positions=encoder, position_unit="m",
                 zero_at=_CENTRE, keys={"data": "ptychogram", "positions": "encoder", "distance": "zo",
                                        "pixel_size": "dxd", "wavelength": "wavelength", "probe": "probe"})
    src.wavelength, src.distance = _h5_scalar(f, "wavelength"), _h5_scalar(f, "zo")
    dxd = _h5_scalar(f, "dxd")
    src.pixel_size = None if dxd is None else (dxd, dxd)
    if "probe" in f:
        src.probe, src.probe_key = _first_mode(f["probe"][()], src.notes, "probe"), "probe"
    return src


def _load_npz(path: str):
    if not os.path.isfile(path):
        raise DataPathError(f"data file {path!r} does not exist or is not a file; fix: check the path", path=path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _fail(path, None, f"is not a readable NPZ archive ({type(exc).__name__}: {exc})",
                    "check the path and --format (tike and npz read NPZ; cxi and ptylab read HDF5)") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _fail(path, None, "is a single .npy array, not an NPZ archive", "save the arrays with np.savez")
    return archive


def _npz_key(archive, path: str, key: str, fix: str) -> np.ndarray:
    if key not in archive.files:
        raise _fail(path, key, f"missing (keys: {sorted(archive.files)})", fix)
    try:
        return archive[key]
    except ValueError as exc:
        raise _fail(path, key, f"cannot be read without pickle ({exc})",
                    "re-save it as a plain numeric array") from None


def open_tike(path: str) -> Source:
    """Describe a Tike-style NPZ: ``data`` intensity (zero frequency at the corners), ``scan`` window corners."""
    with _load_npz(path) as archive:
        data = _npz_key(archive, path, "data", "save the (n, W, W) intensity as 'data'")
        scan = _npz_key(archive, path, "scan", "save the probe-window corners (n, 2) [row, col] px as 'scan'")
        probe = archive["probe"] if "probe" in archive.files else None
    if data.ndim != 3:
        raise _fail(path, "data", f"has shape {data.shape}", "store (n, W, W) intensity")
    scan = np.asarray(scan, dtype=np.float64).reshape(-1, 2)
    src = Source(path=path, fmt="tike", frames=data, positions=scan + data.shape[-1] / 2.0, position_unit="px",
                 zero_at=_CORNER, keys={"data": "data", "positions": "scan", "probe": "probe"})
    if probe is not None:
        src.probe, src.probe_key = _first_mode(probe, src.notes, "probe"), "probe"
    return src


def open_contract(path: str) -> Source:
    """Describe a contract NPZ (amplitude, centred zero frequency, centres in px) as intensity."""
    from ptycho_exp.data.npz import load_contract_npz

    scan = load_contract_npz(path, check_intensity=False)
    src = Source(path=path, fmt="npz", frames=np.square(scan.diffraction, dtype=np.float64),
                 positions=scan.positions, position_unit="px", zero_at=_CENTRE,
                 keys={"data": scan.meta.get("diffraction_key", "diffraction"), "positions": "xcoords/ycoords",
                       "probe": "probeGuess"}, probe=scan.probe, probe_key="probeGuess")
    if scan.object is not None or scan.patches is not None:
        src.notes.append("objectGuess and Y are not carried over (they would need resampling)")
    return src


# --------------------------------------------------------------------------- the import

def _need(src: Source, value, fact: str, option: str):
    if value is None or not np.all(np.isfinite(value)) or not np.all(np.asarray(value) > 0):
        raise _fail(src.path, src.keys.get(fact, fact), "missing" if value is None else f"invalid ({value})",
                    f"pass {option}")
    return value


def _geometry(src: Source, opts: ImportOptions) -> dict:
    """Object pixel (m) of the output, from the file's geometry and the options (options win)."""
    wavelength = opts.wavelength or (energy_to_wavelength(opts.energy_ev) if opts.energy_ev else None)
    wavelength = _need(src, wavelength or src.wavelength, "wavelength", "--energy-ev EV or --wavelength METRES")
    distance = _need(src, opts.distance or src.distance, "distance", "--distance METRES")
    pixel = (opts.pixel_size, opts.pixel_size) if opts.pixel_size else src.pixel_size
    pixel = _need(src, pixel, "pixel_size", "--pixel-size METRES")
    if not np.isclose(pixel[0], pixel[1], rtol=1e-6):
        raise _fail(src.path, src.keys.get("pixel_size"), f"detector pixels are not square ({pixel[0]:g} x "
                    f"{pixel[1]:g} m)", "pass --pixel-size METRES to treat them as square")
    return {"wavelength_m": float(wavelength), "distance_m": float(distance), "detector_pixel_m": float(pixel[1])}


def _frame_range(opts: ImportOptions, n: int, path: str) -> range:
    start, stop = opts.frames or (None, None)
    rng = range(*slice(start, stop).indices(n))
    if len(rng) == 0:
        raise _fail(path, None, f"--frames {start}:{stop} selects no frame of {n}", f"choose a range within 0:{n}")
    return rng


def _bad_pixels(src: Source, opts: ImportOptions, shape: tuple[int, int]) -> np.ndarray | None:
    if src.mask is None:
        return None
    mask = np.asarray(src.mask)
    key = src.keys.get("mask", "mask")
    if mask.shape != shape:
        raise _fail(src.path, key, f"has shape {mask.shape}, frames are {shape}", "store an (H, W) pixel mask")
    bad = mask == 0 if opts.mask_good else mask != 0
    if bad.mean() > 0.5:
        raise _fail(src.path, key, f"marks {bad.mean():.0%} of the pixels bad",
                    "pass --mask-good if non-zero marks good pixels" if not opts.mask_good
                    else "drop --mask-good (non-zero marks bad pixels)")
    return bad


def import_scan(path, fmt: str, opts: ImportOptions) -> tuple[ScanData, dict]:
    """Read a measured scan and convert it to a contract :class:`ScanData` (nothing is written).

    Parameters
    ----------
    path : file to read
    fmt : ``cxi`` | ``ptylab`` | ``tike`` | ``npz``
    opts : options (output N, binning, frames, geometry overrides)

    Returns
    -------
    (scan, report): the scan (amplitude ``sqrt(counts)``, so ``meta['photon_scale'] = 1``) and a dict
    of what was done (frames, geometry, zero frequency, clipped/saturated/masked counts, photons).
    """
    path = os.fspath(path)
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    N, b = int(opts.N), int(opts.bin)
    if N < 4 or N % 2:
        raise ValueError(f"--N {N}: the pattern side must be even and >= 4")
    if b < 1:
        raise ValueError(f"--bin {b}: the binning factor must be >= 1")
    if fmt in ("cxi", "ptylab"):
        if not os.path.isfile(path):
            raise DataPathError(f"data file {path!r} does not exist or is not a file; fix: check the path",
                                path=path)
        with _open_h5(path) as f:
            src = open_cxi(f, path) if fmt == "cxi" else open_ptylab(f, path)
            return _convert(src, opts)
    return _convert(open_tike(path) if fmt == "tike" else open_contract(path), opts)


def _convert(src: Source, opts: ImportOptions) -> tuple[ScanData, dict]:
    N, b = int(opts.N), int(opts.bin)
    frames = src.frames
    if len(frames.shape) != 3:
        raise _fail(src.path, src.keys["data"], f"has shape {frames.shape}", "store (n, H, W) frames")
    n_all, H, W = (int(s) for s in frames.shape)
    if src.positions.shape[0] != n_all:
        raise _fail(src.path, src.keys["positions"], f"has {src.positions.shape[0]} positions for {n_all} frames",
                    "store one position per frame")
    if not np.all(np.isfinite(src.positions)):
        raise _fail(src.path, src.keys["positions"], "holds NaN/Inf", "repair the positions")
    idx = _frame_range(opts, n_all, src.path)
    geometry = _geometry(src, opts) if src.position_unit == "m" else {}
    if geometry:
        dx = object_pixel_size(geometry["wavelength_m"], geometry["distance_m"], N * b, geometry["detector_pixel_m"])
    else:  # positions in pixels of the stored detector: only ratios matter, dx is in those pixels
        if H != W:
            raise _fail(src.path, src.keys["data"], f"has non-square frames {H}x{W}", "store square frames")
        dx = H / float(N * b)
    bad = _bad_pixels(src, opts, (H, W))
    saturation = opts.saturation
    dtype = np.dtype(frames.dtype)
    if saturation is None and dtype.kind in "iu":
        saturation = float(np.iinfo(dtype).max)

    # zero frequency: mean of up to _MEAN_FRAMES frames spread over the range, read in chunks
    pick = np.unique(np.linspace(idx.start, idx[-1], num=min(len(idx), _MEAN_FRAMES)).round().astype(int))
    total = np.zeros((H, W))
    for s in range(0, pick.size, _CHUNK):
        total += clean_frames(frames[list(pick[s:s + _CHUNK])], bad, saturation)[0].sum(axis=0)
    peak, com = find_zero_frequency(total / pick.size)
    corner = at_corner(peak, (H, W))
    if corner:
        peak = ((peak[0] + H // 2) % H, (peak[1] + W // 2) % W)
        bad = None if bad is None else np.fft.fftshift(bad)
    expected = (0, 0) if src.zero_at == _CORNER else (H // 2, W // 2)

    out = np.empty((len(idx), N, N), dtype=np.float32)
    clipped = saturated = 0
    outside = 0
    for k in range(0, len(idx), _CHUNK):
        sel = idx[k:k + _CHUNK]
        raw = frames[sel.start:sel.stop:sel.step] if sel.step == 1 else frames[list(sel)]
        raw = np.asarray(raw)
        if corner:
            raw = np.fft.fftshift(raw, axes=(-2, -1))
        clean, c1, c2 = clean_frames(raw, bad, saturation)
        clipped, saturated = clipped + c1, saturated + c2
        binned, outside = crop_and_bin(clean, peak, N, b)
        out[k:k + len(sel)] = np.sqrt(binned)

    positions = _positions(src, np.asarray(src.positions)[list(idx)], dx, N)
    probe, probe_note = _probe(src, opts, geometry, dx, N, b)
    counts = np.sum(np.square(out, dtype=np.float64), axis=(1, 2))
    report = {
        "source": src.path, "format": src.fmt, "frames": [idx.start, idx.stop], "n_frames_in_file": n_all,
        "detector_shape": [H, W], "N": N, "bin": b, **geometry,
        "dx_m": dx if geometry else None, "dx_over_file_px": None if geometry else dx,
        "zero_frequency_found": [int(v) for v in ((peak[0] - H // 2) % H, (peak[1] - W // 2) % W)]
        if corner else list(peak),
        "zero_frequency_expected": list(expected), "zero_frequency_com": [round(float(v), 2) for v in com],
        "fftshifted": corner, "clipped_negative": clipped, "saturated_zeroed": saturated,
        "saturation": saturation, "masked_pixels": 0 if bad is None else int(bad.sum()),
        "window_outside_detector_px": outside,
        "counts_per_pattern": {"mean": float(counts.mean()), "min": float(counts.min()),
                               "max": float(counts.max())},
        "probe": probe_note, "notes": list(src.notes),
    }
    meta = {"photon_scale": 1.0, "imported": {k: v for k, v in report.items() if k != "notes"}}
    return ScanData(diffraction=out, positions=positions, probe=probe, meta=meta), report


def _positions(src: Source, pos: np.ndarray, dx: float, N: int) -> np.ndarray:
    """Contract positions [y, x] in output pixels: metres / dx placed at N/2, or file px scaled and kept."""
    px = pos / dx
    if src.position_unit == "m":
        return px - px.min(axis=0) + N / 2.0
    low = px.min(axis=0)
    return px + np.maximum(N / 2.0 - low, 0.0)


def _probe(src: Source, opts: ImportOptions, geometry: dict, dx: float, N: int, b: int) -> tuple[np.ndarray, str]:
    if opts.probe_path:
        from ptycho_exp.physics.probe import load_probe

        probe, origin = load_probe(opts.probe_path), f"--probe {opts.probe_path}"
    elif src.probe is not None:
        probe, origin = np.asarray(src.probe), f"{src.probe_key}"
    else:
        raise _fail(src.path, src.keys.get("probe", "probe"), "missing (the file has no probe)",
                    "pass --probe PROBE.npz (an NPZ holding 'probeGuess')")
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1] or not np.all(np.isfinite(probe)):
        raise _fail(src.path, src.probe_key or "probe", f"has shape {probe.shape} or non-finite values",
                    "store a square (n, n) complex probe")
    n_p = probe.shape[0]
    if geometry:
        dx_probe = object_pixel_size(geometry["wavelength_m"], geometry["distance_m"], n_p,
                                     geometry["detector_pixel_m"])
    else:
        dx_probe = src.frames.shape[-1] / float(n_p)  # in file pixels
    ratio = dx_probe / dx
    out = resample_probe(probe, ratio, N)
    return out, f"{origin} ({n_p}x{n_p}, resampled x{ratio:.4g} to {N}x{N})"


# --------------------------------------------------------------------------- report and CLI

def format_report(report: dict, out: str | None = None) -> str:
    """A short human-readable summary of :func:`import_scan`'s report."""
    H, W = report["detector_shape"]
    a, z = report["frames"]
    lines = [f"imported {report['source']} ({report['format']}): frames {a}:{z} of {report['n_frames_in_file']}, "
             f"{H}x{W} detector -> {z - a} patterns of {report['N']}x{report['N']} "
             f"({'bin ' + str(report['bin']) + ', ' if report['bin'] > 1 else ''}crop around the zero frequency)"]
    if report.get("dx_m"):
        lines.append(f"geometry: wavelength {report['wavelength_m']:.4g} m, distance {report['distance_m']:.4g} m, "
                     f"detector pixel {report['detector_pixel_m']:.4g} m -> object pixel dx {report['dx_m']:.4g} m")
    else:
        lines.append(f"geometry: object pixel = {report['dx_over_file_px']:.4g} x the file's pixel")
    found, exp = report["zero_frequency_found"], report["zero_frequency_expected"]
    lines.append(f"zero frequency found at {tuple(found)} (centre of mass {tuple(report['zero_frequency_com'])}), "
                 f"expected {tuple(exp)}" + ("; patterns fftshifted" if report["fftshifted"] else "")
                 + ("" if tuple(found) == tuple(exp) else "; the window is centred on the found pixel"))
    c = report["counts_per_pattern"]
    lines.append(f"photons per pattern: mean {c['mean']:.4g}, min {c['min']:.4g}, max {c['max']:.4g}")
    sat = report["saturation"]
    lines.append(f"clipped {report['clipped_negative']} negative values; zeroed {report['saturated_zeroed']} "
                 f"saturated values (>= {sat:g})" if sat is not None else
                 f"clipped {report['clipped_negative']} negative values; no saturation level (pass --saturation)")
    lines[-1] += f"; {report['masked_pixels']} masked pixels set to 0"
    if report["window_outside_detector_px"]:
        lines.append(f"WARNING: {report['window_outside_detector_px']} px of each window lie outside the detector "
                     "and are 0; use a smaller --N or --bin")
    lines.append(f"probe: {report['probe']}")
    lines += [f"note: {n}" for n in report["notes"]]
    if out:
        lines.append(f"wrote {out}")
    return "\n".join(lines)


def import_file(path, fmt: str, out, opts: ImportOptions) -> str:
    """Import ``path`` and write the contract NPZ ``out`` atomically; returns the summary text."""
    from ptycho_exp.data.npz import save_contract_npz

    scan, report = import_scan(path, fmt, opts)
    save_contract_npz(out, scan)
    return format_report(report, os.fspath(out))


def add_import_command(dsub: argparse._SubParsersAction) -> None:
    """Add ``data import`` to the ``data`` subcommands."""
    p = dsub.add_parser("import", help="convert a CXI / PtyLab HDF5 / Tike NPZ / contract NPZ scan to the contract")
    p.add_argument("path")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", required=True, help="output contract .npz")
    p.add_argument("--N", type=int, default=64, help="output pattern side (default 64)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--crop", action="store_true", help="crop N detector pixels around the zero frequency (default)")
    mode.add_argument("--bin", type=int, default=1, metavar="B", help="bin B x B detector pixels (window N*B)")
    p.add_argument("--frames", metavar="A:B", help="frame range, e.g. 0:500")
    p.add_argument("--distance", type=float, metavar="METRES", help="sample-detector distance")
    wl = p.add_mutually_exclusive_group()
    wl.add_argument("--energy-ev", type=float, metavar="EV", help="photon energy")
    wl.add_argument("--wavelength", type=float, metavar="METRES")
    p.add_argument("--pixel-size", type=float, metavar="METRES", help="detector pixel size")
    p.add_argument("--saturation", type=float, metavar="COUNTS", help="counts at or above which a pixel is saturated")
    p.add_argument("--mask-good", action="store_true", help="the file's mask marks good pixels with non-zero values")
    p.add_argument("--probe", metavar="NPZ", help="NPZ with probeGuess, for files without a probe")


def run_import(args: argparse.Namespace) -> int:
    """Handle ``data import``: print the summary; bad input raises ValueError (exit 2 in the CLI)."""
    opts = ImportOptions(N=args.N, bin=args.bin, frames=parse_frames(args.frames), distance=args.distance,
                         wavelength=args.wavelength, energy_ev=args.energy_ev, pixel_size=args.pixel_size,
                         saturation=args.saturation, mask_good=args.mask_good, probe_path=args.probe)
    print(import_file(args.path, args.fmt, args.out, opts))
    return 0

