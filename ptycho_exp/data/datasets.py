"""Train/test samples for one job, from simulation (through the cache) or from contract NPZ files.

Sampling rules
--------------
- Training: ``n_train`` samples whose centres are drawn with ``np.random.default_rng(seed)``
  uniformly without replacement over the whole training scan (spatially unbiased); for
  gridsize g > 1 each sample is a group of g² neighbours (see :func:`ptycho_exp.physics.scan.group_around`).
- Several training objects (``data.n_train_objects``): their scans are laid side by side, each
  object's positions moved right by the widths before it plus a gap of N px, so no group spans two
  objects; the ``n_train`` centres are drawn over all positions of all objects.
- ``data.train_on=test``: the training samples are drawn from the test scan itself (self-supervised,
  the way an iterative solver works on the scan it reconstructs); no training file or scan is needed.
- Test: every test position is a centre (so each belongs to at least one group), or ``n_test``
  centres drawn with ``np.random.default_rng(data.test_seed)`` so every arm and seed sees the same
  subset; the groups' neighbour choices use that same generator.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ptycho_exp.config import ConfigError, DataConfig
from ptycho_exp.validate import FILE_KINDS
from ptycho_exp.data.container import Samples, ScanData
from ptycho_exp.physics.forward import mean_pattern_energy, normalisation_factor
from ptycho_exp.physics.probe import probe_diameter
from ptycho_exp.physics.scan import (
    extract_patches,
    group_around,
    group_blocks,
    relative_offsets,
    scan_summary,
)

log = logging.getLogger("ptycho_exp.data")

# simulator settings that file data (data=npz) does not use: the record names them instead of their values
SIMULATION_KEYS = ("object", "object_phase", "object_size", "nphotons", "noise", "n_train_objects", "probe",
                   "probe_path", "probe_scale", "probe_defocus", "scan", "train_stride", "test_stride",
                   "n_random_positions", "jitter", "train_seed")


@dataclass
class Datasets:
    """Everything a job needs from the data: samples for the networks and the scans behind them.

    ``probe`` is the probe of the scan the networks train on (the training file's for data=npz) and
    ``counts_per_pattern`` that scan's mean photon counts per pattern (the PINN's intensity scale:
    ``data.nphotons`` for simulated data, measured from the file for data=npz); both None without training.
    """

    train: Samples | None
    test: Samples
    train_scan: ScanData | None
    test_scan: ScanData
    info: dict = field(default_factory=dict)
    probe: np.ndarray | None = None
    counts_per_pattern: float | None = None


def side_by_side(scans: list[ScanData], gap: int) -> ScanData:
    """One scan of several objects placed left to right with ``gap`` px between them.

    Parameters
    ----------
    scans : scans of objects of equal height, sharing one probe
    gap : columns of zeros between neighbouring objects (at least N keeps every patch on one object)

    Returns
    -------
    ScanData whose ``object`` is the canvas, ``positions`` are moved onto it, and ``meta`` is the first
    scan's plus ``n_objects``, ``object_origins`` ([y, x] of each object on the canvas) and a
    ``photon_scale`` that keeps the mean counts per pattern of all patterns together. One scan is
    returned as it is.
    """
    if len(scans) == 1:
        return scans[0]
    heights = {s.object.shape[0] for s in scans}
    if len(heights) != 1:
        raise ValueError(f"objects of different heights {sorted(heights)} cannot be placed side by side")
    canvas, positions, origins, x0 = [], [], [], 0
    for i, s in enumerate(scans):
        if i:
            canvas.append(np.zeros((s.object.shape[0], gap), dtype=s.object.dtype))
            x0 += gap
        canvas.append(s.object)
        positions.append(np.asarray(s.positions, dtype=np.float64) + np.array([0.0, x0]))
        origins.append([0, x0])
        x0 += s.object.shape[1]
    diffraction = np.concatenate([s.diffraction for s in scans])
    patches = None if any(s.patches is None for s in scans) else np.concatenate([s.patches for s in scans])
    meta = dict(scans[0].meta)
    meta.update({"n_objects": len(scans), "object_origins": origins})
    if all("photon_scale" in s.meta for s in scans):
        counts = sum(float(s.meta["photon_scale"]) ** 2 * mean_pattern_energy(s.diffraction) * s.n_positions
                     for s in scans) / diffraction.shape[0]
        meta["photon_scale"] = float(np.sqrt(counts / mean_pattern_energy(diffraction)))
    return ScanData(diffraction=diffraction, positions=np.concatenate(positions), probe=scans[0].probe,
                    object=np.concatenate(canvas, axis=1), patches=patches, meta=meta)


def make_samples(scan: ScanData, groups: np.ndarray) -> Samples:
    """Samples (channels last) for ``groups`` (n, C) of indices into ``scan``.

    A scan whose patterns stay in a file (``.h5``) gives samples whose ``diffraction`` is a
    :class:`ptycho_exp.data.h5.GroupedPatterns`, read per batch, and no ground-truth patches.
    """
    groups = np.asarray(groups, dtype=np.int64)
    if not isinstance(scan.diffraction, np.ndarray):  # patterns in a file (data/h5.py): read per batch
        from ptycho_exp.data.h5 import GroupedPatterns

        return Samples(diffraction=GroupedPatterns(scan.diffraction, groups),  # type: ignore[arg-type]
                       offsets=relative_offsets(scan.positions, groups),
                       positions=np.asarray(scan.positions, dtype=np.float64)[groups], groups=groups)
    diffraction = np.ascontiguousarray(np.moveaxis(scan.diffraction[groups], 1, -1), dtype=np.float32)
    patches = None
    if scan.patches is not None:
        patches = np.ascontiguousarray(np.moveaxis(scan.patches[groups], 1, -1), dtype=np.complex64)
    return Samples(diffraction=diffraction, offsets=relative_offsets(scan.positions, groups),
                   positions=np.asarray(scan.positions, dtype=np.float64)[groups], groups=groups,
                   patches=patches)


def ensure_ground_truth_patches(scan: ScanData) -> ScanData:
    """Fill ``scan.patches`` from ``scan.object`` when only the object is known (in place; returns scan)."""
    if scan.patches is None and scan.object is not None:
        scan.patches = extract_patches(scan.object, scan.positions, scan.N)
    return scan


def make_groups(scan: ScanData, centres: np.ndarray, gridsize: int, k: int, rng: np.random.Generator,
                grouping: str = "knn") -> np.ndarray:
    """Groups anchored at ``centres``: ``knn`` (C of the k nearest) or ``block`` (g x g grid blocks)."""
    if grouping == "block":
        try:
            return group_blocks(scan.positions, centres, gridsize, rng)
        except ValueError as err:
            raise ConfigError(f"data.grouping=block is invalid for this scan: {err}") from None
    return group_around(scan.positions, centres, gridsize, rng, k)


def training_groups(scan: ScanData, n_train: int, gridsize: int, k: int, seed: int,
                    grouping: str = "knn") -> np.ndarray:
    """``n_train`` spatially unbiased groups of the training scan; ConfigError naming data.n_train if too many."""
    m = scan.n_positions
    if n_train > m:
        raise ConfigError(f"data.n_train={n_train} is invalid: the training scan has only {m} positions "
                          f"(one sample per centre); use data.n_train<={m}, more objects (data.n_train_objects) "
                          "or a denser scan (smaller data.train_stride, larger data.object_size or more "
                          "data.n_random_positions)")
    rng = np.random.default_rng(seed)
    centres = rng.choice(m, size=n_train, replace=False).astype(np.int64)
    return make_groups(scan, centres, gridsize, k, rng, grouping)


def heldout_groups(scan: ScanData, n_test: int | None, gridsize: int, k: int, test_seed: int,
                   grouping: str = "knn") -> np.ndarray:
    """Groups centred on every test position, or on ``n_test`` of them drawn with ``default_rng(test_seed)``."""
    m = scan.n_positions
    rng = np.random.default_rng(test_seed)
    if n_test is None:
        centres = np.arange(m, dtype=np.int64)
    else:
        if n_test > m:
            raise ConfigError(f"data.n_test={n_test} is invalid: the test scan has only {m} positions; "
                              f"use data.n_test<={m} or data.n_test=null (all)")
        centres = np.sort(rng.choice(m, size=n_test, replace=False)).astype(np.int64)
    c = gridsize ** 2
    if grouping == "block" and c > 1 and scan.meta.get("block_size") == c:
        # a simulated block layout: each run of C positions is one sample (predicted once)
        return np.unique(centres // c)[:, None] * c + np.arange(c)[None, :]
    return make_groups(scan, centres, gridsize, k, rng, grouping)


def counts_per_pattern(scan: ScanData) -> tuple[float, str]:
    """Mean photon counts per pattern of a scan, and where the number comes from.

    ``photon_scale**2 * mean sum X**2`` when the scan records its ``photon_scale`` (simulated data and
    files written by ptycho_exp), else ``mean sum X**2``: the amplitudes are taken as ``sqrt(counts)``.
    """
    energy = mean_pattern_energy(scan.diffraction)
    scale = scan.meta.get("photon_scale")
    if isinstance(scale, (int, float)) and scale > 0:
        return float(scale) ** 2 * energy, "photon_scale**2 * sum X**2 (photon_scale recorded with the data)"
    return energy, "sum X**2 (amplitudes taken as sqrt(counts))"


def _photon_stats(scan: ScanData, from_file: bool = False) -> dict:
    energy = mean_pattern_energy(scan.diffraction)
    stats = {"mean_pattern_energy": energy,
             "normalisation_factor": normalisation_factor(scan.diffraction, scan.N) if energy > 0 else None}
    if "photon_scale" in scan.meta or from_file:
        stats["mean_counts_per_pattern"], stats["counts_source"] = counts_per_pattern(scan)
    if "photon_scale" in scan.meta:
        # a file's own record of how it was simulated (not this job's data.* settings)
        stats["nphotons"] = scan.meta.get("nphotons")
        stats["noise"] = scan.meta.get("noise")
    return stats


def file_record(path: str) -> dict:
    """Path and SHA-256 of a data file, for result.json."""
    from ptycho_exp.data.cache import _file_sha256

    return {"path": os.path.abspath(path), "sha256": _file_sha256(path)}


def _array_sha256(a: np.ndarray) -> str:
    import hashlib

    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def attach_labels(ds: Datasets, obj: np.ndarray, label: str) -> None:
    """Use ``obj`` as the ground truth of the training samples (``data.labels=iterative``), in place.

    Parameters
    ----------
    ds : Datasets with ``train`` and ``train_scan``
    obj : (H, W) complex object in the training scan's coordinates (e.g. an iterative reconstruction of
        the training scan placed with its origin at (0, 0))
    label : what the labels are, recorded as ``ds.info["labels"]``
    """
    if ds.train is None or ds.train_scan is None:
        raise ValueError("attach_labels needs the training samples and the training scan")
    n, C = ds.train.groups.shape
    N = ds.train_scan.N
    patches = extract_patches(obj, ds.train.positions.reshape(-1, 2), N).reshape(n, C, N, N)
    ds.train.patches = np.ascontiguousarray(np.moveaxis(patches, 1, -1), dtype=np.complex64)
    ds.info["labels"] = label


def _load_npz_scan(path: str, N: int, key: str) -> ScanData:
    from ptycho_exp.data.npz import load_contract_npz

    scan = load_contract_npz(path)
    if scan.N != N:
        raise ConfigError(f"data.N={N} is invalid: {key}={path!r} holds {scan.N}×{scan.N} patterns; "
                          f"set data.N={scan.N}")
    if not isinstance(scan.diffraction, np.ndarray):
        return scan  # streamed from HDF5: ground-truth patches (M x N x N complex) are not built in memory
    return ensure_ground_truth_patches(scan)


def _load_file_scan(f: dict, key: str, cache_dir, imports: dict) -> ScanData:
    """The scan of a file kind's ``data.<key>``: a contract file as it is (data=npz), or a measured file
    (data=cxi|ptylab_h5) imported into the dataset cache first and then loaded the same way.

    ``imports[key]`` receives the import's record (format, reader options, cache entry, report)."""
    path = f[key]
    if not path:
        suffix = {"npz": "npz", "cxi": "cxi"}.get(f["kind"], "h5")
        extra = " (or data.train_on=test to train the PINN on the test scan itself)" if key == "train_path" else ""
        raise ConfigError(f"data.{key}=None is invalid: data={f['kind']} needs data.{key}=/path/to/file.{suffix}"
                          + extra)
    if f["kind"] == "npz":
        return _load_npz_scan(path, f["N"], f"data.{key}")
    from ptycho_exp.data.cache import load_or_import
    from ptycho_exp.data.readers.convert import options_from_config
    from ptycho_exp.validate import MEASURED_FORMATS

    fmt = MEASURED_FORMATS[f["kind"]]
    cached = load_or_import(cache_dir, path, fmt, options_from_config(f["reader"], f["N"]))
    scan = _load_npz_scan(cached["contract"], f["N"], f"data.{key}")
    imports[key] = {"format": f["kind"], "reader_format": fmt, "reader": dict(f["reader"]),
                    "source": {"path": os.path.abspath(path), "sha256": cached["source_sha256"]},
                    "contract": cached["contract"], "cache_hit": cached["hit"], "cache_key": cached["key"],
                    "report": scan.meta.get("imported")}
    return scan


def _split_info(scan: ScanData, samples: Samples, from_file: bool = False) -> dict:
    """Summary of one split for ``result.json``: counts, photon statistics and the sampled scan's geometry."""
    summary = scan_summary(scan.positions, scan.N, subset=samples.groups, beam_diameter=probe_diameter(scan.probe))
    return {"n_positions": scan.n_positions, "n_objects": int(scan.meta.get("n_objects", 1)),
            "n_samples": samples.n, "photons": _photon_stats(scan, from_file), "scan": summary}


def build_datasets(data_cfg: DataConfig | Mapping[str, Any], seed: int, cache_dir,
                   need_train: bool = True) -> Datasets:
    """Train and test samples for one job.

    Parameters
    ----------
    data_cfg : the ``data`` config (``DataConfig``, dict or ``DictConfig``)
    seed : the job's seed (chooses the training subset)
    cache_dir : dataset cache folder (simulated data)
    need_train : False for engines without training (iterative); ``train`` is then None

    Returns
    -------
    Datasets; ``info`` holds per split the cache ``hit``/``key`` (simulated) or the file's path and
    SHA-256 (``file``, every file kind; for data=cxi|ptylab_h5 the measured file, and ``import``: the format,
    the ``data.reader`` options, the cached contract file and the import's report), position and sample
    counts, photon statistics and scan geometry, plus ``spatially_local``, ``has_ground_truth``,
    ``trained_on`` ("training scan" | "test scan"), ``probe``
    (where the training probe comes from) and, for file data, ``unused_settings`` (the data.* simulator
    keys that file data ignores, named instead of recorded as if they had been used).
    A measured file (data=cxi|ptylab_h5) is first converted by :func:`ptycho_exp.data.cache.load_or_import`
    into the dataset cache; the contract file it gives is then loaded exactly as a data=npz file.
    """
    from ptycho_exp.data.simulate import resolve_data_fields

    f = resolve_data_fields(data_cfg)
    g, k = f["gridsize"], f["k_neighbors"]
    on_test = str(f.get("train_on", "train")) == "test"
    info: dict = {"kind": f["kind"], "gridsize": g}
    train_scan: ScanData | None = None
    imports: dict = {}
    if f["kind"] == "simulate":
        from ptycho_exp.data.cache import load_or_simulate

        if need_train and not on_test:
            loaded = [load_or_simulate(cache_dir, f, "train", i) for i in range(f["n_train_objects"])]
            train_scan = side_by_side([scan for scan, _, _ in loaded], gap=f["N"])
            info["train_cache"] = {"hit": all(hit for _, hit, _ in loaded), "key": loaded[0][2]}
            if len(loaded) > 1:
                info["train_cache"]["keys"] = [key for _, _, key in loaded]
        test_scan, hit, key = load_or_simulate(cache_dir, f, "test")
        info["test_cache"] = {"hit": hit, "key": key}
    elif f["kind"] in FILE_KINDS:
        if need_train and not on_test:
            train_scan = _load_file_scan(f, "train_path", cache_dir, imports)
        test_scan = _load_file_scan(f, "test_path", cache_dir, imports)
    else:
        raise ConfigError(f"data.kind={f['kind']!r} is invalid: choose one of {', '.join(('simulate',) + FILE_KINDS)}")
    from_file = f["kind"] != "simulate"
    if need_train and on_test:
        if f["n_train"] > test_scan.n_positions:
            raise ConfigError(f"data.n_train={f['n_train']} is invalid with data.train_on=test: the test scan has "
                              f"only {test_scan.n_positions} positions; use data.n_train<={test_scan.n_positions}")
        train_scan = test_scan
        log.info("data.train_on=test: training on the test scan itself (self-supervised, %d positions)",
                 test_scan.n_positions)

    train = None
    if train_scan is not None:
        train = make_samples(train_scan, training_groups(train_scan, f["n_train"], g, k, seed, f["grouping"]))
        info["train"] = _split_info(train_scan, train, from_file)
        info["trained_on"] = "test scan" if on_test else "training scan"
    test = make_samples(test_scan, heldout_groups(test_scan, f["n_test"], g, k, f["test_seed"], f["grouping"]))
    info["test"] = _split_info(test_scan, test, from_file)
    info["spatially_local"] = bool(any(info[s]["scan"]["spatially_local"] for s in ("train", "test") if s in info))
    info["has_ground_truth"] = bool(test_scan.patches is not None or test_scan.object is not None)
    probe_scan = train_scan if train_scan is not None else test_scan
    if from_file:
        def record(key: str) -> dict:  # an imported file's hash is already known (its cache key)
            return imports[key]["source"] if key in imports else file_record(f[key])

        info["test"]["file"] = record("test_path")
        if train_scan is not None:
            info["train"]["file"] = info["test"]["file"] if on_test else record("train_path")
        for split, key in (("test", "test_path"), ("train", "train_path")):
            if key in imports and split in info:
                info[split]["import"] = {k: v for k, v in imports[key].items() if k != "source"}
        if on_test and "import" in info["test"] and "train" in info:
            info["train"]["import"] = info["test"]["import"]
        probe_path = f["test_path"] if (on_test or train_scan is None) else f["train_path"]
        info["probe"] = {"source": f"file:{probe_path}", "sha256": _array_sha256(probe_scan.probe)}
        unused = SIMULATION_KEYS + (("reader",) if f["kind"] == "npz" else ())  # data=npz imports nothing
        info["unused_settings"] = [f"data.{key}" for key in unused]
    else:
        info["probe"] = {"source": f"simulated:{f['probe']}" + (f":{f['probe_path']}" if f["probe"] == "file" else ""),
                         "sha256": _array_sha256(probe_scan.probe)}
    counts = None
    if train_scan is not None:
        counts = counts_per_pattern(train_scan)[0] if from_file else float(f["nphotons"])
    return Datasets(train=train, test=test, train_scan=train_scan, test_scan=test_scan, info=info,
                    probe=None if train_scan is None else train_scan.probe, counts_per_pattern=counts)
