"""Crop windows that may extend past an array's border (the outside is filled with a constant)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def crop_pad(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float | int = 0) -> np.ndarray:
    """Crop the trailing ``len(start)`` axes of ``array``; parts outside the array are ``fill``.

    Parameters
    ----------
    array : array whose last ``len(start)`` axes are spatial (leading axes, e.g. channels, are kept).
    start : window start per spatial axis; may be negative.
    size : window size per spatial axis.
    fill : value of the window outside the array.

    Returns
    -------
    np.ndarray
        ``array.shape[:-n] + tuple(size)``. A view of ``array`` when the window lies inside it
        (callers that keep the result past the next change of ``array`` must copy).
    """
    n = len(start)
    if len(size) != n:
        raise ValueError(f"crop_pad: start {tuple(start)} and size {tuple(size)} differ in length")
    if array.ndim < n:
        raise ValueError(f"crop_pad: a {n}-D window does not fit an array of shape {array.shape}")
    spatial = array.shape[array.ndim - n:]
    lead = (slice(None),) * (array.ndim - n)
    inside = all(0 <= s and s + z <= d for s, z, d in zip(start, size, spatial))
    if inside:
        return array[lead + tuple(slice(s, s + z) for s, z in zip(start, size))]
    out = np.full(array.shape[: array.ndim - n] + tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for s, z, d in zip(start, size, spatial):
        lo, hi = max(s, 0), min(s + z, d)
        if hi <= lo:  # window entirely outside this axis: nothing to copy
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[lead + tuple(dst)] = array[lead + tuple(src)]
    return out
