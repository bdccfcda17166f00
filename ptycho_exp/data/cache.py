"""Content-addressed cache of simulated scans.

The key is the sha256 of the canonical JSON of every data field that changes the simulated arrays of
one scan (train or test), plus :data:`~ptycho_exp.data.simulate.SIMULATOR_VERSION` and ``which``.
Fields that only select or group samples (``n_train``, ``n_test``, ``gridsize``, ``k_neighbors``,
``grouping``), the NPZ paths (``kind``, ``train_path``, ``test_path``) and the other scan's seed/stride
are left out, so e.g. every ``n_train`` arm shares one training scan and every arm shares the test
scan; the exception is the test scan of ``grouping=block`` at gridsize > 1, whose blocks of positions
depend on ``gridsize`` and the training stride (both keyed then).
Fields that only matter for one choice are included only then (``probe_defocus`` for a defocused
probe, the stride for a grid scan, ``n_random_positions`` for a random scan); a probe file enters by
the sha256 of its bytes, not its path.

Concurrency: the file ``<cache_dir>/<key>.npz`` only ever appears complete (written to a temp file
in the same folder, then ``os.replace``), and simulation happens under ``<key>.lock`` (a
``filelock.FileLock``), so two jobs asking for the same key simulate once: the second waits, then hits.
A corrupt file (truncated, bad zip) is removed and simulated again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from ptycho_exp.config import DataConfig
from ptycho_exp.data.container import ScanData
from ptycho_exp.data.npz import DataContractError, load_contract_npz, save_contract_npz
from ptycho_exp.data.simulate import (
    SIMULATOR_VERSION,
    WHICH,
    block_test_layout,
    resolve_data_fields,
    scan_seed,
    scan_stride,
    simulate_object_scan,
)

logger = logging.getLogger("ptycho_exp.data")

_ALWAYS_KEYED = ("object", "object_phase", "object_size", "N", "nphotons", "noise", "probe", "probe_scale",
                 "scan", "jitter")


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key_fields(fields: DataConfig | Mapping[str, Any], which: str, index: int = 0) -> dict:
    """The canonical fields that determine the simulated ``which`` scan (what :func:`dataset_key` hashes).

    ``index`` is the training object's number (``data.n_train_objects``); object 0 keeps the key it
    has with a single object, so adding objects reuses the cached first one.
    """
    f = resolve_data_fields(fields)
    keyed = {name: f[name] for name in _ALWAYS_KEYED}
    keyed["seed"] = scan_seed(f, which)
    if index:
        keyed["object_index"] = int(index)
    if f["scan"] == "grid":
        keyed["stride"] = scan_stride(f, which)
        if block_test_layout(f, which):
            keyed["block"] = {"gridsize": f["gridsize"], "inner_stride": f["train_stride"]}
    else:
        keyed["n_random_positions"] = f["n_random_positions"]
    if f["probe"] == "defocused":
        keyed["probe_defocus"] = f["probe_defocus"]
    if f["probe"] == "file":
        path = f["probe_path"]
        keyed["probe_file_sha256"] = _file_sha256(path) if path and os.path.isfile(path) else str(path)
    keyed["which"] = which
    keyed["simulator_version"] = SIMULATOR_VERSION
    return keyed


def dataset_key(fields: DataConfig | Mapping[str, Any], which: str | None = None, index: int = 0) -> str:
    """sha256 (hex) of the canonical JSON of :func:`key_fields`.

    ``which`` ("train" or "test") may be given as an argument or as ``fields["which"]``.
    """
    if which is None:
        if isinstance(fields, Mapping) and "which" in fields:
            fields = dict(fields)
            which = fields.pop("which")
        else:
            raise ValueError("dataset_key needs which='train' or 'test'")
    elif isinstance(fields, Mapping) and "which" in fields:
        fields = {k: v for k, v in fields.items() if k != "which"}
    if which not in WHICH:
        raise ValueError(f"which={which!r}: choose 'train' or 'test'")
    canonical = json.dumps(key_fields(fields, which, index), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str, key: str) -> str:
    """Path of the cached NPZ for ``key``."""
    return os.path.join(os.fspath(cache_dir), f"{key}.npz")


def _read_cached(path: str) -> ScanData | None:
    """The cached scan, or None when the file is absent or unreadable (truncated, not a zip...)."""
    if not os.path.isfile(path):
        return None
    try:
        return load_contract_npz(path, check_intensity=False, check_values=False)  # ours: CRC-checked
    except DataContractError as exc:
        logger.warning("dataset cache file %s is corrupt (%s); it will be simulated again", path, exc)
        return None


def load_or_simulate(cache_dir, fields: DataConfig | Mapping[str, Any],
                     which: str, index: int = 0) -> tuple[ScanData, bool, str]:
    """The ``which`` scan of ``fields`` from the cache, simulating and storing it on a miss.

    Parameters
    ----------
    cache_dir : folder of the cache (created if needed)
    fields : data config (``DataConfig``, dict or ``DictConfig``)
    which : "train" or "test"
    index : training object number (0 … ``data.n_train_objects`` - 1)

    Returns
    -------
    (scan, hit, key): ``hit`` is True when the scan came from the cache (also when another job
    simulated it while this one waited for the lock).
    """
    from filelock import FileLock

    cache_dir = os.fspath(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    key = dataset_key(fields, which, index)
    path = cache_path(cache_dir, key)
    scan = _read_cached(path)
    if scan is not None:
        logger.info("dataset cache hit (%s): %s", which, path)
        return scan, True, key
    with FileLock(os.path.join(cache_dir, f"{key}.lock")):
        scan = _read_cached(path)  # another job may have written it while we waited
        if scan is not None:
            logger.info("dataset cache hit after waiting (%s): %s", which, path)
            return scan, True, key
        if os.path.exists(path):
            os.remove(path)  # corrupt: replace it
        logger.info("dataset cache miss (%s): simulating %s", which, path)
        start = time.perf_counter()
        scan = simulate_object_scan(fields, which, index)
        scan.meta["cache_key"] = key
        save_contract_npz(path, scan)
        logger.info("simulated %d patterns in %.1f s -> %s", scan.n_positions, time.perf_counter() - start, path)
    return scan, False, key


# --------------------------------------------------------------------------- measured files (data=cxi|ptylab_h5)
IMPORT_VERSION = "1"  # bump when a change in ptycho_exp.data.readers changes the imported arrays


def import_key(source_sha256: str, fmt: str, opts: Any) -> str:
    """sha256 (hex) of what determines an imported scan: the source file's content, its format, the import
    options (``N`` included; a probe file enters by the sha256 of its bytes) and :data:`IMPORT_VERSION`."""
    import dataclasses

    options = dataclasses.asdict(opts)
    probe = options.pop("probe_path")
    if probe:
        options["probe_file_sha256"] = _file_sha256(probe) if os.path.isfile(probe) else str(probe)
    options["frames"] = None if options["frames"] is None else list(options["frames"])
    keyed = {"source_sha256": source_sha256, "format": fmt, "options": options, "import_version": IMPORT_VERSION}
    canonical = json.dumps(keyed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _usable_import(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    from ptycho_exp.data.npz import contract_header

    try:
        contract_header(path)
        return True
    except DataContractError as exc:
        logger.warning("imported scan %s is unreadable (%s); it will be imported again", path, exc)
        return False


def load_or_import(cache_dir, path: str, fmt: str, opts: Any) -> dict:
    """A measured file converted to an HDF5 contract scan in ``<cache_dir>/imported/``, importing it on a miss.

    Parameters
    ----------
    cache_dir : folder of the dataset cache
    path : the measured file (CXI or PtyLab HDF5)
    fmt : the importer's format name (``cxi`` | ``ptylab``)
    opts : :class:`ptycho_exp.data.readers.ImportOptions`

    Returns
    -------
    dict with ``contract`` (the cached ``.h5`` contract file, loaded like any ``data=npz`` file), ``hit``,
    ``key`` and ``source_sha256``. The patterns are written chunk by chunk as they are converted (never
    the whole scan in memory), to a temp file moved into place when complete, under ``<key>.lock``.
    """
    from filelock import FileLock

    from ptycho_exp.data.h5 import ContractH5Writer
    from ptycho_exp.data.readers.convert import CONFIG_NAMES, import_scan

    folder = os.path.join(os.fspath(cache_dir), "imported")
    os.makedirs(folder, exist_ok=True)
    sha = _file_sha256(path)
    key = import_key(sha, fmt, opts)
    out = os.path.join(folder, f"{key}.h5")
    record = {"contract": out, "hit": True, "key": key, "source_sha256": sha}
    if _usable_import(out):
        logger.info("imported scan cache hit: %s -> %s", path, out)
        return record
    with FileLock(os.path.join(folder, f"{key}.lock")):
        if _usable_import(out):
            return record
        if os.path.exists(out):
            os.remove(out)
        start = time.perf_counter()
        with ContractH5Writer(out) as writer:
            scan, _ = import_scan(path, fmt, opts, sink=writer, names=CONFIG_NAMES)
            scan.meta["cache_key"] = key
            writer.finish(scan)
        logger.info("imported %s (%s) in %.1f s -> %s", path, fmt, time.perf_counter() - start, out)
    return {**record, "hit": False}
