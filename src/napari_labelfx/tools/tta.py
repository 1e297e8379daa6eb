"""Test-time augmentation: scales x flips, each prediction mapped back onto the original grid.

A view is (scale, flip axes). The image is resized by ``scale`` in its in-plane axes (Y, X; the Z
axis of volumes is left alone, it is usually sampled differently), flipped, predicted, then
un-flipped and resized back to the original size. Flips are undone exactly; the resize back uses
the same (bilinear) interpolation, so a prediction that commutes with the resize is recovered up to
interpolation error, and at scale 1 the mapping is the identity.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_FLIPS", "DEFAULT_SCALES", "TTAError", "TTAView", "tta_views", "apply_view", "undo_view",
           "predict_views"]

#: SISSI's scales.
DEFAULT_SCALES: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1, 1.2)
#: No flip, Y, X, both (in-plane axes counted from the end: -2 = Y, -1 = X).
DEFAULT_FLIPS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))


class TTAError(ValueError):
    """Unusable TTA settings or image."""


@dataclass(frozen=True)
class TTAView:
    """One augmented view: in-plane ``scale`` and flipped ``axes`` (negative spatial axes)."""

    scale: float = 1.0
    flips: tuple[int, ...] = ()


def tta_views(scales: Sequence[float] = DEFAULT_SCALES,
              flips: Sequence[Sequence[int]] | None = None) -> list[TTAView]:
    """All scale x flip combinations (``flips=None``: none, Y, X, both)."""
    if not scales:
        raise TTAError("TTA needs at least one scale")
    for s in scales:
        if not np.isfinite(s) or s <= 0:
            raise TTAError(f"TTA scales must be positive, got {s}")
    flip_sets = DEFAULT_FLIPS if flips is None else tuple(tuple(int(a) for a in f) for f in flips)
    for f in flip_sets:
        if any(a not in (-1, -2, -3) for a in f):
            raise TTAError(f"flip axes must be -1 (X), -2 (Y) or -3 (Z), got {f}")
    return [TTAView(float(s), f) for s in scales for f in flip_sets]


def all_flips(ndim: int) -> list[tuple[int, ...]]:
    """Every subset of the last ``ndim`` spatial axes (2D: 4 flips, 3D: 8)."""
    axes = tuple(range(-ndim, 0))
    return [c for k in range(ndim + 1) for c in combinations(axes, k)]


def _resize(arr: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize the in-plane axes of a (C, *spatial) array to ``size`` (bilinear, align_corners=False)."""
    spatial = arr.shape[1:]
    if tuple(spatial[-2:]) == tuple(size):
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr, np.float32))
    if arr.ndim == 3:
        out = F.interpolate(t[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    else:  # (C, Z, Y, X): treat Z slices as a batch, in-plane resize only
        c, z = arr.shape[:2]
        flat = t.permute(1, 0, 2, 3)  # (Z, C, Y, X)
        out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False).permute(1, 0, 2, 3)
    return out.numpy()


def _scaled_size(spatial: Sequence[int], scale: float) -> tuple[int, int]:
    return tuple(max(1, int(round(n * scale))) for n in spatial[-2:])  # type: ignore[return-value]


def apply_view(image: np.ndarray, view: TTAView) -> np.ndarray:
    """The augmented image (C, *spatial) of ``view``: resized, then flipped."""
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise TTAError(f"TTA expects a channels-first 2D or 3D image (C, Y, X) / (C, Z, Y, X), got {image.shape}")
    out = _resize(image, _scaled_size(image.shape[1:], view.scale)) if view.scale != 1.0 else image
    for axis in view.flips:
        if -axis > image.ndim - 1:
            raise TTAError(f"flip axis {axis} does not exist in a {image.ndim - 1}D image")
        out = np.flip(out, axis=axis)
    return np.ascontiguousarray(out, np.float32)


def undo_view(pred: np.ndarray, view: TTAView, spatial: Sequence[int]) -> np.ndarray:
    """Map a prediction (K, *view spatial) of ``view`` back onto the original grid ``spatial``."""
    out = np.asarray(pred)
    for axis in reversed(view.flips):
        out = np.flip(out, axis=axis)  # a flip is its own inverse
    out = _resize(out, tuple(spatial)[-2:]) if tuple(out.shape[-2:]) != tuple(spatial)[-2:] else out
    return np.ascontiguousarray(out, np.float32)


def predict_views(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    views: Sequence[TTAView] | None = None,
) -> np.ndarray:
    """De-augmented predictions of every view, stacked: ``(V, K, *spatial)``.

    Parameters
    ----------
    predict : ``predict(image (C, *spatial)) -> (K, *spatial)`` (e.g. class probabilities).
    image : float32 (C, Y, X) or (C, Z, Y, X).
    views : the views (None: 5 scales x 4 flips).
    """
    views = tta_views() if views is None else list(views)
    spatial = tuple(np.asarray(image).shape[1:])
    outs = [undo_view(predict(apply_view(image, v)), v, spatial) for v in views]
    return np.stack(outs)
