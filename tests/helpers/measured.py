"""Measured-data files written with h5py from simulated scans of known geometry: a CXI file and a PtyLab HDF5
file. Importing them (``data import``, ``data=cxi`` / ``data=ptylab_h5``) must give back the simulator's arrays."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from scipy.constants import e as ELECTRON_CHARGE

from ptycho_exp.data.readers import energy_to_wavelength

ENERGY_EV = 8000.0
DISTANCE = 2.0  # m
DX = 50e-9  # object pixel (m) of an N-pixel detector window
CXI_DETECTOR = "entry_1/instrument_1/detector_1"
CXI_SOURCE = "entry_1/instrument_1/source_1"


def small_scan():
    """A noisy test scan of 81 patterns of 32x32 with jittered (sub-pixel) positions (simulated, seeded)."""
    from ptycho_exp.data import simulate

    return simulate.simulate_object_scan({"N": 32, "object_size": 96, "test_stride": 8.0, "nphotons": 1e5,
                                          "jitter": 0.7}, "test")


def detector_pixel(N: int) -> float:
    """Detector pixel that makes the N-pixel window's object pixel exactly DX."""
    return energy_to_wavelength(ENERGY_EV) * DISTANCE / (N * DX)


def photon_counts(scan) -> np.ndarray:
    """Photon counts (the simulator's amplitude in photon units, squared), float32."""
    return np.square(np.asarray(scan.diffraction, np.float64) * scan.meta["photon_scale"]).astype(np.float32)


def write_cxi(path, scan, counts=None, mask=None, drop=()) -> Path:
    """A CXI file of ``scan``: counts, sample translation (m) = -beam position, energy (J), distance, pixels."""
    N = scan.N
    pixel = detector_pixel(N)
    y, x = scan.positions[:, 0] * DX, scan.positions[:, 1] * DX
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 150
        f["entry_1/data_1/data"] = photon_counts(scan) if counts is None else counts
        f[f"{CXI_DETECTOR}/distance"] = DISTANCE
        f[f"{CXI_DETECTOR}/x_pixel_size"] = pixel
        f[f"{CXI_DETECTOR}/y_pixel_size"] = pixel
        f[f"{CXI_SOURCE}/energy"] = ENERGY_EV * ELECTRON_CHARGE
        f["entry_1/sample_1/geometry_1/translation"] = np.stack([-x, -y, np.zeros_like(x)], axis=1)
        f[f"{CXI_SOURCE}/illumination"] = scan.probe
        if mask is not None:
            f[f"{CXI_DETECTOR}/mask"] = mask
        for key in drop:
            del f[key]
    return Path(path)


def write_ptylab(path, scan, drop=()) -> Path:
    """A PtyLab HDF5 file of ``scan``: ptychogram, encoder (row, col) in metres, wavelength, zo, dxd, probe."""
    with h5py.File(path, "w") as f:
        f["ptychogram"] = photon_counts(scan)
        f["encoder"] = scan.positions * DX + 1e-3  # an arbitrary stage origin
        f["wavelength"] = energy_to_wavelength(ENERGY_EV)
        f["zo"] = DISTANCE
        f["dxd"] = detector_pixel(scan.N)
        f["probe"] = scan.probe[None, None]  # PtyLab keeps mode axes
        for key in drop:
            del f[key]
    return Path(path)
