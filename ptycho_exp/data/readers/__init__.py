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
Frames are read from HDF5 in chunks of about 32 MiB (never the whole file; Tike and contract NPZ
files are loaded whole, as NumPy reads them). Negative counts are clipped to 0; saturated pixels (the
integer dtype's maximum, or ``--saturation``) and the detector's bad-pixel mask (non-zero = bad, or
``--mask-good``) are set to 0; all three are counted and reported. The zero frequency is *found* (the
brightest pixel of the median-filtered mean of up to 256 frames, moved to the rounded centre of mass
around it) and compared with where the format puts it; with it within ``min(H, W)/8`` of the corners
the patterns are ``fftshift``-ed, otherwise the ``N*b`` window is centred on it wherever it is.
Amplitudes are in photon units (``meta['photon_scale'] = 1``): ``sum X**2`` are the counts.

A typical session::

    # read directly by a job: converted at job start into the dataset cache (once), then run as data=npz
    python -m ptycho_exp data=cxi data.train_path=scan_a.cxi data.test_path=scan_b.cxi data.N=64 model=pinn
    python -m ptycho_exp data=ptylab_h5 data.test_path=scan.h5 data.N=64 data.reader.bin=2 \
        data.reader.distance=1.2 model=ptylab
    # or converted once into a contract file, split, and used with data=npz
    ptycho-exp data import scan.cxi --format cxi --N 64 --out scan.npz     # geometry from the file
    ptycho-exp data import scan.h5 --format ptylab --N 64 --bin 2 --distance 1.2 --out scan.npz
    ptycho-exp data split scan.npz --train-out train.npz --test-out test.npz --gap 32
    python -m ptycho_exp data=npz data.train_path=train.npz data.test_path=test.npz model=ptylab

The job's import options are ``data.reader.*`` (:class:`ptycho_exp.config.ReaderConfig`: ``bin``,
``frame_start``/``frame_stop``, ``distance``, ``wavelength`` or ``energy_ev``, ``pixel_size``,
``saturation``, ``mask_good``, ``probe_path``), ``data.N`` the output side; the importer is the same
(:func:`ptycho_exp.data.cache.load_or_import`).

Every geometry fact the file lacks is an :class:`~ptycho_exp.data.npz.DataContractError` naming the
key and what supplies it: the command-line option for ``data import`` (:data:`CLI_NAMES`), the
``data.reader`` key for a job (:data:`CONFIG_NAMES`), which checks the file before it starts
(:func:`check_file`).
"""
from __future__ import annotations

from ptycho_exp.data.readers.cli import add_import_command, parse_frames, run_import
from ptycho_exp.data.readers.convert import (
    CLI_NAMES,
    CONFIG_NAMES,
    FORMATS,
    ImportOptions,
    OptionNames,
    check_file,
    format_report,
    import_file,
    import_scan,
    options_from_config,
)
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

__all__ = ["CLI_NAMES", "CONFIG_NAMES", "FORMATS", "ImportOptions", "OptionNames", "check_file",
           "options_from_config", "Source", "add_import_command", "at_corner", "clean_frames", "crop_and_bin",
           "energy_to_wavelength", "find_zero_frequency", "format_report", "import_file", "import_scan",
           "object_pixel_size", "open_contract", "open_cxi", "open_ptylab", "open_tike", "parse_frames",
           "resample_probe", "run_import", "window_start"]
