"""Measured scans in, contract NPZ out: CXI, PtyLab HDF5, Tike-style NPZ and contract NPZ readers.

``ptycho-exp data import FILE --format cxi|ptylab|tike|npz --N 64 --out scan.npz`` turns a file as a
beamline or another package writes it into the contract (:mod:`ptycho_exp.data.npz`): amplitude
``sqrt(counts)`` with the zero frequency at ``(N/2, N/2)``, patch centres in object pixels, an
``(N, N)`` probe on the same pixel grid.

Geometry
--------
- The object (real-space) pixel of an ``n``-pixel detector window is ``dx = wavelength * z / (n * dxd)``
  (``z`` the sample-detector distance, ``dxd`` the detector pixel). Cropping the detector to ``N``
  pixels around the zero frequency keeps ``dxd`` and gives ``dx = wavelength z / (N dxd)``; binning by
  ``b`` (``--bin``) takes ``N*b`` pixels and sums ``b x b`` blocks, so ``dx = wavelength z / (N b dxd)``.
- Positions in metres become ``p / dx`` pixels, placed so the smallest coordinate is ``N/2`` (the patch
  touches the object's first row/column). CXI stores the *sample* translation (x, y, z): the beam's
  position on the sample is minus it. PtyLab's ``encoder`` (row, col) is the beam position itself.
  Tike's ``scan`` (row, col) is the corner of the probe window in pixels of the stored detector: its
  centre is ``scan + n/2``; scaled by the pixel-size ratio and kept (shifted only if a patch would
  leave the object). A contract NPZ's ``xcoords``/``ycoords`` are handled the same way.
- A probe stored with side ``n_p`` is taken to be sampled at ``wavelength z / (n_p dxd)`` (the pixel of
  a reconstruction from ``n_p`` detector pixels). It is resampled to the output ``dx`` by cropping or
  padding its spectrum (total power kept) and then centre-cropped or padded to ``N x N``.

Patterns
--------
Frames are read from HDF5 in chunks (never the whole file). Negative counts are clipped to 0;
saturated pixels (the integer dtype's maximum, or ``--saturation``) and the detector's bad-pixel mask
are set to 0; all three are counted and reported. The zero frequency is *found* (brightest pixel of
the median-filtered mean pattern, checked by its centre of mass) and compared with where the format
puts it; patterns with it at the corners are ``fftshift``-ed.

Every geometry fact the file lacks is an :class:`~ptycho_exp.data.npz.DataContractError` naming the
key and the command-line option that supplies it.
"""
from __future__ import annotations

from ptycho_exp.data.readers.cli import add_import_command, parse_frames, run_import
from ptycho_exp.data.readers.convert import FORMATS, ImportOptions, format_report, import_file, import_scan
from ptycho_exp.data.readers.formats import Source, open_contract, open_cxi, open_ptylab, open_tike
from ptycho_exp.data.readers.patterns import (
    at_corner,
    clean_frames,
    crop_and_bin,
    energy_to_wavelength,
    find_zero_frequency,
    object_pixel_size,
    resample_probe,
    window_start,
)

__all__ = ["FORMATS", "ImportOptions", "Source", "add_import_command", "at_corner", "clean_frames", "crop_and_bin",
           "energy_to_wavelength", "find_zero_frequency", "format_report", "import_file", "import_scan",
           "object_pixel_size", "open_contract", "open_cxi", "open_ptylab", "open_tike", "parse_frames",
           "resample_probe", "run_import", "window_start"]
