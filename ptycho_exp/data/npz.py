"""The NPZ data contract (docs/CONTRACT.md §4), PtychoPINN-compatible.

Required keys
    ``xcoords``, ``ycoords``: (M,) real, patch centres in object px;
    ``diffraction`` (or legacy ``diff3d``): (M, N, N) real, non-negative **amplitude**;
    ``probeGuess``: (N, N) real or complex.
Optional keys
    ``objectGuess``: (H, W) ground truth / reference object; ``Y``: (M, N, N) ground-truth patches;
    ``meta_json``: a JSON string (written by :func:`save_contract_npz`). Other keys are ignored.

Files are read with ``allow_pickle=False``. Any breach raises :class:`DataContractError` (or
:class:`DataPathError` for a bad path) with one message naming the file, the key, what was expected,
what was found and the fix. Data are converted to float32 amplitude / complex64 / float64 positions.
"""
from __future__ import annotations

import json
import logging
import math
import os
import warnings
import zipfile

import numpy as np

from ptycho_exp.data.container import ScanData
from ptycho_exp.physics.forward import pattern_energy

logger = logging.getLogger("ptycho_exp.data")

DIFFRACTION_KEYS = ("diffraction", "diff3d")
REQUIRED_KEYS = ("xcoords", "ycoords", "probeGuess")
PEAK_FRACTION_LIMIT = 0.4  # amplitude data that respects oversampling keeps < ~0.25 in its brightest pixel
SUPPORT_LEAK_RATIO = 1.5  # simulated amplitude: <= 0.75 (1e4 photons) and far below at higher doses; intensity: >= 2.4
_SUPPORT_PATTERNS = 512  # patterns averaged for the autocorrelation test
_SAMPLE_VALUES = 2_000_000


class DataContractError(ValueError):
    """An NPZ file breaks the data contract; the message names the file, key, expectation and fix."""

    def __init__(self, message: str, path: str | None = None, key: str | None = None):
        super().__init__(message)
        self.path = path
        self.key = key


class DataPathError(DataContractError):
    """A data path is missing, a directory or unreadable; the message names the path."""


def _fail(path: str, key: str | None, problem: str, fix: str) -> DataContractError:
    where = f"{path}: key '{key}'" if key else f"{path}:"
    return DataContractError(f"{where} {problem}. Fix: {fix}", path=path, key=key)


def require_regular_file(path, what: str = "data file", fix: str = "check the path (data.train_path / "
                         "data.test_path) and that the file was copied") -> None:
    """Refuse a path that is not an existing, readable regular file, before anything opens it.

    A FIFO would block the reader forever and a device such as ``/dev/zero`` never ends, so only
    regular files (``stat.S_ISREG``, after following symbolic links) are accepted.

    Raises
    ------
    DataPathError
        Naming the path, what it is instead and the fix (``what`` names the file's role).
    """
    import stat

    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataPathError(f"{what} {path!r} does not exist. Fix: {fix}", path=path) from None
    except OSError as exc:  # a path through a regular file, a name too long, a loop of links
        raise DataPathError(f"{what} {path!r} cannot be reached ({exc.strerror}). Fix: {fix}", path=path) from None
    if stat.S_ISDIR(mode):
        raise DataPathError(f"{what} path {path!r} is a directory, not a file. Fix: point to the file inside it",
                            path=path)
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise DataPathError(f"{what} {path!r} is {kind}, not a regular file. Fix: save the data to a regular "
                            "file and point to it", path=path)
    if not os.access(path, os.R_OK):
        raise DataPathError(f"{what} {path!r} is not readable (permission denied). Fix: chmod +r it or "
                            "copy it somewhere readable", path=path)


def _check_path(path: str) -> None:
    require_regular_file(path)


def _read_key(archive, path: str, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise _fail(path, key, "holds a Python-object array (dtype=object); this file needs pickle, which "
                        "is never used", "re-save it with plain numeric arrays, e.g. "
                        f"np.savez(..., {key}=np.asarray(x, dtype=np.float32))") from exc
        raise _fail(path, key, f"cannot be read ({exc})", "re-save the file with numpy.savez") from exc
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise _fail(path, key, f"is corrupt or truncated ({type(exc).__name__}: {exc})",
                    "re-copy or re-save the file") from exc


def _check_numeric(path: str, key: str, arr: np.ndarray, allow_complex: bool) -> None:
    kind = arr.dtype.kind
    allowed = "iuf" + ("c" if allow_complex else "")
    if kind == "O":
        raise _fail(path, key, "holds a Python-object array (dtype=object); this file needs pickle",
                    "re-save it with plain numeric arrays")
    if kind not in allowed:
        what = "real or complex numbers" if allow_complex else "real numbers"
        raise _fail(path, key, f"has dtype {arr.dtype}: expected {what}",
                    "store it as float32" + (" or complex64" if allow_complex else ""))


def _check_finite(path: str, key: str, arr: np.ndarray) -> None:
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise _fail(path, key, f"contains {bad} NaN/Inf values", "remove or repair those entries before saving")


def _check_not_empty(path: str, key: str, arr: np.ndarray) -> None:
    if arr.size == 0:
        raise _fail(path, key, f"is empty (shape {arr.shape})", "save the actual data")


def _autocorrelation_support(probe: np.ndarray) -> np.ndarray | None:
    """Lags (fftshifted, N×N bool) where the exit wave's autocorrelation can be non-zero, or None.

    The exit wave ``P·O`` lives where ``|P| > 1 %`` of its peak, so its autocorrelation (the inverse
    FFT of the intensity) lives on the autocorrelation of that support, dilated by 2 px. None when
    that covers > 90 % of the grid (too little oversampling to tell amplitude from intensity).
    """
    from scipy.ndimage import binary_dilation

    mag = np.abs(np.asarray(probe))
    if mag.ndim != 2 or not mag.size or not mag.max() > 0:
        return None
    support = (mag > 1e-2 * mag.max()).astype(np.float64)
    lags = np.abs(np.fft.fftshift(np.fft.ifft2(np.abs(np.fft.fft2(support)) ** 2))) > 0.5
    lags = binary_dilation(lags, iterations=2)
    return None if lags.mean() > 0.9 else lags


def _support_leak(mean_intensity: np.ndarray, lags: np.ndarray) -> float:
    """Fraction of the energy of ``|IFFT(mean_intensity)|`` (an autocorrelation) outside ``lags``."""
    ac = np.abs(np.fft.fftshift(np.fft.ifft2(mean_intensity))) ** 2
    total = float(ac.sum())
    return float(ac[~lags].sum()) / total if total > 0 else 0.0


def intensity_suspicion(diffraction: np.ndarray, probe: np.ndarray | None = None) -> str | None:
    """Why ``diffraction`` looks like intensity rather than amplitude, or None.

    Four signs, any of which is reported:

    - whole numbers only (photon counts; an amplitude ``sqrt(counts)`` is mostly non-integer);
    - photon-count quanta: the smallest distinct positive values stand 1 : 2 : 3 (intensity) rather
      than 1 : sqrt 2 : sqrt 3 (amplitude);
    - after normalising the mean pattern energy to (N/2)², the brightest pixel of a typical pattern
      holds more than ``PEAK_FRACTION_LIMIT`` of its energy (amplitude data that respects the
      oversampling condition keeps well under that; squaring concentrates it);
    - with a ``probe`` (oversampled enough): the inverse FFT of the mean intensity is the exit wave's
      autocorrelation, confined to the probe support's autocorrelation. If the data are read as
      amplitude, ``IFFT(mean X**2)`` leaks outside it ``SUPPORT_LEAK_RATIO`` times more than
      ``IFFT(mean X)`` does, the data are intensity (squaring them again doubles the support).
    """
    x = np.asarray(diffraction)
    if x.size == 0:
        return None
    flat = x.reshape(-1)
    sample = flat if flat.size <= _SAMPLE_VALUES else flat[:: flat.size // _SAMPLE_VALUES + 1]
    sample = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    peak = float(np.max(sample)) if sample.size else 0.0
    if peak > 1 and (x.dtype.kind in "iu" or np.all(np.mod(sample, 1) == 0)):
        return f"all values are whole numbers up to {peak:g} (photon counts?)"
    levels = np.unique(sample[sample > 0])[:3].astype(np.float64)
    if levels.size == 3 and np.allclose(levels / levels[0], [1.0, 2.0, 3.0], rtol=2e-3):
        return "its smallest values stand 1:2:3 (photon-count quanta of intensity, amplitude gives 1:1.41:1.73)"
    energy = pattern_energy(x.reshape((-1,) + x.shape[-2:]))
    has_signal = energy > 0
    if np.any(has_signal):
        peaks = np.max(x.reshape(x.shape[0], -1), axis=1).astype(np.float64)[has_signal]
        fraction = float(np.median(peaks ** 2 / energy[has_signal]))
        if fraction > PEAK_FRACTION_LIMIT:
            return (f"its brightest pixel holds {fraction:.0%} of a typical pattern's energy "
                    f"(amplitude data keeps < {PEAK_FRACTION_LIMIT:.0%})")
    lags = _autocorrelation_support(probe) if probe is not None and x.ndim == 3 else None
    if lags is not None and lags.shape == x.shape[-2:] and np.any(has_signal):
        step = max(1, x.shape[0] // _SUPPORT_PATTERNS)
        sample = x[::step].astype(np.float64)
        as_amplitude = _support_leak(np.mean(sample ** 2, axis=0), lags)
        as_intensity = _support_leak(np.mean(sample, axis=0), lags)
        if as_amplitude > SUPPORT_LEAK_RATIO * as_intensity:
            return (f"read as amplitude, the autocorrelation (inverse FFT of the intensity) spreads outside the "
                    f"probe's support ({as_amplitude:.2g} of its energy, vs {as_intensity:.2g} read as intensity)")
    return None


def _warn_intensity(path: str, key: str, reason: str) -> None:
    message = (f"{path}: '{key}' looks like intensity, not amplitude: {reason}; take the square root "
               f"(np.sqrt({key})) before saving if it is intensity")
    logger.warning(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def _open_archive(path: str):
    try:
        archive = np.load(path, allow_pickle=False)
    except PermissionError as exc:
        raise DataPathError(f"data file {path!r} is not readable ({exc}). Fix: chmod +r it", path=path) from exc
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise _fail(path, None, f"is not a readable NPZ archive (truncated, or not a zip file: "
                    f"{type(exc).__name__}: {exc})", "re-copy the file, or re-save it with numpy.savez") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _fail(path, None, "is a single .npy array, not an NPZ archive with named keys",
                    "save with np.savez(path, xcoords=..., ycoords=..., diffraction=..., probeGuess=...)")
    return archive


def _read_npy_header(fh, path: str, key: str) -> tuple[tuple, np.dtype]:
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(fh)
        else:
            shape, _, dtype = npy_format._read_array_header(fh, version)  # (3, 0): utf-8 field names
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise _fail(path, key, f"has a corrupt array header ({exc})", "re-save the file with numpy.savez") from None
    return tuple(int(v) for v in shape), dtype


# Deflate cannot shrink data more than about 1032:1; a member claiming more is a crafted header.
_MAX_DEFLATE_RATIO = 1032


def _check_member_size(path: str, key: str, info: zipfile.ZipInfo, file_size: int) -> None:
    """Refuse a zip member whose declared sizes the file cannot hold (read nothing of its data)."""
    stored_end = info.header_offset + info.compress_size
    if info.compress_type == zipfile.ZIP_STORED:
        limit = info.compress_size
    else:
        limit = _MAX_DEFLATE_RATIO * info.compress_size + 1024
    if stored_end > file_size or info.file_size > limit:
        raise _fail(path, key, f"declares {info.file_size:,} bytes ({info.compress_size:,} stored) but the file "
                    f"holds {file_size:,} bytes: its header is corrupt or the file is truncated",
                    "re-copy the file, or re-save it with numpy.savez")


def _npz_headers(path: str) -> dict:
    """``{key: (shape, dtype)}`` of every array in an NPZ, read from the headers only (no data)."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise _fail(path, None, "is a single .npy array, not an NPZ archive with named keys",
                    "save with np.savez(path, xcoords=..., ycoords=..., diffraction=..., probeGuess=...)")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _fail(path, None, f"is not a readable NPZ archive (truncated, or not a zip file: {exc})",
                    "re-copy the file, or re-save it with numpy.savez") from None
    headers = {}
    file_size = os.path.getsize(path)
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[:-4]
            _check_member_size(path, key, info, file_size)
            try:
                with zf.open(info) as member:
                    shape, dtype = _read_npy_header(member, path, key)
                    header_bytes = member.tell()
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                raise _fail(path, key, f"is corrupt or truncated ({type(exc).__name__}: {exc})",
                            "re-copy or re-save the file") from None
            if dtype.kind == "O" or dtype.hasobject:
                raise _fail(path, key, "holds a Python-object array (dtype=object); this file needs pickle, "
                            "which is never used", "re-save it with plain numeric arrays, e.g. "
                            f"np.savez(..., {key}=np.asarray(x, dtype=np.float32))")
            declared = math.prod(shape) * dtype.itemsize
            stored = info.file_size - header_bytes
            if declared != stored:
                raise _fail(path, key, f"declares shape {shape} of {dtype} ({declared:,} bytes) but stores "
                            f"{stored:,} bytes: its header is corrupt or the file is truncated",
                            "re-copy the file, or re-save it with numpy.savez")
            headers[key] = (shape, dtype)
    return headers


def contract_header(path) -> dict:
    """Check an NPZ (or HDF5, :mod:`ptycho_exp.data.h5`) file's path and contract from its array headers,
    without reading the data.

    Catches a missing/unreadable path, a non-zip or truncated file, object arrays (pickle), sizes the
    header declares but the file does not hold, missing keys, and wrong shapes or dtypes. Value checks
    (NaN/Inf, negative amplitude) need the data: :func:`load_contract_npz` does them.

    Returns
    -------
    dict with ``M`` (patterns), ``N`` (pattern side), ``diffraction_key`` and ``arrays``
    (``{key: (shape, dtype)}``).

    Raises
    ------
    DataPathError, DataContractError
        One message naming the file, the key and the fix.
    """
    path = os.fspath(path)
    _check_path(path)
    from ptycho_exp.data.h5 import h5_headers, is_h5

    try:
        arrays = h5_headers(path) if is_h5(path) else _npz_headers(path)
    except PermissionError as exc:
        raise DataPathError(f"data file {path!r} is not readable ({exc}). Fix: chmod +r it", path=path) from None
    except OSError as exc:  # HDF5 (the NPZ reader raises its own messages)
        raise _fail(path, None, f"is not a readable HDF5 file (truncated, or not HDF5: {exc})",
                    "re-copy the file, or write it again with `ptycho-exp data import ... --out FILE.h5`") from None
    diff_key = next((k for k in DIFFRACTION_KEYS if k in arrays), None)
    missing = [k for k in REQUIRED_KEYS if k not in arrays] + ([] if diff_key else ["diffraction"])
    if missing:
        raise _fail(path, missing[0], f"is missing (required keys {', '.join(missing)} not found; the file "
                    f"has {sorted(arrays)})",
                    "save xcoords (M,), ycoords (M,), diffraction (M, N, N) amplitude and probeGuess (N, N)")

    def need_kind(key: str, allow_complex: bool) -> None:
        kind = arrays[key][1].kind
        if kind not in "iuf" + ("c" if allow_complex else ""):
            what = "real or complex numbers" if allow_complex else "real numbers"
            raise _fail(path, key, f"has dtype {arrays[key][1]}: expected {what}",
                        "store it as float32" + (" or complex64" if allow_complex else ""))

    shape = arrays[diff_key][0]
    need_kind(diff_key, allow_complex=False)
    if len(shape) != 3:
        raise _fail(path, diff_key, f"has shape {shape} (ndim {len(shape)}): expected (M, N, N)",
                    "stack the patterns into one (M, N, N) array (add a leading axis for a single pattern)")
    if math.prod(shape) == 0:
        raise _fail(path, diff_key, f"is empty (shape {shape})", "save the actual data")
    if shape[1] != shape[2]:
        raise _fail(path, diff_key, f"has non-square patterns {shape[1:]}: expected (M, N, N)",
                    "crop the patterns to a square N×N around the zero frequency")
    m, n = shape[0], shape[2]
    for key in ("xcoords", "ycoords"):
        need_kind(key, allow_complex=False)
        if arrays[key][0] != (m,):
            raise _fail(path, key, f"has shape {arrays[key][0]}: expected ({m},), one coordinate per pattern of "
                        f"'{diff_key}' {shape}", f"save {key} as a 1-D array of length {m}")
    need_kind("probeGuess", allow_complex=True)
    if arrays["probeGuess"][0] != (n, n):
        raise _fail(path, "probeGuess", f"has shape {arrays['probeGuess'][0]}: expected ({n}, {n}) to match the "
                    f"{n}×{n} patterns of '{diff_key}'", f"save a ({n}, {n}) probe")
    if "objectGuess" in arrays:
        need_kind("objectGuess", allow_complex=True)
        obj_shape = arrays["objectGuess"][0]
        if len(obj_shape) != 2 or math.prod(obj_shape) == 0:
            raise _fail(path, "objectGuess", f"has shape {obj_shape}: expected a non-empty 2-D (H, W) object",
                        "save the object as one 2-D complex array (or leave objectGuess out)")
    return {"M": m, "N": n, "diffraction_key": diff_key, "arrays": arrays}


def load_contract_npz(path, check_intensity: bool = True, check_values: bool = True) -> ScanData:
    """Load and validate a contract NPZ file (a ``.h5`` path: :func:`_load_contract_h5`,
    the patterns left in the file).

    Parameters
    ----------
    path : path to the ``.npz`` file
    check_intensity : warn (``logging`` and ``warnings``) when the data looks like intensity
    check_values : scan the arrays for NaN/Inf and negative amplitudes and record ``normalisation_factor``.
        The dataset cache turns this off for its own files: it wrote them from checked simulations, and the
        zip CRC of every member still catches a damaged file. Keys, shapes and dtypes are always checked.

    Returns
    -------
    ScanData with ``diffraction`` float32 (M, N, N), ``positions`` = stack(ycoords, xcoords) float64,
    ``probe`` complex64, ``object``/``patches`` complex64 when ``objectGuess``/``Y`` are present, and
    ``meta`` holding ``source``, ``diffraction_key`` and ``normalisation_factor`` (plus ``meta_json``).

    Raises
    ------
    DataPathError
        The path is missing, a directory or unreadable.
    DataContractError
        Any breach of the contract (one message naming the key and the fix).
    """
    path = os.fspath(path)
    from ptycho_exp.data.h5 import is_h5

    if is_h5(path):  # the HDF5 layout: patterns stay in the file
        return _load_contract_h5(path, check_intensity=check_intensity, check_values=check_values)
    contract_header(path)  # path, archive, pickle, declared sizes, keys and shapes: before reading any data
    check_finite = _check_finite if check_values else (lambda *_: None)
    with _open_archive(path) as archive:
        keys = set(archive.files)
        diff_key = next((k for k in DIFFRACTION_KEYS if k in keys), None)
        missing = [k for k in REQUIRED_KEYS if k not in keys] + ([] if diff_key else ["diffraction"])
        if missing:
            raise _fail(path, missing[0], f"is missing (required keys {', '.join(missing)} not found; the file "
                        f"has {sorted(keys)})",
                        "save xcoords (M,), ycoords (M,), diffraction (M, N, N) amplitude and probeGuess (N, N)")
        arrays = {k: _read_key(archive, path, k) for k in (diff_key,) + REQUIRED_KEYS}
        for optional in ("objectGuess", "Y", "meta_json"):
            if optional in keys:
                arrays[optional] = _read_key(archive, path, optional)

    diff = arrays[diff_key]
    _check_numeric(path, diff_key, diff, allow_complex=False)
    if diff.ndim != 3:
        raise _fail(path, diff_key, f"has shape {diff.shape} (ndim {diff.ndim}): expected (M, N, N)",
                    "stack the patterns into one (M, N, N) array (add a leading axis for a single pattern)")
    _check_not_empty(path, diff_key, diff)
    m, n = diff.shape[0], diff.shape[-1]
    if diff.shape[1] != diff.shape[2]:
        raise _fail(path, diff_key, f"has non-square patterns {diff.shape[1:]}: expected (M, N, N)",
                    "crop the patterns to a square N×N around the zero frequency")
    check_finite(path, diff_key, diff)
    if check_values and (diff.dtype.kind == "i" and np.min(diff) < 0
                         or diff.dtype.kind == "f" and float(np.min(diff)) < 0):
        raise _fail(path, diff_key, f"has negative values (min {float(np.min(diff)):g}): an amplitude is >= 0",
                    "clip background-subtracted data at 0 (np.clip(x, 0, None)) and store sqrt(intensity)")

    coords = {}
    for key in ("xcoords", "ycoords"):
        arr = arrays[key]
        _check_numeric(path, key, arr, allow_complex=False)
        if arr.ndim != 1 or arr.shape[0] != m:
            raise _fail(path, key, f"has shape {arr.shape}: expected ({m},), one coordinate per pattern of "
                        f"'{diff_key}' {diff.shape}", f"save {key} as a 1-D array of length {m}")
        check_finite(path, key, arr)
        coords[key] = arr.astype(np.float64, copy=False)

    probe = arrays["probeGuess"]
    _check_numeric(path, "probeGuess", probe, allow_complex=True)
    if probe.shape != (n, n):
        raise _fail(path, "probeGuess", f"has shape {probe.shape}: expected ({n}, {n}) to match the "
                    f"{n}×{n} patterns of '{diff_key}'", f"save a ({n}, {n}) probe")
    check_finite(path, "probeGuess", probe)

    obj = None
    if "objectGuess" in arrays:
        obj = arrays["objectGuess"]
        _check_numeric(path, "objectGuess", obj, allow_complex=True)
        if obj.ndim != 2:
            raise _fail(path, "objectGuess", f"has shape {obj.shape}: expected a 2-D (H, W) object",
                        "save the object as one 2-D complex array (or leave objectGuess out)")
        _check_not_empty(path, "objectGuess", obj)
        check_finite(path, "objectGuess", obj)
        obj = obj.astype(np.complex64, copy=False)

    patches = None
    if "Y" in arrays:
        patches = arrays["Y"]
        _check_numeric(path, "Y", patches, allow_complex=True)
        if patches.ndim == 4 and patches.shape[-1] == 1:  # PtychoPINN sometimes keeps a channel axis
            patches = patches[..., 0]
        if patches.shape != (m, n, n):
            raise _fail(path, "Y", f"has shape {patches.shape}: expected ({m}, {n}, {n}) ground-truth patches",
                        "save one N×N complex patch per pattern (or leave Y out)")
        check_finite(path, "Y", patches)
        patches = patches.astype(np.complex64, copy=False)

    meta: dict = {}
    if "meta_json" in arrays:
        try:
            meta.update(json.loads(str(arrays["meta_json"])))
        except (json.JSONDecodeError, TypeError):
            logger.warning("%s: 'meta_json' is not valid JSON; ignored", path)
    meta.update({"source": path, "diffraction_key": diff_key})
    diffraction = diff.astype(np.float32, copy=False)
    if check_values:
        energy = pattern_energy(diff)  # float64 sums: uint16 data does not overflow
        if not np.any(energy > 0):
            raise _fail(path, diff_key, f"is zero in all {m} patterns: there is nothing to reconstruct",
                        "check that the detector frames were saved (not an empty or masked-out array)")
        meta["normalisation_factor"] = float((n / 2.0) / np.sqrt(energy.mean()))
    if check_intensity:
        reason = intensity_suspicion(diff, probe)
        if reason:
            _warn_intensity(path, diff_key, reason)
    positions = np.stack([coords["ycoords"], coords["xcoords"]], axis=1)
    return ScanData(diffraction=diffraction, positions=positions, probe=probe.astype(np.complex64, copy=False),
                    object=obj, patches=patches, meta=meta)


def _load_contract_h5(path, check_intensity: bool = True, check_values: bool = True) -> ScanData:
    """Load an HDF5 contract file with its patterns left in the file (layout: :mod:`ptycho_exp.data.h5`).

    The header (keys, shapes, dtypes) is checked first (:func:`contract_header`); with
    ``check_values`` one chunked pass checks the patterns for NaN/Inf and negative values and records
    ``normalisation_factor``; the intensity-vs-amplitude test runs on up to 512 patterns spread over the scan.

    Returns
    -------
    ScanData whose ``diffraction`` is a :class:`ptycho_exp.data.h5.H5Patterns`; positions, probe, object in memory.
    """
    from ptycho_exp.data.h5 import H5Patterns

    path = os.fspath(path)
    head = contract_header(path)
    key = head["diffraction_key"]
    import h5py

    with h5py.File(path, "r") as f:
        arrays = {k: np.asarray(f[k]) for k in ("xcoords", "ycoords", "probeGuess")}
        obj = np.asarray(f["objectGuess"]) if "objectGuess" in head["arrays"] else None
        meta_text = f.attrs.get("meta_json")
    for k, arr in arrays.items():
        _check_finite(path, k, arr)
    if obj is not None:
        _check_finite(path, "objectGuess", obj)
        obj = obj.astype(np.complex64, copy=False)
    patterns = H5Patterns(path, key)
    meta: dict = {}
    if meta_text is not None:
        try:
            meta.update(json.loads(meta_text.decode() if isinstance(meta_text, bytes) else str(meta_text)))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
            logger.warning("%s: attribute 'meta_json' is not valid JSON; ignored", path)
    meta.update({"source": path, "diffraction_key": key, "streamed": True})
    if check_values:
        for start, block in patterns.chunks():
            if not np.all(np.isfinite(block)):
                bad = int(block.size - np.count_nonzero(np.isfinite(block)))
                raise _fail(path, key, f"contains {bad} NaN/Inf values in patterns {start}..{start + len(block) - 1}",
                            "remove or repair those entries before saving")
            if float(block.min()) < 0:
                raise _fail(path, key, f"has negative values (min {float(block.min()):g}): an amplitude is >= 0",
                            "clip background-subtracted data at 0 (np.clip(x, 0, None)) and store sqrt(intensity)")
        energy = patterns.pattern_energies()
        if np.any(energy > 0):
            meta["normalisation_factor"] = float((head["N"] / 2.0) / np.sqrt(energy.mean()))
    if check_intensity:
        pick = np.unique(np.linspace(0, head["M"] - 1, num=min(head["M"], 512)).round().astype(np.int64))
        reason = intensity_suspicion(patterns[pick], arrays["probeGuess"])
        if reason:
            _warn_intensity(path, key, reason)
    positions = np.stack([arrays["ycoords"].astype(np.float64), arrays["xcoords"].astype(np.float64)], axis=1)
    return ScanData(diffraction=patterns, positions=positions, probe=arrays["probeGuess"].astype(np.complex64),
                    object=obj, patches=None, meta=meta)


def _json_safe(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


def save_contract_npz(path, scan: ScanData) -> str:
    """Write ``scan`` as a contract NPZ, atomically (temp file in the same folder + ``os.replace``).

    Writes ``xcoords``, ``ycoords`` (float64), ``diffraction`` (float32), ``probeGuess`` (complex64),
    plus ``objectGuess`` and ``Y`` (complex64) when present and ``meta_json`` when ``scan.meta`` is set.

    Returns
    -------
    The path written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    positions = np.asarray(scan.positions, dtype=np.float64)
    arrays = {
        "xcoords": positions[:, 1].copy(),
        "ycoords": positions[:, 0].copy(),
        "diffraction": np.asarray(scan.diffraction, dtype=np.float32),
        "probeGuess": np.asarray(scan.probe, dtype=np.complex64),
    }
    if scan.object is not None:
        arrays["objectGuess"] = np.asarray(scan.object, dtype=np.complex64)
    if scan.patches is not None:
        arrays["Y"] = np.asarray(scan.patches, dtype=np.complex64)
    if scan.meta:
        arrays["meta_json"] = np.asarray(_json_safe(scan.meta))
    from ptycho_exp.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        np.savez(fh, **arrays)
    return path
