"""Scan positions, sub-pixel patch extraction/reassembly and neighbour grouping (docs/CONTRACT.md §1, §3).

Conventions
-----------
- A position is the (row, col) = (y, x) centre of an N×N patch, in object pixels (float64):
  ``patch[i, j] = obj[y - N/2 + i, x - N/2 + j]``.
- A shift ``t = (dy, dx)`` moves image content by ``+t``: ``shift_image(img, t)[y, x] = img[y - dy, x - dx]``.
- Sub-pixel positions are handled by Fourier (sinc) interpolation, which is exact for content that
  is band-limited and periodic over the crop, and otherwise rings slightly near the crop border; the
  extraction crop is therefore padded by ``pad`` px (default N/8) that are discarded afterwards.
  Integer positions are plain crops (no interpolation at all).

Grid border rule
----------------
:func:`grid_positions` keeps every patch fully inside the object and nothing more: centres run
from N/2 to S - N/2, so the number per axis is ``floor((S - N) / stride) + 1``; the slack
``(S - N) mod stride`` is split evenly (rounded down to whole px) on both sides. At S=392, N=64
this gives 83 per axis at stride 4 (32..360) and 33 at stride 10 (36..356), i.e. the contract's 83² and
33². (Any extra border, e.g. PtychoPINN's jitter buffer of 10 px, would give fewer, 78² at stride 4.)
"""
from __future__ import annotations

import numpy as np
import scipy.fft

_CHUNK = 512  # patches per FFT batch


# --------------------------------------------------------------------------- positions

def grid_positions(object_size: int, N: int, stride: float) -> np.ndarray:
    """Regular grid of patch centres with every patch fully inside an ``object_size``² object.

    Parameters
    ----------
    object_size : S, side of the object (px)
    N : patch size (px)
    stride : grid step (px), the same along y and x

    Returns
    -------
    (n*n, 2) float64 [y, x], row-major (y outer); n = floor((S - N) / stride) + 1
    """
    if not stride > 0:
        raise ValueError(f"grid_positions: stride must be > 0, got {stride}")
    span = float(object_size - N)
    if span < 0:
        raise ValueError(f"grid_positions: object_size={object_size} is smaller than the patch N={N}")
    n = int(np.floor(span / stride + 1e-9)) + 1
    slack = span - (n - 1) * stride
    start = N / 2.0 + np.floor(slack / 2.0)
    axis = start + stride * np.arange(n)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)


def block_grid_positions(object_size: int, N: int, outer_stride: float, inner_stride: float,
                         gridsize: int) -> np.ndarray:
    """g x g blocks of positions ``inner_stride`` apart, the blocks on a grid ``outer_stride`` apart.

    PtychoPINN's gridsize-g test layout: each block is one sample whose neighbours are as far apart
    as in training (the training scan's step), while the blocks cover the object at the test step.

    Returns
    -------
    (B*g*g, 2) float64 [y, x]: block ``b`` is rows ``b*g*g .. (b+1)*g*g - 1``, in raster order;
    every patch lies inside the object.
    """
    g = int(gridsize)
    reach = (g - 1) * float(inner_stride)
    origins = grid_positions(int(np.floor(object_size - reach)), N, outer_stride)
    ij = np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), axis=-1).reshape(-1, 2)
    return (origins[:, None, :] + ij[None] * float(inner_stride)).reshape(-1, 2)


def random_positions(object_size: int, N: int, n: int, rng: np.random.Generator,
                     border: float = 0.0) -> np.ndarray:
    """``n`` uniform random patch centres, patches inside the object with ``border`` px to spare.

    Centres are uniform in ``[N/2 + border, S - N/2 - border]`` along each axis.

    Returns
    -------
    (n, 2) float64 [y, x]
    """
    low, high = N / 2.0 + border, object_size - N / 2.0 - border
    if high < low:
        raise ValueError(f"random_positions: no room for N={N} patches with border={border} "
                         f"in an object of size {object_size}")
    return rng.uniform(low, high, size=(int(n), 2)).astype(np.float64)


def jitter_positions(positions: np.ndarray, std: float, rng: np.random.Generator,
                     low: float | None = None, high: float | None = None) -> np.ndarray:
    """Add Gaussian jitter of ``std`` px to every coordinate, then clip into ``[low, high]``.

    Pass ``low = N/2`` and ``high = S - N/2`` to keep every patch inside the object.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if std > 0:
        pos = pos + rng.normal(0.0, std, size=pos.shape)
    if low is not None or high is not None:
        pos = np.clip(pos, low, high)
    return pos


# --------------------------------------------------------------------------- Fourier shift

def _phase_ramp(size: int, shift: np.ndarray) -> np.ndarray:
    """``exp(-2 pi i k t)`` for the DFT frequencies ``k`` of ``size`` and shifts ``t`` (B,) -> (B, size)."""
    k = np.fft.fftfreq(size)
    return np.exp(-2j * np.pi * np.asarray(shift, dtype=np.float64)[:, None] * k[None, :])


def _shift_stack(stack: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Fourier-shift each image of ``stack`` (B, H, W) by its own ``shifts[b] = (dy, dx)``.

    Complex out, complex128 for float64/complex128 input, complex64 otherwise.
    """
    _, h, w = stack.shape
    double = stack.dtype in (np.float64, np.complex128)
    ctype = np.complex128 if double else np.complex64
    ramp_y = _phase_ramp(h, shifts[:, 0]).astype(ctype)
    ramp_x = _phase_ramp(w, shifts[:, 1]).astype(ctype)
    spectrum = scipy.fft.fft2(stack.astype(ctype, copy=False), axes=(-2, -1))
    spectrum *= ramp_y[:, :, None]
    spectrum *= ramp_x[:, None, :]
    return scipy.fft.ifft2(spectrum, axes=(-2, -1), overwrite_x=True)


def shift_image(img: np.ndarray, shift) -> np.ndarray:
    """Fourier (circular, sub-pixel) shift over the last two axes; content moves by ``+shift``.

    Parameters
    ----------
    img : (..., H, W) real or complex array
    shift : (dy, dx), or (..., 2) with one shift per leading image

    Returns
    -------
    Array of ``img``'s shape: complex64/complex128 for complex input, float for real input (real part).
    """
    arr = np.asarray(img)
    lead = arr.shape[:-2]
    stack = arr.reshape((-1,) + arr.shape[-2:])
    shifts = np.broadcast_to(np.asarray(shift, dtype=np.float64), lead + (2,)).reshape(-1, 2)
    out = _shift_stack(stack, shifts).reshape(arr.shape)
    if np.iscomplexobj(arr):
        return out.astype(arr.dtype, copy=False)
    return out.real.astype(np.result_type(arr.dtype, np.float32), copy=False)


# --------------------------------------------------------------------------- extraction

def _split_positions(positions: np.ndarray):
    """Integer part (nearest px) and fractional residual in [-0.5, 0.5] of each position."""
    pos = np.asarray(positions, dtype=np.float64)
    rounded = np.rint(pos)
    return rounded.astype(np.int64), pos - rounded


def extract_patches(obj: np.ndarray, positions: np.ndarray, N: int,
                    pad: int | None = None) -> np.ndarray:
    """N×N patches of ``obj`` centred at (sub-pixel) ``positions``.

    ``patch[i, j] = obj[y - N/2 + i, x - N/2 + j]``. For a fractional position the crop of side
    ``N + 2*pad`` around the rounded position is Fourier-shifted by minus the residual and its
    centre kept. Pixels outside the object take the nearest edge value.

    Parameters
    ----------
    obj : (H, W) real or complex object
    positions : (M, 2) [y, x] patch centres
    N : patch size (even)
    pad : px of extra crop on each side for sub-pixel shifts (default N // 8)

    Returns
    -------
    (M, N, N) complex64
    """
    from numpy.lib.stride_tricks import sliding_window_view

    obj = np.asarray(obj)
    rounded, frac = _split_positions(positions)
    m = rounded.shape[0]
    out = np.empty((m, N, N), dtype=np.complex64)
    if m == 0:
        return out
    pad = N // 8 if pad is None else int(pad)
    side = N + 2 * pad
    # top-left corner of each crop in object coordinates
    corner = rounded - N // 2 - pad
    before = np.maximum(0, -corner.min(axis=0))
    after = np.maximum(0, corner.max(axis=0) + side - np.array(obj.shape))
    padded = np.pad(obj.astype(np.complex64, copy=False),
                    ((before[0], after[0]), (before[1], after[1])), mode="edge")
    corner = corner + before
    windows = sliding_window_view(padded, (side, side))
    is_fractional = np.any(np.abs(frac) > 1e-9, axis=1)
    for start in range(0, m, _CHUNK):
        sl = slice(start, start + _CHUNK)
        crops = windows[corner[sl, 0], corner[sl, 1]]  # (B, side, side) copy
        frac_rows = np.nonzero(is_fractional[sl])[0]
        if frac_rows.size:
            crops = crops.copy()
            crops[frac_rows] = _shift_stack(crops[frac_rows], -frac[sl][frac_rows])
        out[sl] = crops[:, pad:pad + N, pad:pad + N]
    return out


def reassemble_patches(patches: np.ndarray, positions: np.ndarray, shape,
                       return_counts: bool = False, pad: int | None = None):
    """Average patches back into an image of ``shape`` (the inverse of :func:`extract_patches`).

    Each patch at a fractional position is edge-padded by ``pad`` px, Fourier-shifted by its
    fractional residual and cropped back to N×N (the padding keeps the circular wrap of the shift
    away from the patch, as in :func:`extract_patches`); it is then added at its rounded position
    and the sum divided by the number of patches covering each pixel (0 where none does). Parts
    of patches outside ``shape`` are dropped. For content band-limited and periodic over the
    crops the round trip ``reassemble(extract(obj))`` is exact on the covered pixels.

    Parameters
    ----------
    patches : (M, N, N) real or complex
    positions : (M, 2) [y, x] patch centres
    shape : (H, W) of the output
    return_counts : also return the (H, W) int coverage count
    pad : px of edge padding for sub-pixel shifts (default N // 8)

    Returns
    -------
    (H, W) image of the patches' dtype kind (complex64 or float32) [, counts]
    """
    patches = np.asarray(patches)
    is_complex = np.iscomplexobj(patches)
    dtype = np.complex64 if is_complex else np.float32
    h, w = int(shape[0]), int(shape[1])
    m, n = patches.shape[0], patches.shape[-1]
    total = np.zeros((h, w), dtype=np.complex128 if is_complex else np.float64)
    count = np.zeros((h, w), dtype=np.int64)
    pad = n // 8 if pad is None else int(pad)
    rounded, frac = _split_positions(positions)
    is_fractional = np.any(np.abs(frac) > 1e-9, axis=1)
    for start in range(0, m, _CHUNK):
        block = patches[start:start + _CHUNK].astype(np.complex128 if is_complex else np.float64)
        frac_rows = np.nonzero(is_fractional[start:start + _CHUNK])[0]
        if frac_rows.size:
            padded = np.pad(block[frac_rows], ((0, 0), (pad, pad), (pad, pad)), mode="edge")
            shifted = _shift_stack(padded, frac[start:start + _CHUNK][frac_rows])[:, pad:pad + n, pad:pad + n]
            block[frac_rows] = shifted if is_complex else shifted.real
        for b in range(block.shape[0]):
            top, left = rounded[start + b] - n // 2
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + n, h), min(left + n, w)
            if y1 <= y0 or x1 <= x0:
                continue
            total[y0:y1, x0:x1] += block[b, y0 - top:y1 - top, x0 - left:x1 - left]
            count[y0:y1, x0:x1] += 1
    image = np.where(count > 0, total / np.maximum(count, 1), 0).astype(dtype)
    return (image, count) if return_counts else image


# --------------------------------------------------------------------------- grouping

def group_around(positions: np.ndarray, centres: np.ndarray, gridsize: int,
                 rng: np.random.Generator, k: int = 7) -> np.ndarray:
    """Groups of C = gridsize² neighbouring positions anchored at the given centre indices.

    Rule: each group is its centre and C-1 distinct positions drawn uniformly at random (without
    replacement) from the centre's ``k`` nearest neighbours (the centre itself excluded), its channels
    then put in raster order of their position (see :func:`order_channels`). (PtychoPINN draws all C
    from the k+1 nearest including the centre; anchoring at the centre keeps the centre distribution
    exactly the one asked for, e.g. every test position in at least one group.)

    Parameters
    ----------
    positions : (M, 2) [y, x]
    centres : (n,) int indices into ``positions``
    gridsize : g (C = g²)
    rng : numpy Generator
    k : nearest neighbours considered (needs k >= C - 1)

    Returns
    -------
    (n, C) int64 indices into ``positions``
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.int64)
    c = int(gridsize) ** 2
    if c == 1:
        return centres[:, None].copy()
    m = pos.shape[0]
    k_eff = min(int(k), m - 1)
    if k_eff < c - 1:
        raise ValueError(f"group_around: gridsize={gridsize} needs {c - 1} neighbours per centre, but "
                         f"k={k} and the scan has {m} positions; raise k (data.k_neighbors) to >= {c - 1}")
    _, nearest = cKDTree(pos).query(pos[centres], k=k_eff + 1)
    nearest = np.asarray(nearest, dtype=np.int64).reshape(len(centres), k_eff + 1)
    is_self = nearest == centres[:, None]
    # move the centre to the end of its row (stable: neighbours stay in distance order), drop it
    order = np.argsort(is_self, axis=1, kind="stable")
    neighbours = np.take_along_axis(nearest, order, axis=1)[:, :k_eff]
    picks = np.sort(np.argsort(rng.random(neighbours.shape), axis=1)[:, :c - 1], axis=1)
    chosen = np.take_along_axis(neighbours, picks, axis=1)
    return order_channels(pos, np.concatenate([centres[:, None], chosen], axis=1))


def order_channels(positions: np.ndarray, groups: np.ndarray, decimals: int = 3) -> np.ndarray:
    """Each group's members in raster order of position (row, then column), as the channels of a sample.

    A fixed geometric order is what lets a network that sees the C patterns as channels (but not
    their offsets) tell which neighbour lies where: with the members in drawing order, channel 1 is
    above the centre in one sample and to its left in the next. The order is also what tells the
    object from its twin: for a group symmetric about its centroid (a g x g block), a real object
    under a real symmetric probe and its point reflection give the same patterns with the channels
    reversed. Trained with each group's channels in a random order, a g=2 PINN on an amplitude-only
    object predicted the twin in about half its test patches (amplitude SSIM 0.50 against 0.66 in
    raster order, 2,048 groups x 20 epochs).
    Positions are compared after rounding to ``decimals`` (sub-px jitter of a grid keeps the grid's
    order only up to that).

    Parameters
    ----------
    positions : (M, 2) [y, x]
    groups : (n, C) int indices into ``positions``

    Returns
    -------
    (n, C) int64, the same members per row, reordered
    """
    groups = np.asarray(groups, dtype=np.int64)
    pos = np.round(np.asarray(positions, dtype=np.float64), decimals)[groups]
    order = np.lexsort((pos[..., 1], pos[..., 0]), axis=-1)
    return np.take_along_axis(groups, order, axis=1)


def group_blocks(positions: np.ndarray, centres: np.ndarray, gridsize: int,
                 rng: np.random.Generator, step: float | None = None) -> np.ndarray:
    """Groups that are g x g blocks of adjacent grid positions, one block containing each centre.

    The layout of PtychoPINN's gridsize-g simulations (a g x g sub-grid with the scan step between
    neighbours). Among the g² blocks that contain a centre (the centre at each corner or inside),
    one that lies wholly inside the scan is drawn with ``rng``, so the members stay spatially unbiased
    around the centre. Channels are in raster order (:func:`order_channels`), so channel ``i*g + j``
    is always block row ``i``, column ``j``.

    Parameters
    ----------
    positions : (M, 2) [y, x] of a grid scan (a grid with small jitter is accepted)
    centres : (n,) int indices into ``positions``
    gridsize : g (C = g²)
    rng : numpy Generator
    step : grid step (px); default: the median distance to the nearest other position

    Returns
    -------
    (n, C) int64 indices into ``positions``

    Raises
    ------
    ValueError
        When some centre has no complete block (the positions do not form a grid).
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=np.float64)
    centres = np.asarray(centres, dtype=np.int64)
    g = int(gridsize)
    if g == 1:
        return centres[:, None].copy()
    tree = cKDTree(pos)
    if step is None:
        dist, _ = tree.query(pos, k=2)
        step = float(np.median(dist[:, 1]))
    ij = np.stack(np.meshgrid(np.arange(g), np.arange(g), indexing="ij"), axis=-1).reshape(-1, 2)
    corners = [(a, b) for a in range(g) for b in range(g)]  # the centre's place in its block
    out = np.empty((len(centres), g * g), dtype=np.int64)
    for row, c in enumerate(centres):
        for k in rng.permutation(len(corners)):
            targets = pos[c] + (ij - np.array(corners[k])) * step
            dist, idx = tree.query(targets)
            if np.all(dist < 0.3 * step):
                out[row] = idx
                break
        else:
            raise ValueError(f"group_blocks: position {int(c)} at {pos[c].tolist()} has no complete {g}x{g} "
                             f"block of neighbours {step:g} px apart; the scan is not a grid: use "
                             "data.grouping=knn")
    return order_channels(pos, out)


def group_neighbors(positions: np.ndarray, gridsize: int, n_samples: int, rng: np.random.Generator,
                    k: int = 7) -> np.ndarray:
    """``n_samples`` groups whose centres are a spatially unbiased random subset of the scan.

    Centres are drawn uniformly without replacement over the whole scan (not the first n in scan
    order); for gridsize > 1 each centre gets C-1 random neighbours among its ``k`` nearest
    (see :func:`group_around`).

    Returns
    -------
    (n_samples, gridsize²) int64 indices into ``positions``
    """
    m = int(np.asarray(positions).shape[0])
    if not 0 < n_samples <= m:
        raise ValueError(f"group_neighbors: n_samples={n_samples} must be in 1..{m} (positions in the scan)")
    centres = rng.choice(m, size=int(n_samples), replace=False).astype(np.int64)
    return group_around(positions, centres, gridsize, rng, k)


def neighbour_step(positions: np.ndarray) -> float:
    """Median distance (px) from each grouped position to its nearest group member; ``positions`` (n, C, 2)."""
    pos = np.asarray(positions, dtype=np.float64)
    d = np.linalg.norm(pos[:, :, None, :] - pos[:, None, :, :], axis=-1)
    d[:, np.arange(pos.shape[1]), np.arange(pos.shape[1])] = np.inf
    return float(np.median(d.min(axis=-1)))


def relative_offsets(positions: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Positions of each group relative to its centroid: ``positions[groups] - centroid``, (n, C, 2)."""
    grouped = np.asarray(positions, dtype=np.float64)[np.asarray(groups)]
    return grouped - grouped.mean(axis=1, keepdims=True)


# --------------------------------------------------------------------------- summary

def _bbox_area(positions: np.ndarray) -> float:
    span = positions.max(axis=0) - positions.min(axis=0)
    return float(span[0] * span[1])


def mean_nearest_neighbour_step(positions: np.ndarray) -> float:
    """Mean distance (px) from each position to its nearest other position (nan for < 2 positions)."""
    from scipy.spatial import cKDTree

    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape[0] < 2:
        return float("nan")
    dist, _ = cKDTree(pos).query(pos, k=2)
    return float(np.mean(dist[:, 1]))


def scan_summary(positions: np.ndarray, N: int, subset: np.ndarray | None = None,
                 beam_diameter: float | None = None) -> dict:
    """Geometry of a scan, and whether a subset of it is spatially local.

    Parameters
    ----------
    positions : (M, 2) [y, x]
    N : patch size (px)
    subset : optional indices of the positions actually used
    beam_diameter : optional probe diameter (px) for the beam overlap fraction

    Returns
    -------
    dict with ``n_positions``, ``extent`` ([y_min, y_max, x_min, x_max]), ``step`` (mean
    nearest-neighbour distance, px), ``patch_overlap`` (linear overlap ``1 - step/N`` of adjacent
    patches), ``beam_overlap`` (``1 - step/beam_diameter`` or None), and for a subset
    ``subset_n``, ``subset_area_fraction`` (its bounding-box area over the scan's) and
    ``spatially_local`` (that fraction < 0.5).
    """
    pos = np.asarray(positions, dtype=np.float64)
    summary: dict = {"n_positions": int(pos.shape[0])}
    if pos.shape[0] == 0:
        return summary
    step = mean_nearest_neighbour_step(pos)
    summary["extent"] = [float(pos[:, 0].min()), float(pos[:, 0].max()),
                         float(pos[:, 1].min()), float(pos[:, 1].max())]
    summary["step"] = step
    summary["patch_overlap"] = float(1.0 - step / N) if np.isfinite(step) else None
    summary["beam_overlap"] = (float(1.0 - step / beam_diameter)
                               if beam_diameter and np.isfinite(step) else None)
    if subset is not None:
        sub = pos[np.unique(np.asarray(subset, dtype=np.int64).ravel())]
        full = _bbox_area(pos)
        fraction = _bbox_area(sub) / full if full > 0 else 1.0
        summary["subset_n"] = int(sub.shape[0])
        summary["subset_area_fraction"] = float(fraction)
        summary["spatially_local"] = bool(fraction < 0.5)
    return summary
