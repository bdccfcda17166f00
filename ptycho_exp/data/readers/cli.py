"""``ptycho-exp data import``: its parser and handler, wired into :mod:`ptycho_exp.cli`."""
from __future__ import annotations

import argparse

from ptycho_exp.data.readers.convert import FORMATS, ImportOptions, import_file


def parse_frames(text: str | None) -> tuple[int | None, int | None] | None:
    """``"a:b"``, ``"a:"`` or ``":b"`` -> ``(a, b)`` (None for an open end); None for None."""
    if text is None:
        return None
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return tuple(int(p) if p.strip() else None for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise ValueError(f"--frames {text!r}: expected START:STOP; fix: e.g. --frames 0:500, 100: or :200") from None


def add_import_command(dsub: argparse._SubParsersAction) -> None:
    """Add ``data import`` to the ``data`` subcommands."""
    p = dsub.add_parser("import", help="convert a CXI / PtyLab HDF5 / Tike NPZ / contract NPZ scan to the contract")
    p.add_argument("path")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", required=True, help="output contract .npz, or .h5 (HDF5, patterns streamed to disk)")
    p.add_argument("--N", type=int, default=64, help="output pattern side (default 64)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--crop", action="store_true", help="crop N detector pixels around the zero frequency (default)")
    mode.add_argument("--bin", type=int, default=1, metavar="B", help="bin B x B detector pixels (window N*B)")
    p.add_argument("--frames", metavar="A:B", help="frame range, e.g. 0:500")
    p.add_argument("--distance", type=float, metavar="METRES", help="sample-detector distance")
    wl = p.add_mutually_exclusive_group()
    wl.add_argument("--energy-ev", type=float, metavar="EV", help="photon energy")
    wl.add_argument("--wavelength", type=float, metavar="METRES")
    p.add_argument("--pixel-size", type=float, metavar="METRES", help="detector pixel size")
    p.add_argument("--saturation", type=float, metavar="COUNTS", help="counts at or above which a pixel is saturated")
    p.add_argument("--mask-good", action="store_true", help="the file's mask marks good pixels with non-zero values")
    p.add_argument("--probe", metavar="NPZ", help="NPZ with probeGuess, for files without a probe")


def run_import(args: argparse.Namespace) -> int:
    """Handle ``data import``: print the summary; bad input raises ValueError (exit 2 in the CLI)."""
    opts = ImportOptions(N=args.N, bin=args.bin, frames=parse_frames(args.frames), distance=args.distance,
                         wavelength=args.wavelength, energy_ev=args.energy_ev, pixel_size=args.pixel_size,
                         saturation=args.saturation, mask_good=args.mask_good, probe_path=args.probe)
    print(import_file(args.path, args.fmt, args.out, opts))
    return 0
