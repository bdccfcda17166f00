"""Stitch predicted object patches into one object image (docs/CONTRACT.md §6.1).

Geometry convention (fixed project-wide)
---------------------------------------
A scan position ``(y, x)`` (float64, object pixels) is the centre of an
``N x N`` patch: ``patch[i, j]`` samples ``obj[y - N/2 + i, x - N/2 + j]``.
The central ``crop x crop`` block of a patch is the pixels
``i, j in [N//2 - crop//2, N//2 - crop//2 + crop)``, so its first pixel samples
object coordinate ``y - N/2 + N//2 - crop//2`` (``= y - crop//2`` for even
``N``).  That (generally fractional) coordinate is split into an integer canvas
index ``r = floor(a + 0.5)`` and a residual ``a - r`` in ``[-0.5, 0.5)`` which is
removed by a Fourier sub-pixel shift of the cropped block before placement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Stitched",
    "default_crop",
    "scanned_box",
    "crop_to_box",
    "crop_to_scanned_box",
    "scan_weight",
    "covered_box",
    "fourier_shift_patches",
    "stitch_patches",
    "StitchAccumulator",
]


_WEIGHT_CHUNK = 1024  # positions per step of scan_weight (memory: chunk x (H + W) float64, not M x (H + W))


@dataclass
class Stitched:
    """Result of :func:`stitch_patches`.

    Attributes
    ----------
    image : ndarray, complex128, shape (H, W)
        Overlap-averaged object; 0 where no patch contributed.
    weight : ndarray, float64, shape (H, W)
        Number of cropped patches that contributed to each pixel.
    origin : tuple of int
        ``(row0, col0)``: object-pixel coordinate of canvas pixel ``(0, 0)``.
    """

    image: np.ndarray
    weight: np.ndarray
    origin: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        """Canvas shape ``(H, W)``."""
        return tuple(self.image.shape)

    @property
    def coverage(self) -> float:
        """Fraction of canvas pixels covered by at least one patch."""
        return float(np.mean(self.weight > 0)) if self.weight.size else 0.0


def default_crop(N: int) -> int:
    """Default stitching crop for patch size ``N``: ``round(N * 20 / 64)``.

    Parameters
    ----------
    N : int
        Patch size in pixels.

    Returns
    -------
    int
        20 at ``N = 64``, scaled linearly with ``N`` (at least 1).
    """
    return max(1, int(round(N * 20 / 64)))


def _corner_coords(positions: np.ndarray, crop: int, patch_size: int | None):
    """Object coordinate (float) of the first pixel of each cropped block."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must have shape (M, 2) [y, x], got {pos.shape}")
    if patch_size is None:
        half_diff = 0.0  # N even: N//2 - N/2 == 0
    else:
        half_diff = patch_size // 2 - patch_size / 2
    return pos + (half_diff - crop // 2)


def _split(a: np.ndarray):
    r = np.floor(a + 0.5)
    return r.astype(np.int64), a - r


def scanned_box(positions, crop: int, patch_size: int | None = None):
    """Bounding box of the stitched canvas for a scan.

    Parameters
    ----------
    positions : array_like, shape (M, 2)
        Scan positions ``[y, x]`` (patch centres) in object pixels.
    crop : int
        Side of the central block kept from each patch.
    patch_size : int, optional
        Patch size ``N``; only its parity matters (``None`` = even).

    Returns
    -------
    origin : tuple of int
        Object coordinate ``(row0, col0)`` of the box's first pixel.
    shape : tuple of int
        ``(H, W)`` of the box.
    """
    r, _ = _split(_corner_coords(positions, crop, patch_size))
    lo = r.min(axis=0)
    hi = r.max(axis=0) + crop
    return (int(lo[0]), int(lo[1])), (int(hi[0] - lo[0]), int(hi[1] - lo[1]))


def crop_to_box(image, origin, shape, image_origin=(0, 0), fill=0.0):
    """Cut the box ``origin``/``shape`` out of an image given in object coordinates.

    Parameters
    ----------
    image : ndarray, shape (H0, W0)
        Image whose pixel ``(0, 0)`` sits at object coordinate ``image_origin``.
    origin : tuple of int
        Object coordinate of the box's first pixel.
    shape : tuple of int
        Box shape ``(H, W)``.
    image_origin : tuple of int, optional
        Object coordinate of ``image[0, 0]`` (default ``(0, 0)``).
    fill : scalar, optional
        Value for box pixels that fall outside ``image``.

    Returns
    -------
    ndarray, shape (H, W)
        Same dtype as ``image``.
    """
    image = np.asarray(image)
    H, W = int(shape[0]), int(shape[1])
    out = np.full((H, W), fill, dtype=image.dtype)
    r0 = int(origin[0]) - int(round(image_origin[0]))
    c0 = int(origin[1]) - int(round(image_origin[1]))
    rs, re = max(r0, 0), min(r0 + H, image.shape[0])
    cs, ce = max(c0, 0), min(c0 + W, image.shape[1])
    if rs < re and cs < ce:
        out[rs - r0 : re - r0, cs - c0 : ce - c0] = image[rs:re, cs:ce]
    return out


def crop_to_scanned_box(obj, positions, crop: int, patch_size: int | None = None):
    """Part of a ground-truth object covered by the stitched canvas.

    Returns the region with the same origin and shape as the default canvas of
    :func:`stitch_patches` for the same ``positions``/``crop``, so that ground
    truth and reconstruction align pixel for pixel before registration.
    Pixels outside ``obj`` are filled with 0.

    Parameters
    ----------
    obj : ndarray, shape (H0, W0)
        Ground-truth object in object coordinates (``obj[0, 0]`` at ``(0, 0)``).
    positions : array_like, shape (M, 2)
        Scan positions ``[y, x]``.
    crop : int
        Stitching crop.
    patch_size : int, optional
        Patch size (parity only; ``None`` = even).

    Returns
    -------
    ndarray
        The cropped object (same dtype as ``obj``).
    """
    origin, shape = scanned_box(positions, crop, patch_size)
    return crop_to_box(obj, origin, shape)


def scan_weight(positions, crop: int, origin=None, shape=None, patch_size: int | None = None):
    """Number of cropped blocks covering each pixel (the ``weight`` of the stitch).

    Depends only on the scan geometry, so it equals ``stitch_patches(...).weight``
    for the same ``positions``/``crop``/``origin``/``shape``.

    Parameters
    ----------
    positions : array_like, shape (M, 2)
        Scan positions ``[y, x]``.
    crop : int
        Stitching crop.
    origin, shape : tuple of int, optional
        Canvas (default: :func:`scanned_box`).
    patch_size : int, optional
        Patch size (parity only; ``None`` = even).

    Returns
    -------
    weight : ndarray, float64, shape (H, W)
    origin : tuple of int
    """
    crop = int(crop)
    r, _ = _split(_corner_coords(positions, crop, patch_size))
    if origin is None or shape is None:
        bo, bs = scanned_box(positions, crop, patch_size)
        origin = bo if origin is None else origin
        shape = bs if shape is None else shape
    origin = (int(origin[0]), int(origin[1]))
    H, W = int(shape[0]), int(shape[1])
    kk = np.arange(crop)
    weight = np.zeros((H, W), np.float64)
    for s in range(0, len(r), _WEIGHT_CHUNK):  # (positions, H) and (positions, W) indicators, a chunk at a time
        rows = r[s:s + _WEIGHT_CHUNK, 0, None] - origin[0] + kk[None, :]
        cols = r[s:s + _WEIGHT_CHUNK, 1, None] - origin[1] + kk[None, :]
        ry = np.zeros((len(rows), H), np.float64)
        cx = np.zeros((len(rows), W), np.float64)
        for arr, idx, n in ((ry, rows, H), (cx, cols, W)):
            ok = (idx >= 0) & (idx < n)
            m = np.nonzero(ok)
            arr[m[0], idx[ok]] = 1.0
        weight += ry.T @ cx  # counts: exact in float64, whatever the chunks
    return weight, origin


def covered_box(positions, crop: int, patch_size: int | None = None, min_fraction: float = 0.5):
    """Largest fully covered rectangle of the scanned box, found by peeling edges.

    Starting from :func:`scanned_box`, the border row or column with the most
    uncovered pixels is removed until no uncovered pixel remains on the border
    of the rectangle. If that leaves less than ``min_fraction`` of the box (a
    scan with interior holes), the whole scanned box is returned instead.
    Because it depends only on ``positions`` and ``crop``, networks and
    iterative engines scored on the same scan use the same box.

    Returns
    -------
    origin : tuple of int
    shape : tuple of int
    """
    origin, shape = scanned_box(positions, crop, patch_size)
    w, _ = scan_weight(positions, crop, origin, shape, patch_size)
    cov = w > 0
    r0, r1, c0, c1 = 0, shape[0], 0, shape[1]
    while r1 > r0 and c1 > c0:
        sub = cov[r0:r1, c0:c1]
        gaps = [
            int((~sub[0]).sum()),
            int((~sub[-1]).sum()),
            int((~sub[:, 0]).sum()),
            int((~sub[:, -1]).sum()),
        ]
        k = int(np.argmax(gaps))
        if gaps[k] == 0:
            break
        if k == 0:
            r0 += 1
        elif k == 1:
            r1 -= 1
        elif k == 2:
            c0 += 1
        else:
            c1 -= 1
    area = max(r1 - r0, 0) * max(c1 - c0, 0)
    if area < min_fraction * shape[0] * shape[1] or not cov[r0:r1, c0:c1].all():
        return origin, shape
    return (origin[0] + r0, origin[1] + c0), (r1 - r0, c1 - c0)


def _pad_len(n: int) -> int:
    """Small FFT-friendly length >= n (products of 2, 3, 5)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def fourier_shift_patches(blocks, shifts, pad: int | None = None):
    """Sub-pixel shift a stack of 2-D blocks (content moves by ``+shift``).

    Each block is mirror-padded (``numpy.pad`` mode ``'symmetric'``) before the
    FFT so that the periodic wrap of the discrete Fourier shift sees a
    continuous signal, which keeps edge ringing small for smooth content.

    Parameters
    ----------
    blocks : ndarray, shape (M, h, w)
        Real or complex blocks.
    shifts : ndarray, shape (M, 2)
        ``(dy, dx)`` per block; output ``out[k] ~= block[k - shift]``.
    pad : int, optional
        Mirror padding on each side (default ``max(h, w) // 2``, at least 2).

    Returns
    -------
    ndarray, complex128, shape (M, h, w)
    """
    blocks = np.asarray(blocks)
    shifts = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
    M, h, w = blocks.shape
    if pad is None:
        pad = max(2, max(h, w) // 2)
    ph, pw = _pad_len(h + 2 * pad), _pad_len(w + 2 * pad)
    top, left = pad, pad
    padded = np.pad(
        blocks.astype(np.complex128, copy=False),
        ((0, 0), (top, ph - h - top), (left, pw - w - left)),
        mode="symmetric",
    )
    fy = np.fft.fftfreq(ph)
    fx = np.fft.fftfreq(pw)
    F = np.fft.fft2(padded)
    F *= np.exp(-2j * np.pi * shifts[:, 0, None, None] * fy[None, :, None])
    F *= np.exp(-2j * np.pi * shifts[:, 1, None, None] * fx[None, None, :])
    out = np.fft.ifft2(F)
    return out[:, top : top + h, left : left + w]


def stitch_patches(
    patches,
    positions,
    crop: int,
    shape=None,
    origin=None,
    patch_size_parity_from_patches: bool = True,
    chunk: int = 512,
    margin: int | None = None,
) -> Stitched:
    """Stitch the central crops of object patches at their scan positions.

    Parameters
    ----------
    patches : ndarray, shape (M, N, N)
        Complex (or real) patches; ``patch[i, j]`` samples
        ``obj[y - N/2 + i, x - N/2 + j]``.
    positions : array_like, shape (M, 2)
        Patch centres ``[y, x]`` in object pixels (float).
    crop : int
        Side of the central block kept from each patch (``crop <= N``).
    shape : tuple of int, optional
        Canvas shape. Default: bounding box of all placed blocks.
    origin : tuple of int, optional
        Object coordinate of canvas pixel ``(0, 0)``. Default: top-left of the
        bounding box. Blocks falling (partly) outside the canvas are clipped.
    patch_size_parity_from_patches : bool, optional
        Use the actual ``N`` of ``patches`` for the crop geometry (matters only
        for odd ``N``).
    chunk : int, optional
        Patches processed at once (bounds memory for thousands of patches).
    margin : int, optional
        Extra context (pixels per side, taken from the patch around the crop,
        default ``min((N - crop) // 2, crop // 4)``) included in the sub-pixel
        Fourier shift to reduce edge errors; it is discarded after the shift.

    Returns
    -------
    Stitched
        ``image`` (complex128, sum of values / count, 0 where uncovered),
        ``weight`` (count), ``origin``.

    Notes
    -----
    Integer parts of the block positions select the canvas pixels; the
    fractional residual (in ``[-0.5, 0.5)``) is removed by a vectorised Fourier
    shift of each (mirror-padded) cropped block. Exactly integer positions are
    placed without any interpolation.
    """
    patches = np.asarray(patches)
    if patches.ndim == 2:
        patches = patches[None]
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must have shape (M, N, N), got {patches.shape}")
    M, N, _ = patches.shape
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (M, 2):
        raise ValueError(f"positions must have shape ({M}, 2), got {pos.shape}")
    acc = StitchAccumulator(pos, N, crop, shape=shape, origin=origin,
                            patch_size_parity_from_patches=patch_size_parity_from_patches, chunk=chunk,
                            margin=margin)
    acc.add(patches, pos)
    return acc.result()


class StitchAccumulator:
    """:func:`stitch_patches` fed in parts: running sums on the canvas, patches added batch by batch.

    Memory is the canvas (three float64 (H, W) sums) plus at most ``chunk`` buffered patches, whatever the
    number of patches. Patches are summed in blocks of ``chunk`` counted from the first patch added, the
    blocks :func:`stitch_patches` uses, so the result equals ``stitch_patches`` on all the patches at once
    (bit for bit), however the patches are split into :meth:`add` calls.

    Parameters
    ----------
    positions : array_like, shape (M, 2)
        All the scan positions ``[y, x]`` that will be added (they fix the default canvas).
    N : int
        Patch size.
    crop, shape, origin, patch_size_parity_from_patches, chunk, margin
        As in :func:`stitch_patches`.
    """

    def __init__(self, positions, N: int, crop: int, shape=None, origin=None,
                 patch_size_parity_from_patches: bool = True, chunk: int = 512, margin: int | None = None):
        N, crop = int(N), int(crop)
        if not 1 <= crop <= N:
            raise ValueError(f"crop must be in [1, N={N}], got {crop}")
        self.N, self.crop, self.chunk = N, crop, max(1, int(chunk))
        self._psz = N if patch_size_parity_from_patches else None
        if origin is None or shape is None:
            box_origin, box_shape = scanned_box(np.asarray(positions, dtype=np.float64), crop, self._psz)
            if origin is None:
                origin = box_origin
            if shape is None:
                shape = (box_origin[0] + box_shape[0] - int(origin[0]),
                         box_origin[1] + box_shape[1] - int(origin[1]))
        self.origin = (int(origin[0]), int(origin[1]))
        self.H, self.W = max(int(shape[0]), 0), max(int(shape[1]), 0)
        start = N // 2 - crop // 2
        if margin is None:
            margin = min((N - crop) // 2, crop // 4)
        self.margin = int(max(0, min(margin, start, N - start - crop)))
        self._lo, self._hi = start - self.margin, start + crop + self.margin
        self._re = np.zeros(self.H * self.W, dtype=np.float64)
        self._im = np.zeros(self.H * self.W, dtype=np.float64)
        self._cnt = np.zeros(self.H * self.W, dtype=np.float64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._n_pending = 0
        self.n_added = 0

    def add(self, patches, positions) -> None:
        """Add patches (m, N, N) at positions (m, 2) ``[y, x]``."""
        patches = np.asarray(patches)
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        if patches.ndim != 3 or patches.shape[1:] != (self.N, self.N) or patches.shape[0] != pos.shape[0]:
            raise ValueError(f"patches must have shape ({pos.shape[0]}, {self.N}, {self.N}), got {patches.shape}")
        self.n_added += patches.shape[0]
        if self._n_pending:  # complete the block begun by earlier calls first
            take = min(self.chunk - self._n_pending, patches.shape[0])
            self._pending.append((patches[:take].copy(), pos[:take].copy()))  # the caller may reuse its buffer
            self._n_pending += take
            patches, pos = patches[take:], pos[take:]
            if self._n_pending < self.chunk:
                return
            self._place(np.concatenate([p for p, _ in self._pending]), np.concatenate([q for _, q in self._pending]))
            self._pending, self._n_pending = [], 0
        full = patches.shape[0] - patches.shape[0] % self.chunk
        for s in range(0, full, self.chunk):
            self._place(patches[s:s + self.chunk], pos[s:s + self.chunk])
        if full < patches.shape[0]:
            self._pending, self._n_pending = [(patches[full:].copy(), pos[full:].copy())], patches.shape[0] - full

    def _place(self, patches: np.ndarray, pos: np.ndarray) -> None:
        """Add one block of patches to the running sums."""
        crop, margin, H, W = self.crop, self.margin, self.H, self.W
        r, fr = _split(_corner_coords(pos, crop, self._psz))
        blocks = patches[:, self._lo:self._hi, self._lo:self._hi]
        need = np.any(fr != 0.0, axis=1)
        vals = blocks.astype(np.complex128)
        if np.any(need):
            vals[need] = fourier_shift_patches(blocks[need], fr[need])
        vals = vals[:, margin : margin + crop, margin : margin + crop]
        kk = np.arange(crop)
        rows = r[:, 0, None] - self.origin[0] + kk[None, :]  # (m, crop)
        cols = r[:, 1, None] - self.origin[1] + kk[None, :]
        ok = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
        flat = rows[:, :, None] * W + cols[:, None, :]
        idx = flat[ok]
        v = vals[ok]
        self._re += np.bincount(idx, weights=v.real, minlength=H * W)
        self._im += np.bincount(idx, weights=v.imag, minlength=H * W)
        self._cnt += np.bincount(idx, minlength=H * W)

    def result(self) -> Stitched:
        """The stitched object of everything added so far (the buffered patches are placed first)."""
        if self._n_pending:
            self._place(np.concatenate([p for p, _ in self._pending]), np.concatenate([q for _, q in self._pending]))
            self._pending, self._n_pending = [], 0
        H, W = self.H, self.W
        img = np.zeros(H * W, dtype=np.complex128)
        nz = self._cnt > 0
        img[nz] = (self._re[nz] + 1j * self._im[nz]) / self._cnt[nz]
        return Stitched(image=img.reshape(H, W), weight=self._cnt.reshape(H, W).copy(), origin=self.origin)
