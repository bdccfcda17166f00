"""Helpers behind the data CLI: summarise a contract NPZ, split one scan into train/test halves."""
from __future__ import annotations

import os

import numpy as np

from ptycho_exp.data.container import ScanData
from ptycho_exp.data.npz import contract_header, intensity_suspicion, load_contract_npz, save_contract_npz
from ptycho_exp.physics.forward import pattern_energy
from ptycho_exp.physics.probe import probe_diameter
from ptycho_exp.physics.scan import scan_summary


def _describe(name: str, arr: np.ndarray | None) -> str:
    if arr is None:
        return f"  {name:<12} absent"
    return f"  {name:<12} shape {tuple(arr.shape)}  dtype {arr.dtype}"


def inspect_npz(path) -> str:
    """Human-readable summary of a contract NPZ.

    Shapes and dtypes of the raw keys; photon statistics per pattern (total ``sum X**2``, i.e.
    counts if the file holds amplitude in photon units: mean/min/max); scan extent, mean step and
    overlap; probe size; whether ``objectGuess``/``Y`` are present; and an intensity warning if the
    data look like intensity. Raises the loader's errors for a file that breaks the contract.
    """
    path = os.fspath(path)
    scan = load_contract_npz(path, check_intensity=False)  # the contract's clear errors come first
    raw = {k: v for k, v in contract_header(path)["arrays"].items() if k != "meta_json"}  # .npz or .h5
    totals = pattern_energy(scan.diffraction)
    summary = scan_summary(scan.positions, scan.N, beam_diameter=probe_diameter(scan.probe))
    lines = [f"{path}", "keys:"]
    lines += [f"  {k:<12} shape {tuple(shape)}  dtype {dtype}" for k, (shape, dtype) in sorted(raw.items())]
    lines += [
        f"patterns: M={scan.n_positions}, N={scan.N}",
        ("total counts per pattern (sum X**2, assuming amplitude): "
         f"mean {totals.mean():.4g}, min {totals.min():.4g}, max {totals.max():.4g}"),
        f"amplitude range: {float(scan.diffraction.min()):.4g} .. {float(scan.diffraction.max()):.4g}",
    ]
    scale = scan.meta.get("photon_scale")
    if isinstance(scale, (int, float)) and scale > 0:
        counts = float(scale) ** 2 * totals
        nominal = scan.meta.get("nphotons")
        lines.append(
            f"photon counts per pattern (photon_scale**2 * sum X**2, photon_scale {float(scale):.4g}): "
            f"mean {counts.mean():.4g}, min {counts.min():.4g}, max {counts.max():.4g}"
            + (f" (nphotons {float(nominal):.4g}, noise {scan.meta.get('noise')})" if nominal is not None else ""))
    y0, y1, x0, x1 = summary.get("extent", [np.nan] * 4)
    lines += [
        (f"scan: y {y0:.1f}..{y1:.1f} px, x {x0:.1f}..{x1:.1f} px, mean nearest-neighbour step "
         f"{summary.get('step', float('nan')):.2f} px"),
        f"overlap: patch {summary.get('patch_overlap') or 0:.0%}"
        + (f", beam {summary['beam_overlap']:.0%}" if summary.get("beam_overlap") is not None else "")
        + f" (probe diameter {probe_diameter(scan.probe):.1f} px at half max)",
        f"objectGuess: {'yes ' + str(scan.object.shape) if scan.object is not None else 'no'}",
        f"Y (ground-truth patches): {'yes' if 'Y' in raw else 'no'}",
    ]
    reason = intensity_suspicion(scan.diffraction, scan.probe)
    if reason:
        lines.append(f"WARNING: looks like intensity ({reason}); take the square root")
    return "\n".join(lines)


def split_scan(scan: ScanData, axis: str = "y", gap: float | None = None) -> tuple[ScanData, ScanData]:
    """Cut a scan into two spatially disjoint halves at the median coordinate along ``axis``.

    Parameters
    ----------
    scan : the scan
    axis : "y" (first half = top, smaller y) or "x" (first half = left)
    gap : width (px) of the band around the cut whose positions are dropped; default N, so no
          object pixel is seen by patches of both halves. Use 0 to keep every position.

    Returns
    -------
    (first, second) ScanData, each keeping the probe and the full ``object``.
    """
    if axis not in ("y", "x"):
        raise ValueError(f"axis={axis!r}: choose 'y' (top/bottom) or 'x' (left/right)")
    gap = float(scan.N) if gap is None else float(gap)
    if not gap >= 0:
        raise ValueError(f"gap={gap:g}: the band dropped around the cut must be >= 0 px")
    coord = scan.positions[:, 0 if axis == "y" else 1]
    cut = float(np.median(coord))
    first = np.nonzero(coord < cut - gap / 2.0)[0]
    second = np.nonzero(coord >= cut + gap / 2.0)[0]
    if gap == 0:
        first, second = np.nonzero(coord < cut)[0], np.nonzero(coord >= cut)[0]
    if first.size == 0 or second.size == 0:
        raise ValueError(f"split along {axis} at {cut:.1f} px with gap {gap:g} px leaves an empty half "
                         f"({first.size} / {second.size} positions); use a smaller gap")
    return scan.subset(first), scan.subset(second)


def split_npz(path, out_train, out_test, axis: str = "y", gap: float | None = None) -> str:
    """Split a contract NPZ into spatially disjoint train (top/left) and test (bottom/right) files.

    ``objectGuess`` and ``probeGuess`` are carried into both; ``Y`` is split with the patterns.
    Both files are written atomically. ``gap`` is the band (px) around the cut whose patterns are
    dropped (default N; see :func:`split_scan`).

    Returns
    -------
    A summary naming how many patterns went to each file and how many were dropped in the gap band.
    """
    scan = load_contract_npz(path)
    gap_px = float(scan.N) if gap is None else float(gap)
    first, second = split_scan(scan, axis=axis, gap=gap_px)
    for part, name in ((first, "train"), (second, "test")):
        part.meta = {k: v for k, v in part.meta.items() if k not in ("source", "diffraction_key")}
        part.meta.update({"split_of": os.fspath(path), "split_part": name, "split_axis": axis, "split_gap": gap_px})
    save_contract_npz(out_train, first)
    save_contract_npz(out_test, second)
    total = scan.n_positions
    dropped = total - first.n_positions - second.n_positions
    cut = float(np.median(scan.positions[:, 0 if axis == "y" else 1]))
    lines = [f"split {os.fspath(path)} ({total} patterns) along {axis} at {cut:.1f} px:",
             f"  train {first.n_positions} -> {os.fspath(out_train)}",
             f"  test  {second.n_positions} -> {os.fspath(out_test)}",
             f"  dropped {dropped} ({dropped / total:.0%}) in the {gap_px:g} px gap band around the cut"]
    if dropped:
        lines.append(f"  (a gap >= N = {scan.N} px keeps the halves' object areas disjoint; "
                     "--gap 0 keeps every pattern)")
    return "\n".join(lines)
