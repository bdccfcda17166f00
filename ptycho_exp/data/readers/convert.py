"""The import itself: a :class:`~ptycho_exp.data.readers.formats.Source` to a contract scan, and its report."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ptycho_exp.data.container import ScanData
from ptycho_exp.data.readers.formats import (
    CORNER,
    Source,
    fail,
    open_h5,
    open_contract,
    open_cxi,
    open_ptylab,
    open_tike,
)
from ptycho_exp.data.readers.patterns import (
    at_corner,
    clean_frames,
    crop_and_bin,
    energy_to_wavelength,
    find_zero_frequency,
    object_pixel_size,
    resample_probe,
)

FORMATS = ("cxi", "ptylab", "tike", "npz")
_CHUNK_BYTES = 32 * 2**20  # float64 bytes of frames processed at a time
_MEAN_FRAMES = 256  # frames averaged to find the zero frequency


@dataclass
class ImportOptions:
    """How to turn a measured scan into a contract scan.

    Attributes
    ----------
    N : output pattern side (even)
    bin : detector binning factor b (1: plain crop of N pixels around the zero frequency)
    frames : ``(start, stop)`` frame range (Python slice semantics) or None for all
    distance, wavelength, pixel_size : geometry in metres, overriding (or supplying) the file's
    energy_ev : photon energy (eV), an alternative to ``wavelength``
    saturation : counts at or above which a pixel is saturated (default: the integer dtype's maximum)
    mask_good : the file's mask marks good pixels with non-zero values (default: non-zero = bad)
    probe_path : NPZ with ``probeGuess`` when the file has no probe
    """

    N: int = 64
    bin: int = 1
    frames: tuple[int | None, int | None] | None = None
    distance: float | None = None
    wavelength: float | None = None
    energy_ev: float | None = None
    pixel_size: float | None = None
    saturation: float | None = None
    mask_good: bool = False
    probe_path: str | None = None


@dataclass(frozen=True)
class OptionNames:
    """How messages name each option: the ``data import`` options, or the job config keys (:data:`CONFIG_NAMES`)."""

    names: dict
    cli: bool

    def supply(self, option: str, value: str) -> str:
        """The fix that supplies ``option``: ``pass --distance METRES`` or ``set data.reader.distance=METRES``."""
        return f"pass {self.names[option]} {value}" if self.cli else f"set {self.names[option]}={value}"

    def given(self, option: str, value) -> str:
        """An option as given: ``--bin 0`` or ``data.reader.bin=0``."""
        return f"{self.names[option]} {value}" if self.cli else f"{self.names[option]}={value}"

    def __getitem__(self, option: str) -> str:
        return self.names[option]


CLI_NAMES = OptionNames({"N": "--N", "bin": "--bin", "frames": "--frames", "distance": "--distance",
                         "wavelength": "--wavelength", "energy_ev": "--energy-ev", "pixel_size": "--pixel-size",
                         "saturation": "--saturation", "mask_good": "--mask-good", "probe": "--probe"}, cli=True)
CONFIG_NAMES = OptionNames({"N": "data.N", "bin": "data.reader.bin", "frames": "data.reader.frame_start",
                            "distance": "data.reader.distance", "wavelength": "data.reader.wavelength",
                            "energy_ev": "data.reader.energy_ev", "pixel_size": "data.reader.pixel_size",
                            "saturation": "data.reader.saturation", "mask_good": "data.reader.mask_good",
                            "probe": "data.reader.probe_path"}, cli=False)


def _need(src: Source, value, fact: str, fix: str):
    if value is None or not np.all(np.isfinite(value)) or not np.all(np.asarray(value) > 0):
        raise fail(src.path, src.keys.get(fact, fact), "missing" if value is None else f"invalid ({value})", fix)
    return value


def _geometry(src: Source, opts: ImportOptions, names: OptionNames = CLI_NAMES) -> dict:
    """Object pixel (m) of the output, from the file's geometry and the options (options win)."""
    wavelength = opts.wavelength or (energy_to_wavelength(opts.energy_ev) if opts.energy_ev else None)
    either = names.supply("energy_ev", "EV") + " or " + names.given("wavelength", "METRES")
    wavelength = _need(src, wavelength or src.wavelength, "wavelength", either)
    distance = _need(src, opts.distance or src.distance, "distance", names.supply("distance", "METRES"))
    pixel = (opts.pixel_size, opts.pixel_size) if opts.pixel_size else src.pixel_size
    pixel = _need(src, pixel, "pixel_size", names.supply("pixel_size", "METRES"))
    if not np.isclose(pixel[0], pixel[1], rtol=1e-6):
        raise fail(src.path, src.keys.get("pixel_size"), f"detector pixels are not square ({pixel[0]:g} x "
                   f"{pixel[1]:g} m)", names.supply("pixel_size", "METRES") + " to treat them as square")
    return {"wavelength_m": float(wavelength), "distance_m": float(distance), "detector_pixel_m": float(pixel[1])}


def _frame_range(opts: ImportOptions, n: int, path: str, names: OptionNames = CLI_NAMES) -> range:
    start, stop = opts.frames or (None, None)
    rng = range(*slice(start, stop).indices(n))
    if len(rng) == 0:
        if names.cli:
            raise fail(path, None, f"--frames {start}:{stop} selects no frame of {n}", f"choose a range within 0:{n}")
        raise fail(path, None, f"data.reader.frame_start={start}, data.reader.frame_stop={stop} select no frame "
                   f"of {n}", f"set them within 0..{n} (null: from the first / to the end)")
    return rng


def _bad_pixels(src: Source, opts: ImportOptions, shape: tuple[int, int],
                names: OptionNames = CLI_NAMES) -> np.ndarray | None:
    if src.mask is None:
        return None
    mask = np.asarray(src.mask)
    key = src.keys.get("mask", "mask")
    if mask.shape != shape:
        raise fail(src.path, key, f"has shape {mask.shape}, frames are {shape}", "store an (H, W) pixel mask")
    bad = mask == 0 if opts.mask_good else mask != 0
    if bad.mean() > 0.5:
        good, bad_flag = (f"pass {names['mask_good']}", f"drop {names['mask_good']}") if names.cli else \
            (f"set {names['mask_good']}=true", f"set {names['mask_good']}=false")
        raise fail(src.path, key, f"marks {bad.mean():.0%} of the pixels bad",
                   f"{good} if non-zero marks good pixels" if not opts.mask_good
                   else f"{bad_flag} (non-zero marks bad pixels)")
    return bad


def options_from_config(reader, N: int) -> ImportOptions:
    """:class:`ImportOptions` of a job: ``data.reader`` (:class:`ptycho_exp.config.ReaderConfig`, a dict or a
    DictConfig) and ``data.N``."""
    r = dict(reader or {})
    start, stop = r.get("frame_start"), r.get("frame_stop")
    return ImportOptions(N=int(N), bin=int(r.get("bin", 1)),
                         frames=None if start is None and stop is None else (start, stop),
                         distance=r.get("distance"), wavelength=r.get("wavelength"), energy_ev=r.get("energy_ev"),
                         pixel_size=r.get("pixel_size"), saturation=r.get("saturation"),
                         mask_good=bool(r.get("mask_good", False)), probe_path=r.get("probe_path"))


def _check_options(fmt: str, opts: ImportOptions, names: OptionNames) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    N, b = int(opts.N), int(opts.bin)
    if N < 4 or N % 2:
        raise ValueError(f"{names.given('N', N)}: the pattern side must be even and >= 4")
    if b < 1:
        raise ValueError(f"{names.given('bin', b)}: the binning factor must be >= 1")
    for option in ("distance", "wavelength", "energy_ev", "pixel_size", "saturation"):
        value = getattr(opts, option)
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{names.given(option, value)}: must be a positive number")


def check_file(path, fmt: str, opts: ImportOptions, names: OptionNames = CONFIG_NAMES) -> int:
    """Every check :func:`import_scan` makes before it converts a pattern, without converting any.

    Reads the file's positions, geometry, mask and probe (never its frames), so a missing file, a file of
    another format or a missing geometry fact is refused in about a second. Messages name the options as
    ``names`` does (the job config keys by default). Returns the number of patterns the import would give.
    """
    path = os.fspath(path)
    _check_options(fmt, opts, names)
    if fmt in ("cxi", "ptylab"):
        with open_h5(path) as f:
            src = open_cxi(f, path) if fmt == "cxi" else open_ptylab(f, path)
            plan = _plan(src, opts, names)
            _probe(src, opts, plan["geometry"], plan["dx"], int(opts.N), int(opts.bin), names)
    else:
        src = open_tike(path) if fmt == "tike" else open_contract(path)
        plan = _plan(src, opts, names)
        _probe(src, opts, plan["geometry"], plan["dx"], int(opts.N), int(opts.bin), names)
    return len(plan["idx"])


def import_scan(path, fmt: str, opts: ImportOptions, sink=None,
                names: OptionNames = CLI_NAMES) -> tuple[ScanData, dict]:
    """Read a measured scan and convert it to a contract :class:`ScanData` (nothing is written).

    Parameters
    ----------
    path : file to read
    fmt : ``cxi`` | ``ptylab`` | ``tike`` | ``npz``
    opts : options (output N, binning, frames, geometry overrides)
    sink : a :class:`ptycho_exp.data.h5.ContractH5Writer`: the patterns are written into its file chunk by
        chunk (the scan's ``diffraction`` is then that HDF5 dataset), never held in memory
    names : how messages name the options (:data:`CLI_NAMES`, or :data:`CONFIG_NAMES` for a job)

    Returns
    -------
    (scan, report): the scan (amplitude ``sqrt(counts)``, so ``meta['photon_scale'] = 1``) and a dict
    of what was done (frames, geometry, zero frequency, clipped/saturated/masked counts, photons).
    """
    path = os.fspath(path)
    _check_options(fmt, opts, names)
    if fmt in ("cxi", "ptylab"):
        with open_h5(path) as f:
            src = open_cxi(f, path) if fmt == "cxi" else open_ptylab(f, path)
            return _convert(src, opts, sink, names)
    return _convert(open_tike(path) if fmt == "tike" else open_contract(path), opts, sink, names)


def _plan(src: Source, opts: ImportOptions, names: OptionNames) -> dict:
    """The checks on a source's shapes, frame range, geometry and mask, and what they give (no frame read)."""
    N, b = int(opts.N), int(opts.bin)
    frames = src.frames
    if len(frames.shape) != 3:
        raise fail(src.path, src.keys["data"], f"has shape {frames.shape}", "store (n, H, W) frames")
    n_all, H, W = (int(s) for s in frames.shape)
    if src.positions.shape[0] != n_all:
        raise fail(src.path, src.keys["positions"], f"has {src.positions.shape[0]} positions for {n_all} frames",
                   "store one position per frame")
    if not np.all(np.isfinite(src.positions)):
        raise fail(src.path, src.keys["positions"], "holds NaN/Inf", "repair the positions")
    idx = _frame_range(opts, n_all, src.path, names)
    geometry = _geometry(src, opts, names) if src.position_unit == "m" else {}
    if geometry:
        dx = object_pixel_size(geometry["wavelength_m"], geometry["distance_m"], N * b, geometry["detector_pixel_m"])
    else:  # positions in pixels of the stored detector: only ratios matter, dx is in those pixels
        if H != W:
            raise fail(src.path, src.keys["data"], f"has non-square frames {H}x{W}", "store square frames")
        dx = H / float(N * b)
    bad = _bad_pixels(src, opts, (H, W), names)
    return {"n_all": n_all, "H": H, "W": W, "idx": idx, "geometry": geometry, "dx": dx, "bad": bad}


def _convert(src: Source, opts: ImportOptions, sink=None, names: OptionNames = CLI_NAMES) -> tuple[ScanData, dict]:
    N, b = int(opts.N), int(opts.bin)
    frames = src.frames
    plan = _plan(src, opts, names)
    n_all, H, W, idx, geometry, dx, bad = (plan[k] for k in ("n_all", "H", "W", "idx", "geometry", "dx", "bad"))
    saturation = opts.saturation
    dtype = np.dtype(frames.dtype)
    if saturation is None and dtype.kind in "iu":
        saturation = float(np.iinfo(dtype).max)

    chunk = max(1, _CHUNK_BYTES // (H * W * 8))
    # zero frequency: mean of up to _MEAN_FRAMES frames spread over the range, read in chunks
    pick = np.unique(np.linspace(idx.start, idx[-1], num=min(len(idx), _MEAN_FRAMES)).round().astype(int))
    total = np.zeros((H, W))
    for s in range(0, pick.size, chunk):
        total += clean_frames(frames[list(pick[s:s + chunk])], bad, saturation)[0].sum(axis=0)
    peak, com = find_zero_frequency(total / pick.size)
    corner = at_corner(peak, (H, W))
    if corner:
        peak = ((peak[0] + H // 2) % H, (peak[1] + W // 2) % W)
        bad = None if bad is None else np.fft.fftshift(bad)
    expected = (0, 0) if src.zero_at == CORNER else (H // 2, W // 2)

    positions = _positions(src, np.asarray(src.positions)[list(idx)], dx, N)
    probe, probe_note = _probe(src, opts, geometry, dx, N, b, names)  # every check before anything is written
    out = sink.diffraction(len(idx), N) if sink is not None else np.empty((len(idx), N, N), dtype=np.float32)
    counts = np.empty(len(idx), dtype=np.float64)
    clipped = saturated = 0
    outside = 0
    for k in range(0, len(idx), chunk):
        sel = idx[k:k + chunk]
        raw = frames[sel.start:sel.stop:sel.step] if sel.step == 1 else frames[list(sel)]
        raw = np.asarray(raw)
        if corner:
            raw = np.fft.fftshift(raw, axes=(-2, -1))
        clean, c1, c2 = clean_frames(raw, bad, saturation)
        clipped, saturated = clipped + c1, saturated + c2
        binned, outside = crop_and_bin(clean, peak, N, b)
        out[k:k + len(sel)] = np.sqrt(binned)
        counts[k:k + len(sel)] = binned.sum(axis=(1, 2))

    report = {
        "source": src.path, "format": src.fmt, "frames": [idx.start, idx.stop], "n_frames_in_file": n_all,
        "detector_shape": [H, W], "N": N, "bin": b, **geometry,
        "dx_m": dx if geometry else None, "dx_over_file_px": None if geometry else dx,
        "zero_frequency_found": [int(v) for v in ((peak[0] - H // 2) % H, (peak[1] - W // 2) % W)]
        if corner else list(peak),
        "zero_frequency_expected": list(expected), "zero_frequency_com": [round(float(v), 2) for v in com],
        "fftshifted": corner, "clipped_negative": clipped, "saturated_zeroed": saturated,
        "saturation": saturation, "masked_pixels": 0 if bad is None else int(bad.sum()),
        "window_outside_detector_px": outside,
        "counts_per_pattern": {"mean": float(counts.mean()), "min": float(counts.min()),
                               "max": float(counts.max())},
        "probe": probe_note, "probe_power": float(np.sum(np.abs(probe.astype(np.complex128)) ** 2)),
        "notes": list(src.notes),
    }
    meta = {"photon_scale": 1.0, "imported": {k: v for k, v in report.items() if k != "notes"}}
    return ScanData(diffraction=out, positions=positions, probe=probe, meta=meta), report


def _positions(src: Source, pos: np.ndarray, dx: float, N: int) -> np.ndarray:
    """Contract positions [y, x] in output pixels: metres / dx placed at N/2, or file px scaled and kept."""
    px = pos / dx
    if src.position_unit == "m":
        return px - px.min(axis=0) + N / 2.0
    low = px.min(axis=0)
    return px + np.maximum(N / 2.0 - low, 0.0)


def _probe(src: Source, opts: ImportOptions, geometry: dict, dx: float, N: int, b: int,
           names: OptionNames = CLI_NAMES) -> tuple[np.ndarray, str]:
    if opts.probe_path:
        from ptycho_exp.physics.probe import load_probe

        probe, origin = load_probe(opts.probe_path), names.given("probe", opts.probe_path)
    elif src.probe is not None:
        probe, origin = np.asarray(src.probe), f"{src.probe_key}"
    else:
        raise fail(src.path, src.keys.get("probe", "probe"), "missing (the file has no probe)",
                   names.supply("probe", "PROBE.npz") + " (an NPZ holding 'probeGuess')")
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1] or not np.all(np.isfinite(probe)):
        raise fail(src.path, src.probe_key or "probe", f"has shape {probe.shape} or non-finite values",
                   "store a square (n, n) complex probe")
    n_p = probe.shape[0]
    if geometry:
        dx_probe = object_pixel_size(geometry["wavelength_m"], geometry["distance_m"], n_p,
                                     geometry["detector_pixel_m"])
    else:
        dx_probe = src.frames.shape[-1] / float(n_p)  # in file pixels
    ratio = dx_probe / dx
    out = resample_probe(probe, ratio, N)
    return out, f"{origin} ({n_p}x{n_p}, resampled x{ratio:.4g} to {N}x{N})"


def format_report(report: dict, out: str | None = None) -> str:
    """A short human-readable summary of :func:`import_scan`'s report."""
    H, W = report["detector_shape"]
    a, z = report["frames"]
    lines = [f"imported {report['source']} ({report['format']}): frames {a}:{z} of {report['n_frames_in_file']}, "
             f"{H}x{W} detector -> {z - a} patterns of {report['N']}x{report['N']} "
             f"({'bin ' + str(report['bin']) + ', ' if report['bin'] > 1 else ''}crop around the zero frequency)"]
    if report.get("dx_m"):
        lines.append(f"geometry: wavelength {report['wavelength_m']:.4g} m, distance {report['distance_m']:.4g} m, "
                     f"detector pixel {report['detector_pixel_m']:.4g} m -> object pixel dx {report['dx_m']:.4g} m")
    else:
        lines.append(f"geometry: object pixel = {report['dx_over_file_px']:.4g} x the file's pixel")
    found, exp = report["zero_frequency_found"], report["zero_frequency_expected"]
    lines.append(f"zero frequency found at {tuple(found)} (centre of mass {tuple(report['zero_frequency_com'])}), "
                 f"expected {tuple(exp)}" + ("; patterns fftshifted" if report["fftshifted"] else "")
                 + ("" if tuple(found) == tuple(exp) else "; the window is centred on the found pixel"))
    c = report["counts_per_pattern"]
    lines.append(f"photons per pattern: mean {c['mean']:.4g}, min {c['min']:.4g}, max {c['max']:.4g}")
    sat = report["saturation"]
    lines.append(f"clipped {report['clipped_negative']} negative values; zeroed {report['saturated_zeroed']} "
                 f"saturated values (>= {sat:g})" if sat is not None else
                 f"clipped {report['clipped_negative']} negative values; no saturation level (pass --saturation)")
    lines[-1] += f"; {report['masked_pixels']} masked pixels set to 0"
    if report["window_outside_detector_px"]:
        lines.append(f"WARNING: {report['window_outside_detector_px']} px of each window lie outside the detector "
                     "and are 0; use a smaller --N or --bin")
    ratio = c["mean"] / report["probe_power"] if report["probe_power"] > 0 else float("inf")
    lines.append(f"probe: {report['probe']}; power sum |P|^2 = {report['probe_power']:.4g} "
                 f"(photons per pattern / probe power = {ratio:.3g})")
    lines += [f"note: {n}" for n in report["notes"]]
    if out:
        lines.append(f"wrote {out}")
    return "\n".join(lines)


def import_file(path, fmt: str, out, opts: ImportOptions) -> str:
    """Import ``path`` and write the contract NPZ ``out`` atomically; returns the summary text.

    An ``out`` ending in ``.h5``/``.hdf5`` gets the HDF5 layout (:mod:`ptycho_exp.data.h5`), its patterns
    written chunk by chunk as they are converted (a scan larger than memory can be imported)."""
    from ptycho_exp.data.h5 import ContractH5Writer, is_h5
    from ptycho_exp.data.npz import save_contract_npz

    if is_h5(out):
        with ContractH5Writer(out) as writer:
            scan, report = import_scan(path, fmt, opts, sink=writer)
            writer.finish(scan)
        return format_report(report, os.fspath(out))
    scan, report = import_scan(path, fmt, opts)
    save_contract_npz(out, scan)
    return format_report(report, os.fspath(out))
