"""Predictions of a region of a training item while training runs (the live preview)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..annotations.kinds import TrainingItem
from ..core.device import autocast_context
from ..data.checks import known_mask
from ..inference.labels import probabilities_to_labels

#: Largest edge of a 2D preview region shown whole by default; larger images show their centre.
DEFAULT_WHOLE_MAX = 1024
DEFAULT_CENTRE = 512
#: Regions up to this many pixels (2D) / voxels (3D) are predicted in one forward pass; larger ones
#: go through the tiled sliding-window predictor.
MAX_DIRECT_2D = 1024 * 1024
MAX_DIRECT_3D = 64 * 256 * 256


class RegionError(ValueError):
    """A preview region does not fit its image."""


def default_region(item: TrainingItem, multilabel: bool = False) -> tuple[slice, ...]:
    """The whole image if it is at most 1024 x 1024, else its centre 512 x 512; volumes show their
    middle annotated slice (the middle slice when none is annotated)."""
    spatial = item.image.shape[1:]
    yx = []
    for d in spatial[-2:]:
        if max(spatial[-2:]) <= DEFAULT_WHOLE_MAX:
            yx.append(slice(0, d))
        else:
            lo = max(0, d // 2 - DEFAULT_CENTRE // 2)
            yx.append(slice(lo, min(d, lo + DEFAULT_CENTRE)))
    if len(spatial) == 2:
        return tuple(yx)
    z = spatial[0] // 2
    if item.target is not None:
        zs = np.flatnonzero(known_mask(item.target, multilabel).reshape(spatial[0], -1).any(axis=1))
        if zs.size:
            z = int(zs[zs.size // 2])
    return (slice(z, z + 1), *yx)


def normalise_region(region: Sequence[Any] | None, spatial: Sequence[int], name: str) -> tuple[slice, ...]:
    """Check a region (slices or (start, stop) pairs, one per spatial axis) and clip it to the image."""
    if len(region) != len(spatial):
        raise RegionError(f"{name}: a region needs {len(spatial)} entries (one per spatial axis), got {len(region)}")
    out = []
    for r, d in zip(region, spatial):
        if isinstance(r, slice):
            if r.step not in (None, 1):
                raise RegionError(f"{name}: region slices must have step 1, got {r}")
            start, stop = r.start, r.stop
        else:
            start, stop = r
        start = 0 if start is None else int(start)
        stop = d if stop is None else int(stop)
        start, stop = max(0, start), min(d, stop)
        if stop <= start:
            raise RegionError(f"{name}: region {tuple(region)} is empty or outside the image of shape {tuple(spatial)}")
        out.append(slice(start, stop))
    return tuple(out)


def forward_probabilities(
    model: nn.Module, x: torch.Tensor, multilabel: bool, amp: bool
) -> torch.Tensor:
    """Probabilities (B, K, *spatial) of a batch, in float32 (the caller sets eval/inference mode)."""
    with autocast_context(x.device, amp):
        out = model(x)
    logits = (out.logits if hasattr(out, "logits") else out).float()
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def predict_probabilities(
    model: nn.Module,
    image: np.ndarray,
    device: torch.device,
    multilabel: bool,
    roi_size: Sequence[int],
    amp: bool = False,
    batch_size: int = 4,
) -> np.ndarray:
    """Probabilities (K, *spatial) of a channels-first image: one pass when small, else tiled.

    The model must already be in eval mode; the caller wraps this in ``torch.inference_mode``.
    A volume ``(C, Z, Y, X)`` given to a 2D model is predicted slice by slice (methods that relabel
    whole items, e.g. ADELE, call this on volumes when training in 2D mode).
    """
    if image.ndim == 4 and getattr(getattr(model, "config", None), "spatial_dims", 3) == 2:
        planes = [predict_probabilities(model, image[:, z], device, multilabel, tuple(roi_size)[-2:], amp, batch_size)
                  for z in range(image.shape[1])]
        return np.stack(planes, axis=1)
    spatial = image.shape[1:]
    limit = MAX_DIRECT_2D if len(spatial) == 2 else MAX_DIRECT_3D
    if int(np.prod(spatial)) <= limit:
        arr = np.ascontiguousarray(image, dtype=np.float32)
        if not arr.flags.writeable:  # a shared, read-only normalised image: torch wants its own (small) copy
            arr = arr.copy()
        x = torch.from_numpy(arr)[None].to(device)
        return forward_probabilities(model, x, multilabel, amp)[0].cpu().numpy()
    from ..inference import sliding_window_predict

    return sliding_window_predict(
        model, image, roi_size=tuple(roi_size), overlap=0.25, batch_size=batch_size,
        device=device, multilabel=multilabel, amp=amp,
    )


def predict_region(
    model: nn.Module,
    item: TrainingItem,
    region: tuple[slice, ...],
    spatial_mode: str,
    patch_size: Sequence[int],
    device: torch.device,
    multilabel: bool,
    amp: bool = False,
    batch_size: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and confidence of ``model`` on ``region`` of ``item`` (eval mode, inference mode).

    Returns arrays shaped like the region (labels get a leading class axis when multi-label).
    Slices of a volume go through a 2D model one by one; a 3D model sees the region widened to at
    least its patch size along every axis for context, then cropped back.
    """
    spatial = item.image.shape[1:]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if len(spatial) == 2:
                probs = predict_probabilities(model, item.image[(slice(None), *region)], device, multilabel,
                                              patch_size, amp, batch_size)
            elif spatial_mode == "2d":
                planes = [
                    predict_probabilities(model, item.image[:, z, region[1], region[2]], device, multilabel,
                                          patch_size, amp, batch_size)
                    for z in range(region[0].start, region[0].stop)
                ]
                probs = np.stack(planes, axis=1)
            else:
                wide, inner = [], []
                for r, d, p in zip(region, spatial, patch_size):
                    size = r.stop - r.start
                    if size >= p or d <= size:
                        wide.append(r)
                        inner.append(slice(0, size))
                        continue
                    lo = max(0, min(r.start - (p - size) // 2, d - p)) if d >= p else 0
                    hi = min(d, lo + p)
                    wide.append(slice(lo, hi))
                    inner.append(slice(r.start - lo, r.start - lo + size))
                probs = predict_probabilities(model, item.image[(slice(None), *wide)], device, multilabel,
                                              patch_size, amp, batch_size)
                probs = probs[(slice(None), *inner)]
    finally:
        model.train(was_training)
    return probabilities_to_labels(probs, multilabel)


def resolve_region(
    items: Sequence[TrainingItem], image_index: int, region: Sequence[Any] | None, multilabel: bool = False,
) -> tuple[TrainingItem, tuple[slice, ...]]:
    """The item and the checked region a preview request names (None: the item's default region)."""
    if not 0 <= image_index < len(items):
        raise RegionError(f"preview image index {image_index} is out of range (0..{len(items) - 1})")
    item = items[image_index]
    if region is None:
        return item, default_region(item, multilabel)
    return item, normalise_region(region, item.image.shape[1:], f"preview of {item.name!r}")
