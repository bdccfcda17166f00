"""``ptycho-exp predict``: reconstruct a contract NPZ or HDF5 scan with a trained network (PINN or baseline).

The saved inference model (``<job>/model/model.keras``) is loaded with ``safe_mode=True`` (the
custom layers are registered, no Python code is deserialised), the data with ``allow_pickle=False``.
Patterns are multiplied by the training set's normalisation factor (``norm.json``), as the job multiplied
its test scan, so a job's own test scan is reconstructed exactly as the job reconstructed it; with
``--norm scan`` the factor is computed on this file instead (mean per-pattern ``sum X**2 = (N/2)**2``),
for a scan recorded at another dose than the training data. Patterns are grouped like a job's test set
when the model was trained with gridsize > 1 (knn or g x g grid blocks, as the model's training groups
were), predicted in batches, and each batch's central crops are added to the stitched object at the scan
positions, so only the object and one batch are held (an ``.h5`` scan's patterns are read from the file
batch by batch). With ``--phase-sync`` each patch's constant phase is first aligned with its overlapping
neighbours (:mod:`ptycho_exp.evaluate.phase_sync`), as a job with ``eval.phase_sync=true`` scores it.
"""
from __future__ import annotations

import io
import json
import logging
from functools import partial
from pathlib import Path

import numpy as np

from ptycho_exp.files import MODEL_DIR, MODEL_FILE
from ptycho_exp.files import NORM_FILE as META_FILE

log = logging.getLogger(__name__)


def resolve_model_dir(model_dir: Path | str) -> Path:
    """The folder holding ``model.keras``: ``model_dir`` itself or its ``model/`` subfolder.

    Raises
    ------
    FileNotFoundError
        Neither holds a saved network; the message names the path and how to get one.
    """
    path = Path(model_dir)
    for candidate in (path, path / MODEL_DIR):
        if (candidate / MODEL_FILE).is_file():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"model folder {str(path)!r} does not exist: pass a job folder or its model/ "
                                "folder (a job of model=pinn or model=baseline with train.save_model=true)")
    raise FileNotFoundError(f"no saved network ({MODEL_FILE}) in {str(path)!r} or {str(path / MODEL_DIR)!r}: "
                            "pass a finished network job's folder (train.save_model=true keeps the model)")


def read_meta(model_dir: Path) -> dict:
    """``norm.json`` beside the model (N, gridsize, model name...); empty when absent."""
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable model metadata ({exc}); re-run the job to re-save the model") from None
    return meta if isinstance(meta, dict) else {}


def model_geometry(model, meta: dict) -> tuple[int, int]:
    """``(N, C)`` of a loaded inference model's diffraction input, checked against ``meta``."""
    shape = tuple(model.inputs[0].shape)
    N, C = int(shape[1]), int(shape[-1])
    if meta.get("N") not in (None, N):
        raise ValueError(f"model metadata says N={meta['N']} but the saved network takes {N}x{N} patterns; "
                         "the model folder is inconsistent: re-run the job")
    return N, C


def group_scan(positions: np.ndarray, gridsize: int, grouping: str = "knn", step: float | None = None,
               k: int = 7, seed: int = 12345) -> tuple[np.ndarray, list[str]]:
    """Groups (M, C) anchored at every position (as a job's test set): each position is predicted at least once.

    Parameters
    ----------
    positions : (M, 2) [y, x]
    gridsize : the model's group side
    grouping : how the model's training groups were formed: ``knn`` (a position and C-1 of its ``k``
        nearest) or ``block`` (g x g blocks of a grid). A ``block`` model on a scan that is not a grid
        falls back to ``knn`` and says so.
    step : the training groups' neighbour step (px); a scan whose step differs by more than 10 % is noted.

    Returns
    -------
    groups : (M, C) int64 indices into ``positions``
    notes : warnings for the user (empty when the scan matches the training geometry)
    """
    from ptycho_exp.physics.scan import group_around, group_blocks, neighbour_step

    m = positions.shape[0]
    rng = np.random.default_rng(seed)
    centres = np.arange(m, dtype=np.int64)
    notes: list[str] = []
    groups = None
    if gridsize > 1 and grouping == "block":
        try:
            groups = group_blocks(positions, centres, gridsize, rng)
        except ValueError:
            notes.append(f"the model was trained on {gridsize}x{gridsize} grid blocks but this scan is not a "
                         "grid: grouped each position with its nearest neighbours (knn) instead")
    if groups is None:
        groups = group_around(positions, centres, gridsize, rng, k)
    if gridsize > 1 and step:
        here = neighbour_step(positions[groups])
        if abs(here - step) > 0.1 * step:
            notes.append(f"neighbours in this scan's groups are {here:.3g} px apart, the model was trained on "
                         f"{step:.3g} px: expect lower quality (scan with a {step:.3g} px step)")
    return groups, notes


def predict_scan(model, diffraction: np.ndarray, positions: np.ndarray, gridsize: int,
                 batch_size: int = 256, grouping: str = "knn",
                 step: float | None = None) -> tuple[np.ndarray, np.ndarray, float, list[str]]:
    """Predicted object patches and their positions for one scan.

    Parameters
    ----------
    model : keras.Model
        Inference model (normalised diffraction (n, N, N, C) -> complex patches (n, N, N, C)).
    diffraction : np.ndarray
        (M, N, N) amplitude as stored.
    positions : np.ndarray
        (M, 2) [y, x] patch centres.
    gridsize : int
        The model's group side (C = gridsize**2).
    batch_size : int
        Samples per forward pass.
    grouping, step : str, float
        The model's training grouping and neighbour step (see :func:`group_scan`).

    Returns
    -------
    patches : np.ndarray
        complex64 (M*C, N, N) (one per grouped pattern).
    patch_positions : np.ndarray
        (M*C, 2) positions of those patches.
    norm_factor : float
        The normalisation applied to the data.
    notes : list[str]
        Warnings from :func:`group_scan`.
    """
    from ptycho_exp.models.fit import compute_norm_factor, predict_patches
    from ptycho_exp.physics.scan import relative_offsets

    groups, notes = group_scan(positions, gridsize, grouping, step)
    samples = np.moveaxis(diffraction[groups], 1, -1)          # (M, N, N, C)
    norm = compute_norm_factor(diffraction)
    offsets = relative_offsets(positions, groups) if gridsize > 1 else None
    pred = predict_patches(model, samples, norm, batch_size=batch_size, offsets=offsets)
    n, N = pred.shape[0], pred.shape[1]
    patches = np.moveaxis(pred, -1, 1).reshape(-1, N, N)
    return patches, positions[groups].reshape(n * groups.shape[1], 2), norm, notes


def stitch_predictions(model, samples, positions: np.ndarray, norm_factor: float, crop: int,
                       origin=None, shape=None, batch_size: int = 256,
                       offsets: np.ndarray | None = None, phase_factors: np.ndarray | None = None,
                       windows_out: np.ndarray | None = None):
    """Predict samples batch by batch and add each batch's patches to the stitched object at once.

    Memory is the canvas plus one batch, whatever the number of samples: the patterns are read per batch
    (``samples`` may be a :class:`ptycho_exp.data.h5.GroupedPatterns` reading a file) and the predicted
    patches are not kept. The object equals :func:`ptycho_exp.evaluate.stitch.stitch_patches` on all the
    patches of :func:`ptycho_exp.models.fit.predict_patches` (the same chunks, bit for bit).

    Parameters
    ----------
    model : keras.Model
        Inference model.
    samples : array-like
        (n, N, N, C) amplitude as stored, with ``shape`` and row slicing.
    positions : np.ndarray
        (n, C, 2) [y, x] position of each sample's patterns.
    norm_factor : float
        The normalisation applied to the samples.
    crop, origin, shape : int, tuple, tuple
        Stitching crop and canvas (default: the scanned box), as in ``stitch_patches``.
    batch_size : int
        Samples per forward pass.
    offsets : np.ndarray, optional
        (n, C, 2), for a PINN with C > 1.
    phase_factors : np.ndarray, optional
        (n * C,) unit complex factors ``u``: patch ``m`` is stitched as ``patch * conj(u[m])``
        (:func:`ptycho_exp.evaluate.phase_sync.patch_phase_factors`).
    windows_out : np.ndarray, optional
        (n * C, w, w) complex array filled with each predicted patch's central ``w`` x ``w`` window (before
        ``phase_factors``), what :func:`~ptycho_exp.evaluate.phase_sync.patch_phase_factors` needs.

    Returns
    -------
    stitched : ptycho_exp.evaluate.stitch.Stitched
    predict_seconds : float
        Time spent in the network's forward passes (reading included, stitching excluded).
    """
    import time

    from ptycho_exp.evaluate.stitch import StitchAccumulator
    from ptycho_exp.models.fit import predicted_batches

    positions = np.asarray(positions, dtype=np.float64)
    N = int(samples.shape[1])
    acc = StitchAccumulator(positions.reshape(-1, 2), N, crop, shape=shape, origin=origin)
    seconds, t0 = 0.0, time.perf_counter()
    if windows_out is not None:
        w = windows_out.shape[-1]
        a = N // 2 - w // 2
    for start, stop, pred in predicted_batches(model, samples, norm_factor, batch_size, offsets):
        seconds += time.perf_counter() - t0
        patches = np.moveaxis(pred, -1, 1).reshape(-1, N, N)
        lo, hi = start * pred.shape[-1], stop * pred.shape[-1]  # patch rows of samples start:stop
        if windows_out is not None:
            windows_out[lo:hi] = patches[:, a:a + w, a:a + w]
        if phase_factors is not None:
            patches = (patches * np.conj(phase_factors[lo:hi])[:, None, None]).astype(patches.dtype, copy=False)
        acc.add(patches, positions[start:stop].reshape(-1, 2))
        t0 = time.perf_counter()
    return acc.result(), seconds + time.perf_counter() - t0


def stitch_phase_synced(stitch, positions: np.ndarray, crop: int):
    """Stitch twice: as predicted, then with each patch's constant phase aligned to its neighbours.

    The first pass keeps each patch's central ``crop`` x ``crop`` window (the part stitching keeps), the
    phase factors are found from those (:func:`ptycho_exp.evaluate.phase_sync.patch_phase_factors`), and the
    second pass predicts and stitches again with them applied. Memory: the canvas, one batch and the windows.

    Parameters
    ----------
    stitch : callable
        :func:`stitch_predictions` with everything but ``phase_factors`` / ``windows_out`` bound.
    positions : np.ndarray
        (M, 2) position of every patch, in the order predicted.
    crop : int
        The stitching crop; also the compared window.

    Returns
    -------
    as_predicted, aligned : ptycho_exp.evaluate.stitch.Stitched
    predict_seconds : float
        Both passes.
    """
    from ptycho_exp.evaluate.phase_sync import patch_phase_factors

    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    windows = np.empty((positions.shape[0], crop, crop), np.complex64)
    as_predicted, s0 = stitch(windows_out=windows)
    aligned, s1 = stitch(phase_factors=patch_phase_factors(windows, positions, window=crop))
    return as_predicted, aligned, s0 + s1


def stitch_scan(model, diffraction, positions: np.ndarray, gridsize: int, crop: int, batch_size: int = 256,
                grouping: str = "knn", step: float | None = None, norm_factor: float | None = None,
                phase_sync: bool = False):
    """Predict and stitch one scan batch by batch (its patterns may stay in a file).

    Parameters
    ----------
    model, positions, gridsize, batch_size, grouping, step
        As in :func:`predict_scan`.
    diffraction : array-like
        (M, N, N) amplitude as stored: an array or a :class:`ptycho_exp.data.h5.H5Patterns`.
    crop : int
        Stitching crop.
    norm_factor : float, optional
        The factor the patterns are multiplied by (the training set's, ``norm.json``); None: computed on
        this scan (:func:`ptycho_exp.models.fit.compute_norm_factor`).
    phase_sync : bool
        Align each patch's constant phase with its overlapping neighbours before stitching
        (:func:`stitch_phase_synced`; the scan is predicted twice).

    Returns
    -------
    stitched : ptycho_exp.evaluate.stitch.Stitched
        The object on the scanned box of all grouped patterns.
    norm_factor : float
    notes : list[str]
        Warnings from :func:`group_scan`.
    """
    from ptycho_exp.data.h5 import GroupedPatterns
    from ptycho_exp.models.fit import compute_norm_factor
    from ptycho_exp.physics.scan import relative_offsets

    groups, notes = group_scan(positions, gridsize, grouping, step)
    norm = compute_norm_factor(diffraction) if norm_factor is None else float(norm_factor)  # read in chunks
    offsets = relative_offsets(positions, groups) if gridsize > 1 else None
    stitch = partial(stitch_predictions, model, GroupedPatterns(diffraction, groups), positions[groups], norm, crop,
                     batch_size=batch_size, offsets=offsets)
    st = stitch_phase_synced(stitch, positions[groups], crop)[1] if phase_sync else stitch()[0]
    return st, norm, notes


NORM_CHOICES = ("model", "scan")


def predict_file(model_dir: Path | str, data_path: Path | str, out_path: Path | str,
                 crop: int | None = None, batch_size: int = 256, norm: str = "model",
                 phase_sync: bool = False) -> str:
    """Reconstruct the scan in ``data_path`` with the network in ``model_dir``; write an NPZ atomically.

    Parameters
    ----------
    model_dir : path
        A job folder or its ``model/`` folder (``model.keras`` + ``norm.json``).
    data_path : path
        Contract NPZ (docs/CONTRACT.md §4): diffraction amplitude, xcoords / ycoords, probeGuess; or the
        same keys in an HDF5 file (``.h5``), whose patterns are read batch by batch (:func:`stitch_scan`).
    out_path : path
        Output ``.npz`` with ``object`` (complex64 stitched object), ``weight`` (patches per pixel),
        ``origin`` (object coordinate of ``object[0, 0]``), ``positions`` (M, 2), ``crop``, ``N``,
        ``norm_factor``, ``norm`` (where the factor came from) and ``model`` (name).
    crop : int, optional
        Central crop kept per patch (default 20 px at N=64, scaled with N).
    batch_size : int
        Samples per forward pass.
    norm : {"model", "scan"}
        model: the training set's normalisation factor from ``norm.json`` (what the job applied to its test
        scan); scan: the factor computed on this scan (another dose than the training data).
    phase_sync : bool
        Align each patch's constant phase with its overlapping neighbours before stitching, as a job with
        ``eval.phase_sync=true`` does (:func:`stitch_phase_synced`).

    Returns
    -------
    str
        A one-line summary naming the output file.

    Raises
    ------
    FileNotFoundError
        No saved network in ``model_dir``.
    ValueError
        The data break the contract (``DataContractError``) or do not match the network (patch size N).
    """
    import keras

    from ptycho_exp.data.npz import load_contract_npz
    from ptycho_exp.evaluate.stitch import default_crop
    from ptycho_exp.models import layers  # noqa: F401  (registers the custom layers for safe loading)
    from ptycho_exp.files import atomic_write_bytes

    mdir = resolve_model_dir(model_dir)
    meta = read_meta(mdir)
    scan = load_contract_npz(data_path)
    model = keras.saving.load_model(mdir / MODEL_FILE, safe_mode=True, compile=False)
    N, C = model_geometry(model, meta)
    if scan.N != N:
        raise ValueError(f"{data_path}: 'diffraction' holds {scan.N}x{scan.N} patterns but the network in "
                         f"{mdir} was trained on N={N}; use a model trained with data.N={scan.N} or "
                         f"data of {N}x{N} patterns")
    gridsize = round(C ** 0.5)
    if gridsize ** 2 != C:
        raise ValueError(f"the network in {mdir} takes {C} channels, not gridsize**2; re-run the job")
    if len(model.inputs) > 1 and not meta.get("needs_offsets", True):
        raise ValueError(f"the network in {mdir} takes offsets but its metadata says it does not; re-run the job")
    if norm not in NORM_CHOICES:
        raise ValueError(f"norm={norm!r}: choose one of {', '.join(NORM_CHOICES)}")
    if norm == "model" and not meta.get("norm_factor"):
        raise ValueError(f"{mdir / META_FILE} records no norm_factor (the training set's normalisation); "
                         f"use --norm scan to normalise this scan by its own patterns")
    crop = default_crop(N) if crop is None else int(crop)
    factor = float(meta["norm_factor"]) if norm == "model" else None
    st, norm_factor, notes = stitch_scan(model, scan.diffraction, scan.positions, gridsize, crop, batch_size,
                                         grouping=str(meta.get("grouping", "knn")), step=meta.get("neighbour_step"),
                                         norm_factor=factor, phase_sync=phase_sync)
    buf = io.BytesIO()
    np.savez_compressed(buf, object=st.image.astype(np.complex64), weight=st.weight.astype(np.float32),
                        origin=np.asarray(st.origin, np.int64), positions=scan.positions.astype(np.float64),
                        crop=np.int64(crop), N=np.int64(N), norm_factor=np.float64(norm_factor),
                        norm=np.array(norm), model=np.array(str(meta.get("model", "network"))),
                        phase_sync=np.bool_(phase_sync))
    out = Path(out_path)
    atomic_write_bytes(out, buf.getvalue())
    return (f"wrote {out}: {st.image.shape[0]}x{st.image.shape[1]} object from {scan.n_positions} patterns "
            f"({meta.get('model', 'network')}, N={N}, gridsize={gridsize}, crop={crop}, "
            f"normalised by the {'training set' if norm == 'model' else 'scan'}'s factor {norm_factor:.6g})"
            + "".join(f"\nwarning: {note}" for note in notes))
