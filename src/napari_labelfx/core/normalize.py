"""Intensity normalisation shared by training and inference (one function, so both agree)."""
from __future__ import annotations

import numpy as np

#: The one normalisation default: percentile 1 - 99.8 per channel with the robust white point
#: (:func:`robust_high`). Training records it in each model's config; prediction reads it from there.
DEFAULT_NORMALISATION: dict[str, float | bool] = {"low": 1.0, "high": 99.8, "robust": True}
#: What a model config written before robust white points existed means by its normalisation (no
#: ``"robust"`` key): the plain high percentile.
PLAIN_NORMALISATION: dict[str, float | bool] = {"low": 1.0, "high": 99.8}

#: Above this many pixels per channel, percentiles are estimated on a strided subsample.
_MAX_SAMPLES = 2_000_000
#: Robust normalisation: edge of the in-plane blocks whose own high percentiles are compared.
ROBUST_BLOCK = 64
#: Robust normalisation: the share of foreground blocks that may be brighter than the white point.
ROBUST_BLOCK_QUANTILE = 90.0
#: Robust normalisation: a block holds foreground when its high percentile is this many noise
#: standard deviations (from the median absolute deviation) above the image median.
ROBUST_FOREGROUND_SIGMAS = 6.0


def robust_high(values: np.ndarray, low: float, high: float, lo_value: float, hi_value: float) -> float:
    """A white point that a few very bright objects cannot pull up.

    The plain ``high`` percentile of the whole image moves when a small part of it (two saturated
    mitotic nuclei, a dust speck) is much brighter than everything else, and every other object then
    looks dim to the network. Here the image is cut into ``ROBUST_BLOCK``-wide in-plane blocks; each
    block's own ``high`` percentile is taken, the blocks that hold foreground (above the noise of the
    background) are kept, and the white point is the ``ROBUST_BLOCK_QUANTILE`` percentile of their
    values, never above the plain one. Bright objects in under a tenth of the foreground blocks no
    longer set the scale; sparse images (a few objects, all alike) keep the plain value.
    """
    if values.ndim < 2 or hi_value <= lo_value:
        return hi_value
    by, bx = (min(ROBUST_BLOCK, s) for s in values.shape[-2:])
    ny, nx = values.shape[-2] // by, values.shape[-1] // bx
    lead = int(np.prod(values.shape[:-2]))
    blocks = values.reshape(lead, values.shape[-2], values.shape[-1])[:, : ny * by, : nx * bx]
    blocks = blocks.reshape(lead, ny, by, nx, bx).transpose(0, 1, 3, 2, 4).reshape(lead * ny * nx, by * bx)
    finite = np.isfinite(blocks).all(axis=1)
    if not finite.any():
        return hi_value
    block_high = np.percentile(blocks[finite], high, axis=1)
    flat = values[np.isfinite(values)]
    median = float(np.median(flat))
    noise = 1.4826 * float(np.median(np.abs(flat - median)))
    foreground = block_high > median + ROBUST_FOREGROUND_SIGMAS * max(noise, 1e-6)
    if not foreground.any():
        return hi_value
    return float(min(hi_value, max(float(np.percentile(block_high[foreground], ROBUST_BLOCK_QUANTILE)),
                                   lo_value + 1e-6)))


def channel_percentiles(
    image: np.ndarray, low: float = 1.0, high: float = 99.8, robust: bool = False, *,
    require_finite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel low/high percentiles of a channels-first array ``(C, ...)``.

    Large arrays (including lazy dask/zarr arrays) are subsampled with a stride so memory stays bounded.
    ``robust`` lowers the high value where a few very bright objects would set it (see
    :func:`robust_high`); models record which one they were trained with (``"robust"`` in their
    normalisation settings). ``require_finite``: a channel without any finite value (all NaN or
    infinite) raises ValueError instead of getting the neutral (0, 1).
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
            if require_finite:
                raise ValueError(f"channel {i} of the image has no finite pixel values (all NaN or infinite)")
            lo[i], hi[i] = 0.0, 1.0
            continue
        lo[i], hi[i] = np.percentile(finite, [low, high])
        if robust:
            hi[i] = robust_high(ch, low, high, float(lo[i]), float(hi[i]))
    return lo, hi


def apply_normalisation(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Map ``lo -> 0`` and ``hi -> 1`` per channel (channels-first), as float32; no clipping."""
    image = np.asarray(image, dtype=np.float32)
    shape = (-1,) + (1,) * (image.ndim - 1)
    scale = np.maximum(hi - lo, 1e-6).reshape(shape)
    return (image - lo.reshape(shape)) / scale


def percentile_normalise(image: np.ndarray, low: float = 1.0, high: float = 99.8, robust: bool = True) -> np.ndarray:
    """Normalise a channels-first image per channel by its own percentiles (float32).

    ``robust`` (the training default): a few very bright objects do not set the white point.
    """
    lo, hi = channel_percentiles(image, low, high, robust=robust)
    return apply_normalisation(image, lo, hi)
