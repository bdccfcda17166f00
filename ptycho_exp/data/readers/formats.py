"""Opening each format: where CXI, PtyLab HDF5, Tike NPZ and contract NPZ keep frames, positions,
geometry, mask and probe (see :mod:`ptycho_exp.data.readers` for the conventions)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptycho_exp.data.npz import DataContractError, require_regular_file
from ptycho_exp.data.readers.patterns import energy_to_wavelength

CORNER = "corner"
CENTRE = "centre"

_CXI_DATA = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
_CXI_DETECTOR = "entry_1/instrument_1/detector_1"
_CXI_SOURCE = "entry_1/instrument_1/source_1"
_CXI_TRANSLATION = ("entry_1/sample_1/geometry_1/translation", "entry_1/sample_1/geometry/translation",
                    "entry_1/data_1/translation")
_CXI_PROBE = ("entry_1/instrument_1/source_1/illumination", "entry_1/instrument_1/source_1/probe",
              "entry_1/data_1/probe", "entry_1/probe")


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


def fail(path: str, key: str | None, problem: str, fix: str) -> DataContractError:
    where = f"{path}: {key}" if key else f"{path}:"
    return DataContractError(f"{where} {problem}; fix: {fix}", path=path, key=key)


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


def open_h5(path: str):
    import h5py

    require_regular_file(path, "input file", "check the path and that the file was copied")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise fail(path, None, f"is not a readable HDF5 file ({exc})",
                   "check the path and the format (cxi and ptylab read HDF5; tike and npz read NPZ)") from None


def open_cxi(f, path: str) -> Source:
    """Describe a CXI file ``f`` (open h5py.File): frames, translations, geometry, mask, probe."""
    data_key = next((k for k in _CXI_DATA if k in f), None)
    if data_key is None:
        raise fail(path, " or ".join(_CXI_DATA), "missing (no diffraction frames)",
                   "write the (n, H, W) frames at entry_1/data_1/data")
    trans_key = next((k for k in _CXI_TRANSLATION if k in f), None)
    if trans_key is None:
        raise fail(path, _CXI_TRANSLATION[0], "missing (no scan positions)",
                   "write the sample translations (n, 3) in metres at entry_1/sample_1/geometry_1/translation")
    trans = np.asarray(f[trans_key][()], dtype=np.float64)
    if trans.ndim != 2 or trans.shape[1] < 2:
        raise fail(path, trans_key, f"has shape {trans.shape}", "store (n, 3) translations (x, y, z) in metres")
    positions = -trans[:, [1, 0]]  # beam on the sample = -(sample translation); [y, x]
    src = Source(path=path, fmt="cxi", frames=f[data_key], positions=positions, position_unit="m",
                 zero_at=CENTRE, keys={"data": data_key, "positions": trans_key})
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
            raise fail(path, key, "missing", f"write the {what} as '{key}'")
    encoder = np.asarray(f["encoder"][()], dtype=np.float64)
    if encoder.ndim != 2 or encoder.shape[1] != 2:
        raise fail(path, "encoder", f"has shape {encoder.shape}", "store (n, 2) positions (row, col) in metres")
    src = Source(path=path, fmt="ptylab", frames=f["ptychogram"], positions=encoder, position_unit="m",
                 zero_at=CENTRE, keys={"data": "ptychogram", "positions": "encoder", "distance": "zo",
                                        "pixel_size": "dxd", "wavelength": "wavelength", "probe": "probe"})
    src.wavelength, src.distance = _h5_scalar(f, "wavelength"), _h5_scalar(f, "zo")
    dxd = _h5_scalar(f, "dxd")
    src.pixel_size = None if dxd is None else (dxd, dxd)
    if "probe" in f:
        src.probe, src.probe_key = _first_mode(f["probe"][()], src.notes, "probe"), "probe"
    return src


def _load_npz(path: str):
    require_regular_file(path, "input file", "check the path and that the file was copied")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise fail(path, None, f"is not a readable NPZ archive ({type(exc).__name__}: {exc})",
                   "check the path and --format (tike and npz read NPZ; cxi and ptylab read HDF5)") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise fail(path, None, "is a single .npy array, not an NPZ archive", "save the arrays with np.savez")
    return archive


def _npz_key(archive, path: str, key: str, fix: str) -> np.ndarray:
    if key not in archive.files:
        raise fail(path, key, f"missing (keys: {sorted(archive.files)})", fix)
    try:
        return archive[key]
    except ValueError as exc:
        raise fail(path, key, f"cannot be read without pickle ({exc})",
                   "re-save it as a plain numeric array") from None


def open_tike(path: str) -> Source:
    """Describe a Tike-style NPZ: ``data`` intensity (zero frequency at the corners), ``scan`` window corners."""
    with _load_npz(path) as archive:
        data = _npz_key(archive, path, "data", "save the (n, W, W) intensity as 'data'")
        scan = _npz_key(archive, path, "scan", "save the probe-window corners (n, 2) [row, col] px as 'scan'")
        probe = archive["probe"] if "probe" in archive.files else None
    if data.ndim != 3:
        raise fail(path, "data", f"has shape {data.shape}", "store (n, W, W) intensity")
    scan = np.asarray(scan, dtype=np.float64).reshape(-1, 2)
    src = Source(path=path, fmt="tike", frames=data, positions=scan + data.shape[-1] / 2.0, position_unit="px",
                 zero_at=CORNER, keys={"data": "data", "positions": "scan", "probe": "probe"})
    if probe is not None:
        src.probe, src.probe_key = _first_mode(probe, src.notes, "probe"), "probe"
    return src


def open_contract(path: str) -> Source:
    """Describe a contract NPZ (amplitude, centred zero frequency, centres in px) as intensity."""
    from ptycho_exp.data.npz import load_contract_npz

    scan = load_contract_npz(path, check_intensity=False)
    src = Source(path=path, fmt="npz", frames=np.square(scan.diffraction, dtype=np.float64),
                 positions=scan.positions, position_unit="px", zero_at=CENTRE,
                 keys={"data": scan.meta.get("diffraction_key", "diffraction"), "positions": "xcoords/ycoords",
                       "probe": "probeGuess"}, probe=scan.probe, probe_key="probeGuess")
    if scan.object is not None or scan.patches is not None:
        src.notes.append("objectGuess and Y are not carried over (they would need resampling)")
    return src
