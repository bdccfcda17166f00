"""``ptycho-exp score``: score a reconstruction made by any code with this framework's evaluation.

The result is a job folder that the aggregator reads as one more arm, ``model = external:<label>``:
``result.json`` (status ok, metrics, ``scored_against``, a config-like record naming the test file and its
hash), ``recon.npz`` (registered reconstruction and reference, as every job writes it), ``frc.csv`` and
``compare_amp_phase.png``. Scoring is :func:`ptycho_exp.evaluate.pipeline.evaluate_object`, the path the
iterative arms take: the same box of the object as every job on that test scan (the rectangle fully
covered by the test positions' central crops), the same registration, metrics and FRC curves.

Reconstruction file (``RECON``)
-------------------------------
An NPZ (read with ``allow_pickle=False``) or an HDF5 file (any name; read with h5py) holding

``object`` or ``objectGuess``
    (H, W) complex object image; or, instead,
``amplitude`` and ``phase``
    two (H, W) real images (``object = amplitude * exp(1j * phase)``).
``--key NAME`` picks another array (an HDF5 path such as ``/entry/object``). Leading axes of length 1
(a channel or mode axis) are dropped. Or, from a network that predicts one patch per pattern,

``patches``
    (M, N, N) complex object patches, one per test pattern in the test file's order
    (``patch[i, j]`` samples ``obj[y - N/2 + i, x - N/2 + j]`` at the pattern's position), which are stitched
    and scored exactly as a job stitches and scores its own network's patches
    (:func:`~ptycho_exp.evaluate.pipeline.evaluate_reconstruction`). ``--phase-sync`` first aligns each patch's
    constant phase with its overlapping neighbours, as a job with ``eval.phase_sync=true`` does, and keeps the
    scores as predicted under ``phase_sync.as_predicted``. Patches are in the test frame by construction, so
    the frame options below other than ``--transpose`` and ``--conjugate`` do not apply to them.

Pixel frame
-----------
The pixel size must be the test scan's (the frame in which its ``xcoords``/``ycoords`` are measured).
Where ``object[0, 0]`` sits in that frame is, in order of precedence:

1. ``--pixel-origin X,Y``: column X and row Y of ``object[0, 0]`` in the test scan's pixel frame; or
   ``--positions-from-test``: the object was reconstructed from the test file's positions by a code that
   puts ``object[0, 0]`` at the corner of the scanned area, i.e. at row ``min(ycoords) - N/2``, column
   ``min(xcoords) - N/2`` (rounded: :func:`~ptycho_exp.evaluate.stitch.scanned_box` of the full patches);
2. ``origin`` in the file: (2,) ``[row, col]`` (what ``ptycho-exp predict`` writes);
3. ``xcoords``/``ycoords`` in the file: the scan positions (one per test pattern, in the test file's order)
   in the reconstruction's own pixel frame; the origin is the (integer) shift between them and the test
   file's, which must be a pure shift (else the pixel sizes differ: an error);
4. nothing: the same frame as the test file's ``objectGuess`` (origin 0, 0).

``--transpose`` swaps the image's axes first (codes that store (x, y)); ``--conjugate`` flips the sign of
its phase (codes with the opposite Fourier sign convention). Registration then removes any residual
sub-pixel (and small integer) offset, as it does for every job.

Bad or mismatched input (unreadable file, missing key, a non-complex object, an image that does not cover
the scored box, a test file without ``objectGuess`` and no ``--reference``) raises :class:`ExternalInputError`
with one line naming the file, the key and the fix; nothing is written.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptycho_exp.models.registry import EXTERNAL_PREFIX, is_external

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


OBJECT_KEYS = ("object", "objectGuess")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class ExternalInputError(ValueError):
    """A reconstruction, test or reference file that cannot be scored; the message is one line with the fix."""


@dataclass
class ScoreOptions:
    """How ``ptycho-exp score`` reads and scores one reconstruction (defaults: a job's ``eval`` defaults)."""

    label: str
    key: str | None = None
    pixel_origin: tuple[float, float] | None = None  # (row, col) of object[0, 0] in the test frame
    scan_corner: bool = False  # object[0, 0] at the corner of the test scan's full patches
    transpose: bool = False
    conjugate: bool = False
    reference: str | None = None
    seed: int | None = None
    crop: int | None = None
    upsample_factor: int = 50
    trim_px: int = 2
    figures: bool = True
    phase_sync: bool = False  # patches only: align their constant phases first (eval.phase_sync)


@dataclass
class Recon:
    """A reconstruction as read: the object, where its [0, 0] sits (or None: unknown), and how it was found;
    or (``patches`` set, ``object`` None) one patch per test pattern."""

    object: np.ndarray | None
    origin: tuple[float, float] | None
    positions: np.ndarray | None  # (M, 2) [y, x] in the reconstruction's own frame, when the file has them
    key: str
    patches: np.ndarray | None = None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ reading
def _read_arrays(path: str, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays named ``wanted`` that a NPZ or HDF5 file holds (absent ones are left out)."""
    import numpy as np

    if not os.path.isfile(path):
        raise ExternalInputError(f"{path}: no such file. Fix: check the path of the reconstruction")
    with open(path, "rb") as fh:
        is_hdf5 = fh.read(8) == HDF5_SIGNATURE
    if is_hdf5:
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                out = {}
                for k in wanted:
                    node = fh.get(k)
                    if isinstance(node, h5py.Dataset):
                        out[k] = np.asarray(node[()])
                return out
        except OSError as exc:
            raise ExternalInputError(f"{path}: not a readable HDF5 file ({exc}). Fix: re-save it with h5py") from None
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ExternalInputError(f"{path}: a single .npy array, not an NPZ with named keys. Fix: "
                                         "np.savez(path, object=obj)")
            return {k: np.asarray(z[k]) for k in wanted if k in z.files}
    except ExternalInputError:
        raise
    except ValueError as exc:
        raise ExternalInputError(f"{path}: cannot be read without pickle ({exc}). Fix: save plain numeric "
                                 "arrays with numpy.savez or h5py") from None
    except (OSError, EOFError) as exc:
        raise ExternalInputError(f"{path}: not a readable NPZ or HDF5 file ({type(exc).__name__}: {exc}). Fix: "
                                 "save it with numpy.savez (.npz) or h5py (.h5)") from None


def _image(path: str, key: str, arr: np.ndarray, want_complex: bool) -> np.ndarray:
    """``arr`` as a 2-D image (leading length-1 axes dropped), checked: numeric, finite, complex if asked."""
    import numpy as np

    a = np.asarray(arr)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0:
        raise ExternalInputError(f"{path}: key '{key}' has shape {arr.shape}: expected a 2-D (H, W) image. "
                                 "Fix: save one 2-D object (pick a mode/slice before saving)")
    if want_complex and a.dtype.kind != "c":
        raise ExternalInputError(f"{path}: key '{key}' has dtype {a.dtype}: expected a complex object. Fix: "
                                 "save the complex object, or its 'amplitude' and 'phase' as two real images")
    if a.dtype.kind not in ("fc" if want_complex else "iuf"):
        raise ExternalInputError(f"{path}: key '{key}' has dtype {a.dtype}: expected real numbers. Fix: save "
                                 "float32 images")
    if not np.all(np.isfinite(a)):
        raise ExternalInputError(f"{path}: key '{key}' holds NaN/Inf values. Fix: repair them before saving")
    return a


def _patches(path: str, arr: np.ndarray) -> np.ndarray:
    """``arr`` checked as (M, N, N) finite complex patches."""
    import numpy as np

    a = np.asarray(arr)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[0] == 0:
        raise ExternalInputError(f"{path}: key 'patches' has shape {a.shape}: expected (M, N, N), one N x N patch "
                                 "per test pattern. Fix: save the predicted patches so")
    if a.dtype.kind != "c":
        raise ExternalInputError(f"{path}: key 'patches' has dtype {a.dtype}: expected complex patches. Fix: save "
                                 "amplitude * exp(1j * phase)")
    if not np.all(np.isfinite(a)):
        raise ExternalInputError(f"{path}: key 'patches' holds NaN/Inf values. Fix: repair them before saving")
    return a


def read_reconstruction(path: str | os.PathLike, key: str | None = None) -> Recon:
    """Read an external reconstruction (see the module docstring for the keys).

    Raises
    ------
    ExternalInputError
        The file or key is missing, the array is not a complex 2-D image, or its extras are malformed.
    """
    import numpy as np

    path = os.fspath(path)
    names = ((key,) if key else OBJECT_KEYS) + ("amplitude", "phase", "origin", "xcoords", "ycoords", "patches")
    arrays = _read_arrays(path, names)
    found = next((k for k in ((key,) if key else OBJECT_KEYS) if k in arrays), None)
    if found is None and key is None and "patches" in arrays and "amplitude" not in arrays:
        return Recon(object=None, origin=None, positions=None, key="patches",
                     patches=_patches(path, arrays["patches"]))
    if found is not None:
        obj = _image(path, found, arrays[found], want_complex=True)
    elif key is None and "amplitude" in arrays and "phase" in arrays:
        amp = _image(path, "amplitude", arrays["amplitude"], want_complex=False)
        phase = _image(path, "phase", arrays["phase"], want_complex=False)
        if amp.shape != phase.shape:
            raise ExternalInputError(f"{path}: 'amplitude' {amp.shape} and 'phase' {phase.shape} differ in shape. "
                                     "Fix: save both on the same pixels")
        obj, found = amp * np.exp(1j * phase.astype(np.float64)), "amplitude+phase"
    else:
        wanted = f"'{key}'" if key else "'object' (or 'objectGuess', or 'amplitude' + 'phase')"
        raise ExternalInputError(f"{path}: key {wanted} is missing. Fix: save the complex object under that key "
                                 "or name the key holding it with --key")
    origin = None
    if "origin" in arrays:
        o = np.asarray(arrays["origin"], dtype=np.float64).reshape(-1)
        if o.shape != (2,) or not np.all(np.isfinite(o)):
            raise ExternalInputError(f"{path}: key 'origin' has shape {arrays['origin'].shape}: expected (2,) "
                                     "[row, col]. Fix: save it so, or give --pixel-origin X,Y")
        origin = (float(o[0]), float(o[1]))
    positions = None
    if "xcoords" in arrays and "ycoords" in arrays:
        x = np.asarray(arrays["xcoords"], np.float64).reshape(-1)
        y = np.asarray(arrays["ycoords"], np.float64).reshape(-1)
        if x.shape != y.shape:
            raise ExternalInputError(f"{path}: 'xcoords' {x.shape} and 'ycoords' {y.shape} differ in length. Fix: "
                                     "save one coordinate pair per pattern, or drop them and give --pixel-origin")
        positions = np.stack([y, x], axis=1)
    return Recon(object=np.asarray(obj).astype(np.complex128), origin=origin, positions=positions, key=found)


def origin_from_positions(recon_pos: np.ndarray, test_pos: np.ndarray, path: str) -> tuple[float, float]:
    """The test-frame coordinate of the reconstruction's [0, 0] from the same scan's positions in both frames.

    Raises
    ------
    ExternalInputError
        Different counts, or frames that differ by more than a shift (a different pixel size or orientation).
    """
    import numpy as np

    if recon_pos.shape != test_pos.shape:
        raise ExternalInputError(f"{path}: 'xcoords'/'ycoords' hold {recon_pos.shape[0]} positions but the test "
                                 f"file has {test_pos.shape[0]}. Fix: save the positions of the test scan, in "
                                 "its order, or give --pixel-origin X,Y")
    d = test_pos - recon_pos
    shift = np.median(d, axis=0)
    spread = float(np.max(np.abs(d - shift)))
    if spread > 1.0:
        raise ExternalInputError(f"{path}: its 'xcoords'/'ycoords' differ from the test file's by more than a shift "
                                 f"(up to {spread:.3g} px): a different pixel size or orientation. Fix: resample "
                                 "the object to the test pixel size, or try --transpose / --pixel-origin X,Y")
    return float(np.round(shift[0])), float(np.round(shift[1]))


def read_reference(path: str) -> np.ndarray:
    """A reference object (complex, in the test file's pixel frame) from ``--reference`` (NPZ or HDF5)."""

    ref = read_reconstruction(path)
    if ref.origin not in (None, (0.0, 0.0)):
        raise ExternalInputError(f"{path}: a reference must be in the test file's pixel frame (origin 0, 0), it "
                                 f"says origin {ref.origin}. Fix: pad or shift it into that frame")
    return ref.object


# ------------------------------------------------------------------------------------------ scoring
def load_test(test_path: str, reference: str | None) -> tuple[Any, np.ndarray, str]:
    """The test scan, the object it is scored against, and what that is (``ground_truth`` or ``reference:<file>``)."""

    from ptycho_exp.data.npz import load_contract_npz

    try:
        scan = load_contract_npz(test_path, check_intensity=False)
    except ValueError as exc:
        raise ExternalInputError(str(exc)) from None
    if reference:
        return scan, read_reference(reference), f"reference:{Path(reference).name}"
    if scan.object is None:
        raise ExternalInputError(f"{test_path}: key 'objectGuess' is missing, so there is nothing to score against. "
                                 "Fix: give --reference FILE (a complex object in the test file's pixel frame)")
    return scan, scan.object, "ground_truth"


def place(recon: Recon, scan: Any, opts: ScoreOptions, path: str) -> tuple[np.ndarray, tuple[float, float], str]:
    """The object in the test frame's orientation, the test-frame coordinate of its [0, 0], and how it was found."""
    import numpy as np

    obj = recon.object.T if opts.transpose else recon.object
    if opts.conjugate:
        obj = np.conj(obj)
    if opts.pixel_origin is not None:
        return obj, opts.pixel_origin, "--pixel-origin"
    if opts.scan_corner:
        from ptycho_exp.evaluate.stitch import scanned_box

        corner = scanned_box(scan.positions, scan.N, scan.N)[0]
        return obj, (float(corner[0]), float(corner[1])), "--positions-from-test"
    if recon.origin is not None:
        return obj, recon.origin, "origin key"
    if recon.positions is not None:
        pos = recon.positions[:, ::-1] if opts.transpose else recon.positions
        return obj, origin_from_positions(pos, np.asarray(scan.positions, np.float64), path), "xcoords/ycoords"
    return obj, (0.0, 0.0), "test frame"


def check_covers(obj: np.ndarray, origin: tuple[float, float], box_origin: tuple, box_shape: tuple,
                 path: str, how: str) -> None:
    """Raise unless the image at ``origin`` covers the scored box (rows/cols in the test frame)."""

    r0, c0 = round(origin[0]), round(origin[1])
    need = (box_origin[0], box_origin[1], box_origin[0] + box_shape[0], box_origin[1] + box_shape[1])
    have = (r0, c0, r0 + obj.shape[0], c0 + obj.shape[1])
    if have[0] > need[0] or have[1] > need[1] or have[2] < need[2] or have[3] < need[3]:
        raise ExternalInputError(
            f"{path}: the {obj.shape[0]}x{obj.shape[1]} object placed at row {r0}, col {c0} ({how}) covers rows "
            f"{have[0]}..{have[2]}, cols {have[1]}..{have[3]} but the test scan is scored on rows "
            f"{need[0]}..{need[2]}, cols {need[1]}..{need[3]}. Fix: give its position with --pixel-origin X,Y "
            "(column, row of object[0, 0] in the test frame), --transpose for (x, y) axes, or reconstruct the "
            "whole test scan")


def score_reconstruction(recon_path: str, test_path: str, opts: ScoreOptions) -> tuple[Any, dict]:
    """Score one external reconstruction; returns (EvalResult, record parts). Writes nothing.

    Raises
    ------
    ExternalInputError
        See the module docstring.
    """
    from ptycho_exp.evaluate.pipeline import evaluate_object
    from ptycho_exp.evaluate.stitch import covered_box, default_crop

    recon = read_reconstruction(recon_path, opts.key)
    if opts.phase_sync and recon.patches is None:
        raise ExternalInputError(f"{recon_path}: --phase-sync aligns patches, but this file holds a whole object "
                                 f"('{recon.key}'). Fix: save the predicted patches under 'patches', or drop "
                                 "--phase-sync")
    scan, gt, scored_against = load_test(test_path, opts.reference)
    if recon.patches is not None:
        return score_patches(recon, scan, gt, scored_against, opts, recon_path, test_path)
    obj, origin, how = place(recon, scan, opts, recon_path)
    crop = default_crop(scan.N) if opts.crop is None else int(opts.crop)
    box_origin, box_shape = covered_box(scan.positions, crop, scan.N)
    check_covers(obj, origin, box_origin, box_shape, recon_path, how)
    check_covers(gt, (0.0, 0.0), box_origin, box_shape, opts.reference or test_path, "reference")
    t0 = time.time()
    ev = evaluate_object(obj, origin, scan.positions, gt, crop=crop, upsample_factor=opts.upsample_factor,
                         trim_px=opts.trim_px, patch_size=scan.N)
    parts = {"eval_s": time.time() - t0, "scored_against": scored_against, "N": scan.N, "crop": crop,
             "n_positions": scan.n_positions, "origin": [float(origin[0]), float(origin[1])], "origin_from": how,
             "key": recon.key, "shape": list(recon.object.shape)}
    return ev, parts


def score_patches(recon: Recon, scan: Any, gt: np.ndarray, scored_against: str, opts: ScoreOptions,
                  path: str, test_path: str) -> tuple[Any, dict]:
    """Stitch and score one patch per test pattern as a job scores its network's (optionally phase-synced)."""
    import numpy as np

    from ptycho_exp.evaluate.pipeline import evaluate_reconstruction
    from ptycho_exp.evaluate.stitch import covered_box, default_crop

    if opts.pixel_origin is not None or opts.scan_corner:
        raise ExternalInputError(f"{path}: --pixel-origin / --positions-from-test place an object image; patches "
                                 "sit at the test file's positions. Fix: drop the option")
    patches = recon.patches
    if patches.shape[0] != scan.n_positions or patches.shape[1] != scan.N:
        raise ExternalInputError(f"{path}: 'patches' has shape {patches.shape} but the test scan has "
                                 f"{scan.n_positions} patterns of {scan.N} x {scan.N}. Fix: save one {scan.N} x "
                                 f"{scan.N} patch per test pattern, in the test file's order")
    if opts.transpose:
        patches = np.swapaxes(patches, 1, 2)
    if opts.conjugate:
        patches = np.conj(patches)
    crop = default_crop(scan.N) if opts.crop is None else int(opts.crop)
    positions = np.asarray(scan.positions, np.float64)
    check_covers(gt, (0.0, 0.0), *covered_box(positions, crop, scan.N), opts.reference or test_path, "reference")
    kw = {"crop": crop, "upsample_factor": opts.upsample_factor, "trim_px": opts.trim_px}
    t0 = time.time()
    parts = {"scored_against": scored_against, "N": scan.N, "crop": crop, "n_positions": scan.n_positions,
             "origin": None, "origin_from": "test positions (patches)", "key": recon.key,
             "shape": list(patches.shape)}
    if opts.phase_sync:
        from ptycho_exp.evaluate.phase_sync import evaluate_phase_synced, phase_sync_record

        ev, as_predicted = evaluate_phase_synced(patches, positions, gt, **kw)
        parts["phase_sync"] = phase_sync_record(as_predicted.metrics, crop)
    else:
        ev = evaluate_reconstruction(patches, positions, gt, **kw)
    parts["eval_s"] = time.time() - t0
    return ev, parts


def job_record(recon_path: str, test_path: str, opts: ScoreOptions, ev: Any, parts: dict, started: float) -> dict:
    """``result.json`` of an external arm (the schema of :mod:`ptycho_exp.results`)."""
    from ptycho_exp.evaluate.metrics import METRICS_VERSION
    from ptycho_exp.results import SCHEMA_VERSION, config_hash, now_iso, provenance

    model = EXTERNAL_PREFIX + opts.label
    config = {"model": {"name": model},
              "seed": opts.seed,
              "data": {"kind": "npz", "test_path": str(Path(test_path).resolve()),
                       "test_sha256": sha256_file(test_path), "N": parts["N"],
                       "reference_path": str(Path(opts.reference).resolve()) if opts.reference else None},
              "eval": {"crop": opts.crop, "upsample_factor": opts.upsample_factor, "trim_px": opts.trim_px},
              "external": {"recon_path": str(Path(recon_path).resolve()), "recon_sha256": sha256_file(recon_path),
                           "key": parts["key"], "shape": parts["shape"], "origin": parts["origin"],
                           "origin_from": parts["origin_from"], "transpose": opts.transpose,
                           "conjugate": opts.conjugate}}
    if "phase_sync" in parts:
        config["eval"]["phase_sync"] = True
    extra = {"phase_sync": parts["phase_sync"]} if "phase_sync" in parts else {}
    return {"schema": SCHEMA_VERSION, "status": "ok", "error": None, "error_type": None,
            "config_hash": config_hash(config), "model": model, "seed": opts.seed, "tag": "",
            "metrics": ev.metrics, "metrics_version": METRICS_VERSION, "scored_against": parts["scored_against"],
            "timings": {"eval_s": parts["eval_s"], "total_s": time.time() - started},
            "throughput": {}, "resources": {"n_params": None},
            "data": {"reference": parts["scored_against"], "test": {"n_positions": parts["n_positions"]}},
            "config": config,
            "provenance": {**provenance(), "started_at": _iso(started), "finished_at": now_iso()}, **extra}


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def check_out_dir(out: Path) -> None:
    """Refuse an output folder that holds another kind of job (never overwrite a trained job's record)."""
    from ptycho_exp.results import read_result

    if out.exists() and not out.is_dir():
        raise ExternalInputError(f"--out {out}: exists and is not a folder. Fix: choose a new folder")
    prev = read_result(out)
    if prev is not None and not is_external(prev.get("model", "")):
        raise ExternalInputError(f"--out {out}: holds the result of a {prev.get('model')!r} job. Fix: choose a "
                                 "new folder for the external arm")


def write_job(out: Path, record: dict, ev: Any, label: str, figures: bool = True) -> None:
    """The job folder: frc.csv, recon.npz, compare_amp_phase.png, then result.json (each atomically)."""
    from ptycho_exp.evaluate.pipeline import write_frc_csv
    from ptycho_exp.files import RESULT_FILE
    from ptycho_exp.results import write_json
    from ptycho_exp.workflow import _save_recon

    out.mkdir(parents=True, exist_ok=True)
    write_frc_csv(out / "frc.csv", ev.frc)
    _save_recon(out / "recon.npz", ev, record["model"], record["scored_against"])
    if figures:
        from ptycho_exp.evaluate.figures import plot_comparison

        gt_label = "GT" if record["scored_against"] == "ground_truth" else "reference"
        plot_comparison(out / "compare_amp_phase.png", ev.gt, {label: ev.recon}, gt_label=gt_label)
    write_json(out / RESULT_FILE, record)


def score_to_job(recon_path: str, test_path: str, out: str | os.PathLike, opts: ScoreOptions) -> dict:
    """Score ``recon_path`` against ``test_path`` and write the job folder ``out``; returns its record."""
    started = time.time()
    if not _LABEL_RE.match(opts.label):
        raise ExternalInputError(f"--label {opts.label!r}: use letters, digits and . _ + - (e.g. ptychopinn-g1). "
                                 "Fix: pick such a name")
    out = Path(out)
    check_out_dir(out)
    ev, parts = score_reconstruction(os.fspath(recon_path), os.fspath(test_path), opts)
    record = job_record(os.fspath(recon_path), os.fspath(test_path), opts, ev, parts, started)
    write_job(out, record, ev, opts.label, figures=opts.figures)
    return record


# ------------------------------------------------------------------------------------------ CLI
def _pair(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y (two numbers), got {text!r}") from None
    return x, y


def add_score_parser(sub: argparse._SubParsersAction) -> None:
    """``ptycho-exp score`` (see the module docstring)."""
    defaults = ScoreOptions(label="")
    p = sub.add_parser("score", help="score a reconstruction made by any code on a test scan, as a job folder "
                                     "(model=external:<label>) the aggregator reads as one more arm")
    p.add_argument("recon", help="NPZ or HDF5 with 'object' (complex) or 'amplitude' + 'phase', or 'patches' "
                                 "(M, N, N) complex, one per test pattern")
    p.add_argument("--test", required=True, help="the contract NPZ of the test scan (e.g. from `data export`)")
    p.add_argument("--out", required=True, help="job folder to write")
    p.add_argument("--label", help="arm name: model=external:<label> (default: the file name's stem)")
    p.add_argument("--key", help="the array holding the object (an NPZ key or an HDF5 path)")
    frame = p.add_mutually_exclusive_group()
    frame.add_argument("--positions-from-test", action="store_true",
                       help="object[0, 0] sits at the corner of the test scan's area (min position - N/2)")
    frame.add_argument("--pixel-origin", type=_pair, metavar="X,Y",
                       help="column X and row Y of object[0, 0] in the test scan's pixel frame "
                            "(negative: --pixel-origin=-5,3)")
    p.add_argument("--transpose", action="store_true", help="the image is stored (x, y): swap its axes")
    p.add_argument("--conjugate", action="store_true", help="flip the phase sign (opposite Fourier convention)")
    p.add_argument("--reference", help="object to score against when the test file has no objectGuess "
                                       "(complex, in the test file's pixel frame)")
    p.add_argument("--seed", type=int, help="pair this arm with our jobs of this seed (default: none, it joins all)")
    p.add_argument("--crop", type=int, default=defaults.crop, help="stitching crop defining the scored box "
                                                                   "(default: a job's, 20 px at N=64)")
    p.add_argument("--upsample-factor", type=int, default=defaults.upsample_factor)
    p.add_argument("--trim-px", type=int, default=defaults.trim_px)
    p.add_argument("--phase-sync", action="store_true",
                   help="patches only: align each patch's constant phase with its overlapping neighbours before "
                        "stitching, as a job with eval.phase_sync=true does")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(handler=run_score)


def run_score(args: argparse.Namespace) -> int:
    """Handler of ``ptycho-exp score``: prints a one-line summary; bad input raises ExternalInputError."""
    origin = None if args.pixel_origin is None else (args.pixel_origin[1], args.pixel_origin[0])
    opts = ScoreOptions(label=args.label or Path(args.recon).stem, key=args.key, pixel_origin=origin,
                        scan_corner=args.positions_from_test,
                        transpose=args.transpose, conjugate=args.conjugate, reference=args.reference,
                        seed=args.seed, crop=args.crop, upsample_factor=args.upsample_factor,
                        trim_px=args.trim_px, figures=not args.no_figures, phase_sync=args.phase_sync)
    rec = score_to_job(args.recon, args.test, args.out, opts)
    m = rec["metrics"]
    print(f"wrote {args.out}: {rec['model']} amp_ssim={m.get('amp_ssim', float('nan')):.4f} "
          f"phase_ssim={m.get('phase_ssim', float('nan')):.4f} amp_frc50={m.get('amp_frc50', float('nan')):.4g} "
          f"(scored against {rec['scored_against']})")
    return 0
