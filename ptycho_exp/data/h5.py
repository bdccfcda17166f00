"""The contract scan as an HDF5 file, read lazily (scans larger than memory).

Layout (same keys and meaning as the contract NPZ, :mod:`ptycho_exp.data.npz`)
    ``diffraction``: (M, N, N) float32 amplitude, chunked one pattern per chunk;
    ``xcoords``, ``ycoords``: (M,) float64 patch centres in object px;
    ``probeGuess``: (N, N) complex64;
    optional ``objectGuess`` (H, W) complex64; optional attribute ``meta_json`` (a JSON string) on the root.

A path ending in ``.h5`` or ``.hdf5`` is read as this layout wherever a contract NPZ is accepted
(``data=npz``, ``data.train_path`` / ``data.test_path``) and written by ``ptycho-exp data import ... --out
scan.h5``. Only the positions, the probe and the object are read into memory; the patterns stay in the file
(:class:`H5Patterns`) and are read in batches: by the training pipeline, by inference and by the chunked
value checks. HDF5 groups, links and attributes other than these are ignored; nothing is unpickled.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ptycho_exp.data.container import ScanData

log = logging.getLogger("ptycho_exp.data")

H5_SUFFIXES = (".h5", ".hdf5")
READ_CHUNK = 1024  # patterns per read in the chunked passes over a file


def is_h5(path) -> bool:
    """True when ``path`` names an HDF5 contract file (by its suffix)."""
    return str(path).lower().endswith(H5_SUFFIXES)


def _open(path: str):
    import h5py

    from ptycho_exp.data.npz import DataPathError, _fail

    try:
        return h5py.File(path, "r")
    except PermissionError as exc:
        raise DataPathError(f"data file {path!r} is not readable ({exc}). Fix: chmod +r it", path=path) from None
    except OSError as exc:
        raise _fail(path, None, f"is not a readable HDF5 file (truncated, or not HDF5: {exc})",
                    "re-copy the file, or write it again with `ptycho-exp data import ... --out FILE.h5`") from None


def h5_headers(path: str) -> dict:
    """``{key: (shape, dtype)}`` of the top-level datasets of an HDF5 file (no data read)."""
    import h5py

    from ptycho_exp.data.npz import _fail

    with _open(path) as f:
        arrays = {}
        for key in f:
            try:
                item = f[key]
            except (KeyError, OSError) as exc:  # a dangling external link, a damaged object header
                raise _fail(path, key, f"cannot be read ({exc})", "re-copy or re-write the file") from None
            if isinstance(item, h5py.Dataset):
                arrays[key] = (tuple(int(s) for s in item.shape), np.dtype(item.dtype))
    return arrays


class H5Patterns:
    """The ``diffraction`` dataset of an HDF5 contract file as a read-on-demand (M, N, N) float32 array.

    Indexing (an int, a slice, or an array of indices in any order, repeats allowed) reads only those
    patterns: h5py is given sorted unique indices and the rows are put back in the order asked for.
    ``np.asarray`` reads everything (for code that needs the whole scan in memory, e.g. iterative
    engines). The file is opened on first use and again in a forked process.
    """

    def __init__(self, path: str, key: str = "diffraction"):
        self.path = os.fspath(path)
        self.key = key
        with _open(self.path) as f:
            ds = f[key]
            self.shape = tuple(int(s) for s in ds.shape)
        self.dtype = np.dtype(np.float32)
        self._file = None
        self._pid = None
        self._energies: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _dataset(self):
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = _open(self.path), os.getpid()
        return self._file[self.key]

    def close(self) -> None:
        """Close the file handle (it is reopened on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}

    def __getitem__(self, index) -> np.ndarray:
        ds = self._dataset()
        if isinstance(index, (int, np.integer, slice)):
            return np.asarray(ds[index], dtype=np.float32)
        idx = np.asarray(index, dtype=np.int64)
        flat = idx.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.shape[0]):
            raise IndexError(f"pattern index out of range 0..{self.shape[0] - 1}")
        unique, inverse = np.unique(flat, return_inverse=True)
        rows = np.asarray(ds[unique], dtype=np.float32) if unique.size else np.empty((0, *self.shape[1:]), np.float32)
        return rows[inverse].reshape(idx.shape + self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)

    def chunks(self, size: int = READ_CHUNK):
        """``(start, block)`` over the whole dataset, ``size`` patterns at a time."""
        for start in range(0, self.shape[0], size):
            yield start, self[start:start + size]

    def min(self) -> np.float32:
        """Smallest value, read in chunks."""
        return min(block.min() for _, block in self.chunks())

    def max(self) -> np.float32:
        """Largest value, read in chunks."""
        return max(block.max() for _, block in self.chunks())

    def pattern_energies(self) -> np.ndarray:
        """Per-pattern ``sum X**2`` (M,) float64, read in chunks once and kept (as :func:`pattern_energy`)."""
        if self._energies is None:
            from ptycho_exp.physics.forward import pattern_energy

            self._energies = np.concatenate([pattern_energy(block) for _, block in self.chunks()])
        return self._energies


class GroupedPatterns:
    """Network samples' diffraction (n, N, N, C) (channels last) read from a scan's patterns on demand.

    ``self[rows]`` reads the patterns ``groups[rows]`` from ``patterns`` (an :class:`H5Patterns` or an array)
    and moves the group axis last, the values :func:`ptycho_exp.data.datasets.make_samples` stores in memory.
    """

    def __init__(self, patterns, groups: np.ndarray):
        self.patterns = patterns
        self.groups = np.asarray(groups, dtype=np.int64)
        n, c = self.groups.shape
        N = patterns.shape[-1]
        self.shape = (n, N, N, c)
        self.dtype = np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        block = self.patterns[self.groups[rows]]
        return np.ascontiguousarray(np.moveaxis(block, -3, -1), dtype=np.float32)

    def __array__(self, dtype=None, copy=None):
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)


def read_positions(path: str) -> np.ndarray:
    """(M, 2) float64 [y, x] positions of an HDF5 contract file (only ``ycoords``/``xcoords`` read)."""
    with _open(path) as f:
        return np.stack([np.asarray(f["ycoords"], np.float64), np.asarray(f["xcoords"], np.float64)], axis=1)


def load_contract_h5(path, check_intensity: bool = True, check_values: bool = True) -> ScanData:
    """Load an HDF5 contract file with its patterns left in the file (see the module docstring).

    The header (keys, shapes, dtypes) is checked first (:func:`ptycho_exp.data.npz.contract_header`); with
    ``check_values`` one chunked pass checks the patterns for NaN/Inf and negative values and records
    ``normalisation_factor``; the intensity-vs-amplitude test runs on up to 512 patterns spread over the scan.

    Returns
    -------
    ScanData whose ``diffraction`` is an :class:`H5Patterns`; positions, probe and object in memory.
    """
    from ptycho_exp.data.npz import (
        _check_finite,
        _fail,
        _warn_intensity,
        contract_header,
        intensity_suspicion,
    )

    path = os.fspath(path)
    head = contract_header(path)
    key = head["diffraction_key"]
    with _open(path) as f:
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
            log.warning("%s: attribute 'meta_json' is not valid JSON; ignored", path)
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


class ContractH5Writer:
    """Write an HDF5 contract file atomically, the patterns block by block.

    Use as a context manager: :meth:`diffraction` creates the (M, N, N) float32 dataset (one pattern per
    chunk) to be filled by slices, :meth:`finish` adds positions, probe, object and meta. On a clean exit
    the file is moved into place; on an error (or without :meth:`finish`) nothing is left behind.
    """

    def __init__(self, path):
        self.path = Path(os.fspath(path))
        self._ctx = None
        self._file = None
        self._finished = False

    def __enter__(self) -> ContractH5Writer:
        return self

    def _open(self):
        """The temp file, created on first use (a failure before any write leaves no file nor folder)."""
        if self._file is None:
            import h5py

            from ptycho_exp.files import atomic_path

            self._ctx = atomic_path(self.path)
            tmp = self._ctx.__enter__()
            self._file = h5py.File(tmp, "x")
        return self._file

    def diffraction(self, m: int, n: int):
        """The (m, n, n) float32 dataset to write the patterns into (``ds[a:b] = block``)."""
        return self._open().create_dataset("diffraction", shape=(int(m), int(n), int(n)), dtype=np.float32,
                                         chunks=(1, int(n), int(n)))

    def finish(self, scan: ScanData) -> None:
        """Write positions, probe, object, meta (and the patterns, when they were not written block by block)."""
        f = self._open()
        if "diffraction" not in f:
            d = self.diffraction(scan.n_positions, scan.N)
            for start in range(0, scan.n_positions, READ_CHUNK):
                d[start:start + READ_CHUNK] = np.asarray(scan.diffraction[start:start + READ_CHUNK], np.float32)
        positions = np.asarray(scan.positions, dtype=np.float64)
        f.create_dataset("xcoords", data=positions[:, 1])
        f.create_dataset("ycoords", data=positions[:, 0])
        f.create_dataset("probeGuess", data=np.asarray(scan.probe, np.complex64))
        if scan.object is not None:
            f.create_dataset("objectGuess", data=np.asarray(scan.object, np.complex64))
        if scan.meta:
            from ptycho_exp.data.npz import _json_safe

            f.attrs["meta_json"] = _json_safe(scan.meta)
        self._finished = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._file is None:
            return False
        self._file.close()
        if exc_type is None and not self._finished:
            error = RuntimeError(f"{self.path}: ContractH5Writer closed before finish()")
            self._ctx.__exit__(RuntimeError, error, None)  # removes the temp file
            raise error
        return bool(self._ctx.__exit__(exc_type, exc, tb))  # moves the file into place, or removes it


def save_contract_h5(path, scan: ScanData) -> str:
    """Write ``scan`` (patterns in memory or in another file) as an HDF5 contract file, atomically."""
    with ContractH5Writer(path) as w:
        w.finish(scan)
    return os.fspath(path)
