"""The contract scan as an HDF5 file, read lazily (scans larger than memory).

Layout (same keys and meaning as the contract NPZ, :mod:`ptycho_exp.data.npz`)
    ``diffraction``: (M, N, N) float32 amplitude, chunked one pattern per chunk;
    ``xcoords``, ``ycoords``: (M,) float64 patch centres in object px;
    ``probeGuess``: (N, N) complex64;
    optional ``objectGuess`` (H, W) complex64; optional attribute ``meta_json`` (a JSON string) on the root.

A path ending in ``.h5`` or ``.hdf5`` is read as this layout wherever a contract NPZ is accepted
(``data=npz``, ``data.train_path`` / ``data.test_path``) and written by ``ptycho-exp data import ... --out
scan.h5`` and loaded by :func:`ptycho_exp.data.npz.load_contract_npz`, which checks it like an NPZ.
Only the positions, the probe and the object are read into memory; the patterns stay in the file
(:class:`H5Patterns`) and are read in batches: by the training pipeline, by inference and by the chunked
value checks. HDF5 groups, links and attributes other than these are ignored; nothing is unpickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ptycho_exp.data.container import ScanData


H5_SUFFIXES = (".h5", ".hdf5")
READ_CHUNK = 1024  # patterns per read in the chunked passes over a file


def is_h5(path) -> bool:
    """True when ``path`` names an HDF5 contract file (by its suffix)."""
    return str(path).lower().endswith(H5_SUFFIXES)


def _open(path: str):
    """The file opened read-only; ``OSError`` (``PermissionError`` included) for a missing, unreadable or
    non-HDF5 file (:func:`ptycho_exp.data.npz.contract_header` turns it into the contract's message)."""
    import h5py

    return h5py.File(path, "r")


def h5_headers(path: str) -> dict:
    """``{key: (shape, dtype)}`` of the top-level datasets of an HDF5 file (no data read).

    Raises ``OSError`` for a file that cannot be opened or an object that cannot be read (a dangling
    external link, a damaged object header), naming the key.
    """
    import h5py

    with _open(path) as f:
        arrays = {}
        for key in f:
            try:
                item = f[key]
            except (KeyError, OSError) as exc:
                raise OSError(f"key '{key}' cannot be read ({exc})") from None
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
            f.attrs["meta_json"] = json.dumps(scan.meta, sort_keys=True, default=lambda v: v.tolist()
                                              if hasattr(v, "tolist") else str(v))
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
