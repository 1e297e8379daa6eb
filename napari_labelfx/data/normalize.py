"""Intensity normalisation shared by training and inference (one function, so both agree)."""
from __future__ import annotations

import numpy as np

#: Above this many pixels per channel, percentiles are estimated on a strided subsample.
_MAX_SAMPLES = 2_000_000


def channel_percentiles(
    image: np.ndarray, low: float = 1.0, high: float = 99.8
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel low/high percentiles of a channels-first array ``(C, ...)``.

    Large arrays (including lazy dask/zarr arrays) are subsampled with a stride so memory stays bounded.
    """
    c = image.shape[0]
    lo = np.empty(c, np.float32)
    hi = np.empty(c, np.float32)
    for i in range(c):
        ch = image[i]
        n = int(np.prod(ch.shape))
        if n > _MAX_SAMPLES:
            # stride along the first axis only keeps memory bounded for volumes, and the last axes for 2D
            step = int(np.ceil((n / _MAX_SAMPLES) ** (1.0 / ch.ndim)))
            ch = ch[tuple(slice(None, None, step) for _ in range(ch.ndim))]
        ch = np.asarray(ch, dtype=np.float32)
        finite = ch[np.isfinite(ch)]
        if finite.size == 0:
            lo[i], hi[i] = 0.0, 1.0
            continue
        lo[i], hi[i] = np.percentile(finite, [low, high])
    return lo, hi


def apply_normalisation(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Map ``lo -> 0`` and ``hi -> 1`` per channel (channels-first), as float32; no clipping."""
    image = np.asarray(image, dtype=np.float32)
    shape = (-1,) + (1,) * (image.ndim - 1)
    scale = np.maximum(hi - lo, 1e-6).reshape(shape)
    return (image - lo.reshape(shape)) / scale


def percentile_normalise(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Normalise a channels-first image per channel by its own percentiles (float32)."""
    lo, hi = channel_percentiles(image, low, high)
    return apply_normalisation(image, lo, hi)
