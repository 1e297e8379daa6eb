"""Tile grids and blending weights for sliding-window prediction."""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from napari_labelfx.inference.errors import InferenceError

#: Gaussian sigma as a fraction of the ROI side (the value nnU-Net and MONAI use).
GAUSSIAN_SIGMA_SCALE = 0.125


def tile_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start offsets of windows of length ``roi`` covering ``[0, size)`` with the given overlap.

    The step is ``int(roi * (1 - overlap))`` (at least 1); the last window is shifted back to end
    exactly at ``size``, so every window lies inside the (padded) image. ``size < roi`` is not
    allowed here: pad the image to ``roi`` first.
    """
    if roi < 1 or size < roi:
        raise InferenceError(f"tile_starts: need 1 <= roi <= size, got roi={roi}, size={size}")
    if not 0.0 <= overlap < 1.0:
        raise InferenceError(f"overlap must be in [0, 1), got {overlap}")
    step = max(1, int(roi * (1.0 - overlap)))
    starts = list(range(0, size - roi + 1, step))
    if starts[-1] != size - roi:
        starts.append(size - roi)
    return starts


def tile_grid(shape: Sequence[int], roi: Sequence[int], overlap: float) -> list[tuple[int, ...]]:
    """All window start tuples over ``shape``, first axis slowest (C order)."""
    return list(itertools.product(*(tile_starts(s, r, overlap) for s, r in zip(shape, roi))))


#: Floor of each 1D weight profile: a Gaussian with sigma = roi / 8 ends near exp(-8) = 3e-4 at the
#: window border, so the floor only guards against unusual sigma_scale values.
_PROFILE_FLOOR = 1e-4


def importance_profiles(
    roi: Sequence[int], mode: str = "gaussian", sigma_scale: float = GAUSSIAN_SIGMA_SCALE
) -> list[np.ndarray]:
    """1D blending weights per axis (float64); the window's weight map is their outer product.

    ``"gaussian"`` weighs the centre of a window more than its borders (where the network sees less
    context): per axis a Gaussian centred on the window with ``sigma = sigma_scale * roi``, scaled
    to max 1 and floored at 1e-4. ``"constant"`` gives every pixel weight 1 (plain averaging).
    Keeping the map separable lets the sum of weights over a tile grid be computed per axis.
    """
    if mode not in ("gaussian", "constant"):
        raise InferenceError(f"blend must be 'gaussian' or 'constant', got {mode!r}")
    profiles = []
    for r in (int(v) for v in roi):
        if mode == "constant":
            profiles.append(np.ones(r))
            continue
        x = np.arange(r, dtype=np.float64) - (r - 1) / 2.0  # symmetric: invariant under flips
        g = np.exp(-0.5 * (x / max(sigma_scale * r, 1e-6)) ** 2)
        profiles.append(np.maximum(g / g.max(), _PROFILE_FLOOR))
    return profiles


def importance_map(roi: Sequence[int], mode: str = "gaussian", sigma_scale: float = GAUSSIAN_SIGMA_SCALE) -> np.ndarray:
    """Blending weights of one window, float32 of shape ``roi`` (see :func:`importance_profiles`)."""
    weights = np.ones((), np.float64)
    for profile in importance_profiles(roi, mode, sigma_scale):
        weights = np.multiply.outer(weights, profile)
    return weights.astype(np.float32)


def weight_sums(size: int, roi: int, starts: Sequence[int], profile: np.ndarray) -> np.ndarray:
    """Sum over windows of the 1D profile at each position of an axis of length ``size``.

    Because the tile grid is a Cartesian product and the weight map is an outer product, the total
    weight a pixel receives is the product of these per-axis sums.
    """
    total = np.zeros(size, np.float64)
    for s in starts:
        total[s : s + roi] += profile
    return total
