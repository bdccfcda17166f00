"""Array containers passed between data, models, iterative engines and evaluation.

Conventions (docs/CONTRACT.md §1-4):
- a *position* is the (row, col) = (y, x) coordinate, in object pixels (float64), of the
  centre of an N×N patch: ``patch[i, j] = obj[y - N/2 + i, x - N/2 + j]``;
- ``diffraction`` is amplitude (never intensity), float32, zero frequency at (N/2, N/2).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ScanData:
    """One ptychographic scan: patterns, positions, probe and (optionally) the ground truth."""

    diffraction: np.ndarray              # (M, N, N) float32 amplitude
    positions: np.ndarray                # (M, 2) float64 [y, x] patch centres, object px
    probe: np.ndarray                    # (N, N) complex64
    object: np.ndarray | None = None  # (H, W) complex64 ground truth / reference
    patches: np.ndarray | None = None  # (M, N, N) complex64 ground-truth patches (Y)
    meta: dict = field(default_factory=dict)

    @property
    def n_positions(self) -> int:
        return int(self.diffraction.shape[0])

    @property
    def N(self) -> int:
        return int(self.diffraction.shape[-1])

    def subset(self, index: np.ndarray) -> ScanData:
        """Positions ``index`` of this scan (the object and probe are shared)."""
        return ScanData(self.diffraction[index], self.positions[index], self.probe, self.object,
                        None if self.patches is None else self.patches[index], dict(self.meta))


@dataclass
class Samples:
    """Network samples: C = gridsize**2 neighbouring patterns per sample, channels last.

    ``groups[k]`` are indices into the scan's positions; ``offsets`` are the positions
    relative to each group's centroid (``positions[groups] - centroid``, (n, C, 2) [y, x]).
    """

    diffraction: np.ndarray              # (n, N, N, C) float32 amplitude (as stored, not normalised)
    offsets: np.ndarray                  # (n, C, 2) float64, relative to the group centroid
    positions: np.ndarray                # (n, C, 2) float64 absolute [y, x]
    groups: np.ndarray                   # (n, C) int64 indices into the scan
    patches: np.ndarray | None = None  # (n, N, N, C) complex64 ground-truth patches

    @property
    def n(self) -> int:
        return int(self.diffraction.shape[0])

    @property
    def channels(self) -> int:
        return int(self.diffraction.shape[-1])
