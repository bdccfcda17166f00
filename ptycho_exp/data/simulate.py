"""Simulated ptychographic scans (docs/CONTRACT.md §1-3).

Everything is seeded: the same data fields give byte-identical arrays. Each scan draws from three
independent random streams derived from its seed (``data.train_seed`` or ``data.test_seed``):
the object, the scan positions and the photon noise, so e.g. turning noise off leaves the object
and positions unchanged.

Bump :data:`SIMULATOR_VERSION` whenever a change here (or in ``ptycho_exp.physics``) changes the
simulated arrays: it is part of every dataset cache key.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ptycho_exp.config import DataConfig, ReaderConfig
from ptycho_exp.data.container import ScanData
from ptycho_exp.physics.forward import diffract, exit_wave, photon_scale, poisson_noise
from ptycho_exp.physics.objects import make_object
from ptycho_exp.physics.probe import make_probe
from ptycho_exp.physics.scan import (
    block_grid_positions,
    extract_patches,
    grid_positions,
    jitter_positions,
    random_positions,
)

SIMULATOR_VERSION = "1"
WHICH = ("train", "test")

_OBJECT_STREAM, _SCAN_STREAM, _NOISE_STREAM = 0, 1, 2
_CHUNK = 1024

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(DataConfig)}
_FLOAT_FIELDS = {"nphotons", "probe_scale", "probe_defocus", "train_stride", "test_stride", "jitter"}
_INT_FIELDS = {"object_size", "N", "gridsize", "n_train", "n_train_objects", "n_random_positions", "train_seed",
               "test_seed", "k_neighbors"}


def resolve_data_fields(data: DataConfig | Mapping[str, Any]) -> dict:
    """Plain dict of every ``DataConfig`` field with canonical Python types.

    Accepts a ``DataConfig``, a dict or an OmegaConf ``DictConfig``; missing keys take the
    ``DataConfig`` defaults, unknown keys raise ``KeyError`` (a typo must not be ignored).
    Numbers are cast to the schema's type (so ``nphotons: 1000000000`` and ``1e9`` agree).
    """
    if dataclasses.is_dataclass(data):
        given = dataclasses.asdict(data)
    else:
        given = {str(k): data[k] for k in data}
    unknown = sorted(set(given) - set(_FIELD_TYPES))
    if unknown:
        raise KeyError(f"unknown data field(s) {unknown}; valid fields: {sorted(_FIELD_TYPES)}")
    fields = dataclasses.asdict(DataConfig())
    fields.update(given)
    for name in _FLOAT_FIELDS:
        fields[name] = float(fields[name])
    for name in _INT_FIELDS:
        fields[name] = int(fields[name])
    fields["n_test"] = None if fields["n_test"] is None else int(fields["n_test"])
    fields["noise"] = bool(fields["noise"])
    reader = dataclasses.asdict(ReaderConfig())
    reader.update({str(k): v for k, v in dict(fields["reader"] or {}).items()})
    fields["reader"] = reader
    for name in ("kind", "object", "object_phase", "probe", "scan"):
        fields[name] = str(fields[name])
    return fields


def scan_seed(fields: Mapping[str, Any], which: str) -> int:
    """``train_seed`` or ``test_seed`` for ``which``."""
    if which not in WHICH:
        raise ValueError(f"which={which!r}: choose 'train' or 'test'")
    return int(fields["train_seed"] if which == "train" else fields["test_seed"])


def block_test_layout(fields: Mapping[str, Any], which: str) -> bool:
    """True for the test scan of ``grouping=block`` with gridsize > 1 on a grid: g x g blocks at the
    training step, placed on the test grid (see :func:`~ptycho_exp.physics.scan.block_grid_positions`)."""
    return (which == "test" and fields["scan"] == "grid" and fields["grouping"] == "block"
            and int(fields["gridsize"]) > 1)


def scan_stride(fields: Mapping[str, Any], which: str) -> float:
    """Grid step of the ``which`` scan (``train_stride`` or ``test_stride``)."""
    return float(fields["train_stride"] if which == "train" else fields["test_stride"])


def _stream(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """Random stream ``stream`` of the scan seeded ``seed``; ``index`` > 0 picks another training object."""
    key = [int(seed), int(stream)] if index == 0 else [int(seed), int(stream), int(index)]
    return np.random.default_rng(key)


def simulate_scan(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray, nphotons: float,
                  noise: bool, rng: np.random.Generator) -> ScanData:
    """Simulate the diffraction of ``probe`` scanned over ``obj`` at ``positions``.

    Parameters
    ----------
    obj : (H, W) complex object
    probe : (N, N) complex probe
    positions : (M, 2) [y, x] patch centres
    nphotons : mean total counts per pattern (sets the noise level)
    noise : draw Poisson noise (otherwise the noise-free amplitude is returned)
    rng : Generator for the noise

    Returns
    -------
    ScanData with ``diffraction`` (M, N, N) float32 amplitude, ``patches`` the ground-truth object
    patches (complex64), ``object`` = ``obj`` and ``meta`` holding ``photon_scale`` (s such that
    ``(s*X)**2`` are counts), ``nphotons`` and ``noise``.
    """
    probe = np.asarray(probe, dtype=np.complex64)
    N = probe.shape[-1]
    positions = np.asarray(positions, dtype=np.float64)
    patches = extract_patches(obj, positions, N)
    amplitude = np.empty(patches.shape, dtype=np.float32)
    for start in range(0, patches.shape[0], _CHUNK):
        amplitude[start:start + _CHUNK] = diffract(exit_wave(probe, patches[start:start + _CHUNK]))
    scale = photon_scale(amplitude, nphotons)
    diffraction = poisson_noise(amplitude, nphotons, rng) if noise else amplitude
    meta = {"photon_scale": scale, "nphotons": float(nphotons), "noise": bool(noise)}
    return ScanData(diffraction=diffraction, positions=positions, probe=probe,
                    object=np.asarray(obj, dtype=np.complex64), patches=patches, meta=meta)


def simulate_positions(fields: Mapping[str, Any], which: str, rng: np.random.Generator) -> np.ndarray:
    """Scan positions of ``which`` (grid of its stride, or ``n_random_positions`` uniform), jittered."""
    size, N = int(fields["object_size"]), int(fields["N"])
    if block_test_layout(fields, which):
        positions = block_grid_positions(size, N, fields["test_stride"], fields["train_stride"], fields["gridsize"])
    elif fields["scan"] == "grid":
        positions = grid_positions(size, N, scan_stride(fields, which))
    elif fields["scan"] == "random":
        positions = random_positions(size, N, int(fields["n_random_positions"]), rng)
    else:
        raise ValueError(f"data.scan={fields['scan']!r}: choose grid or random")
    if float(fields["jitter"]) > 0:
        positions = jitter_positions(positions, float(fields["jitter"]), rng, low=N / 2.0, high=size - N / 2.0)
    return positions


def simulate_object_scan(data_fields: DataConfig | Mapping[str, Any], which: str, index: int = 0) -> ScanData:
    """Simulate the ``which`` ("train" or "test") scan described by the data config.

    Builds the object (seeded by ``train_seed``/``test_seed``), the probe, the positions and the
    noise; the ground-truth patches and object are kept in the result. ``index`` > 0 gives training
    object number ``index`` of ``data.n_train_objects``: its object, positions and noise come from
    streams of their own, so object 0 is the same whatever the number of objects.
    """
    fields = resolve_data_fields(data_fields)
    seed = scan_seed(fields, which)
    index = int(index)
    if index < 0 or (index > 0 and which != "train"):
        raise ValueError(f"index={index}: only the training scan has more than one object (index >= 0)")
    obj = make_object(fields["object"], fields["object_size"], _stream(seed, _OBJECT_STREAM, index),
                      phase=fields["object_phase"])
    probe = make_probe(fields["probe"], fields["N"], fields["probe_scale"], defocus=fields["probe_defocus"],
                       path=fields["probe_path"])
    positions = simulate_positions(fields, which, _stream(seed, _SCAN_STREAM, index))
    scan = simulate_scan(obj, probe, positions, fields["nphotons"], fields["noise"],
                         _stream(seed, _NOISE_STREAM, index))
    scan.meta.update({"which": which, "seed": seed, "object_index": index, "simulator_version": SIMULATOR_VERSION,
                      "object": fields["object"], "probe": fields["probe"], "scan": fields["scan"]})
    if block_test_layout(fields, which):  # consecutive runs of g*g positions are the samples
        scan.meta["block_size"] = int(fields["gridsize"]) ** 2
    return scan
