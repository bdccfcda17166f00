"""Is each predicted patch the object, or the object point-reflected about its group's centre?

Under a real centro-symmetric probe (the ideal disk), a real object ``o(r)`` and its point reflection ``o(-r)``
give the same far-field intensity: for an amplitude-only object the twin ``conj(o(-r))`` is just the reflected
object. One pattern cannot tell them apart, and nothing a network learns from amplitude-only training objects
can either (reflected lines are lines). A group of neighbouring patterns can, when they constrain one object
together: reflecting about the group centre moves each pattern's patch by twice its offset.

For every predicted patch this script takes the central ``--crop`` px (the stitching crop) and gives the Pearson
r of its amplitude (``--part phase``: its phase, against the negated reflected phase) with the truth at the same
place and with the truth point-reflected about the patch's reflection centre (its group's centroid). A patch
whose reflected r is the larger is counted as reflected. Reading: about 0 % reflected for a network that chose
the object; a large fraction, with groups split between the two, means the network picks object or twin patch
by patch, and the stitched image becomes a mosaic of disagreeing tiles.

Input: a job folder (its saved network predicts each test position's patch, tested against the reflection about
its group's centroid) or an NPZ of patches from any code with keys ``patches`` (M, N, N) complex,
``positions`` (M, 2) [y, x] patch centres and optionally ``centres`` (M, 2) reflection centres (default: the
positions). ``--test`` is a contract NPZ with ``objectGuess`` (e.g. from ``ptycho-exp data export``).

    python bench/diagnostics/twin_patches.py [LABEL=]JOB_DIR_OR_PATCHES_NPZ [...] --test TEST.npz \
        [--crop 20] [--part amp|phase] [--name twin_patches]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/_common.py
from _common import result_name, write_result  # noqa: E402

from ptycho_exp.evaluate.metrics import pearson  # noqa: E402
from ptycho_exp.physics.scan import extract_patches  # noqa: E402


def reflected_truth(obj: np.ndarray, positions: np.ndarray, centres: np.ndarray, N: int) -> np.ndarray:
    """Truth patches of the object point-reflected about ``centres``: ``o'(r) = o(2c - r)``.

    Parameters
    ----------
    obj : (H, W) truth object
    positions : (M, 2) [y, x] patch centres
    centres : (M, 2) reflection centres
    N : patch size (even)

    Returns
    -------
    (M, N, N) complex64: ``out[m, i, j] = o(2c - (p - N/2 + (i, j)))``; the first row and column, which
    fall one pixel outside the extracted patch, repeat the opposite edge (outside any central crop).
    """
    mirrored = extract_patches(obj, 2.0 * np.asarray(centres) - np.asarray(positions), N)
    # q + N/2 - (i, j) is index N - i of the patch at q: flip both axes, then move down by one
    return np.roll(mirrored[:, ::-1, ::-1], 1, axis=(1, 2))


def central(patches: np.ndarray, crop: int) -> np.ndarray:
    """The central ``crop`` x ``crop`` of (M, N, N) patches (rows N/2 - crop/2 ... on the patch centre)."""
    N = patches.shape[-1]
    a = N // 2 - crop // 2
    return patches[:, a:a + crop, a:a + crop]


def twin_scores(patches: np.ndarray, positions: np.ndarray, centres: np.ndarray, obj: np.ndarray,
                crop: int, part: str = "amp") -> tuple[np.ndarray, np.ndarray]:
    """Per-patch Pearson r of the central crop with the truth and with the reflected truth (twin).

    Parameters
    ----------
    patches : (M, N, N) complex predicted patches
    positions, centres : (M, 2) patch centres and reflection centres, [y, x] object pixels
    obj : (H, W) truth object
    crop : central crop side (px)
    part : "amp" (amplitudes) or "phase" (phase, against the twin's negated phase)

    Returns
    -------
    r_direct, r_twin : (M,) float arrays
    """
    N = patches.shape[-1]
    pred = central(patches, crop)
    truth = central(extract_patches(obj, positions, N), crop)
    twin = central(reflected_truth(obj, positions, centres, N), crop)
    if part == "amp":
        pred, truth, twin = np.abs(pred), np.abs(truth), np.abs(twin)
    else:
        pred, truth, twin = np.angle(pred), np.angle(truth), -np.angle(twin)
    r_direct = np.array([pearson(p, t) for p, t in zip(pred, truth)])
    r_twin = np.array([pearson(p, t) for p, t in zip(pred, twin)])
    return r_direct, r_twin


def job_patches(job: Path, test: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The job network's patches on the test file's scan (normalised by the training set's factor, as the job
    scored it), with each patch's group centroid."""
    import keras

    from ptycho_exp.data.npz import load_contract_npz
    from ptycho_exp.models import layers  # noqa: F401  (registers the custom layers)
    from ptycho_exp.models.fit import predict_patches
    from ptycho_exp.physics.scan import relative_offsets
    from ptycho_exp.predict import MODEL_FILE, group_scan, model_geometry, read_meta, resolve_model_dir

    mdir = resolve_model_dir(job)
    meta = read_meta(mdir)
    model = keras.saving.load_model(mdir / MODEL_FILE, safe_mode=True, compile=False)
    N, C = model_geometry(model, meta)
    scan = load_contract_npz(test)
    groups, _ = group_scan(scan.positions, round(C ** 0.5), str(meta.get("grouping", "knn")),
                           meta.get("neighbour_step"))
    groups = np.unique(groups, axis=0)  # block grouping anchors each block at each of its C positions
    offsets = relative_offsets(scan.positions, groups) if C > 1 else None
    pred = predict_patches(model, np.moveaxis(scan.diffraction[groups], 1, -1), float(meta["norm_factor"]),
                           offsets=offsets)
    patches = np.moveaxis(pred, -1, 1).reshape(-1, N, N)
    pos = scan.positions[groups].reshape(-1, 2)
    centres = np.repeat(scan.positions[groups].mean(axis=1), C, axis=0)
    return patches, pos, centres


def npz_patches(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        patches, pos = z["patches"], np.asarray(z["positions"], np.float64)
        centres = np.asarray(z["centres"], np.float64) if "centres" in z else pos
    return patches, pos, centres


def describe(arg: str, obj: np.ndarray, test: Path, crop: int, part: str) -> dict:
    label, _, path = arg.rpartition("=")
    path = Path(path)
    patches, pos, centres = job_patches(path, test) if path.is_dir() else npz_patches(path)
    r_direct, r_twin = twin_scores(patches, pos, centres, obj, crop, part)
    reflected = r_twin > r_direct
    q = lambda a: [round(float(v), 3) for v in np.quantile(a, [0.1, 0.5, 0.9])]  # noqa: E731
    # patches sharing a reflection centre form one group
    _, group = np.unique(np.round(centres, 3), axis=0, return_inverse=True)
    frac_per_group = np.bincount(group.ravel(), weights=reflected) / np.bincount(group.ravel())
    return {"label": label or str(path), "source": str(path), "n_patches": int(len(reflected)),
            "n_groups": int(frac_per_group.size), "reflected_fraction": round(float(reflected.mean()), 4),
            "groups_mostly_reflected": round(float(np.mean(frac_per_group > 0.5)), 4),
            "r_direct_q10_q50_q90": q(r_direct), "r_twin_q10_q50_q90": q(r_twin),
            "r_best_q10_q50_q90": q(np.maximum(r_direct, r_twin))}


def truth_and_inputs(test: Path, inputs: list[str]) -> np.ndarray | None:
    """The test file's truth (``objectGuess``), once every ``[LABEL=]PATH`` input exists; None (after one line on
    stderr naming the file and the fix) otherwise."""
    if not test.is_file():
        print(f"{test}: not found (a contract NPZ with objectGuess, from ptycho-exp data export)", file=sys.stderr)
        return None
    with np.load(test, allow_pickle=False) as z:
        if "objectGuess" not in z:
            print(f"{test}: no 'objectGuess' (the truth); export the test scan with ptycho-exp data export",
                  file=sys.stderr)
            return None
        obj = z["objectGuess"]
    for arg in inputs:
        p = Path(arg.rpartition("=")[2])
        if not (p.is_dir() or p.is_file()):
            print(f"{p}: not found (give a job folder or an NPZ of patches)", file=sys.stderr)
            return None
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="[LABEL=]JOB_DIR or [LABEL=]PATCHES.npz")
    ap.add_argument("--test", required=True, type=Path, help="contract NPZ with objectGuess")
    ap.add_argument("--crop", type=int, default=20)
    ap.add_argument("--part", choices=("amp", "phase"), default="amp")
    ap.add_argument("--name", type=result_name, default="twin_patches")
    args = ap.parse_args(argv)
    obj = truth_and_inputs(args.test, args.inputs)
    if obj is None:
        return 2
    rows = [describe(a, obj, args.test, args.crop, args.part) for a in args.inputs]
    for r in rows:
        print(f"{r['label']}: {r['reflected_fraction']:.1%} of {r['n_patches']} patches reflected "
              f"({r['groups_mostly_reflected']:.1%} of {r['n_groups']} groups); r direct {r['r_direct_q10_q50_q90']}, "
              f"r twin {r['r_twin_q10_q50_q90']}")
    write_result(args.name, {"crop": args.crop, "part": args.part, "test": str(args.test), "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
