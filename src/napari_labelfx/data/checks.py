"""Validate and normalise the dtypes of :class:`TrainingItem` lists before training."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..annotations.kinds import IGNORE_INDEX, MULTILABEL_IGNORE, TrainingItem
from .errors import TrainingDataError


def known_mask(target: np.ndarray, multilabel: bool) -> np.ndarray:
    """Boolean spatial mask of annotated (not ignored) pixels of a target.

    A multi-label pixel counts as annotated when at least one class channel is known there.
    """
    if multilabel:
        return (target != MULTILABEL_IGNORE).any(axis=0)
    return target != IGNORE_INDEX


def _name(item: TrainingItem, index: int) -> str:
    return f"training item {index} ({getattr(item, 'name', 'image')!r})"


def check_items(
    items: Sequence[TrainingItem],
    num_classes: int,
    multilabel: bool = False,
    mode: str = "2d",
) -> list[TrainingItem]:
    """Check shapes, dtypes and values of training items; return copies with canonical dtypes.

    Images become float32, multi-class targets int64, multi-label targets uint8, instances int32 and
    tags float32 (no copy when already so).

    Parameters
    ----------
    items : the training items.
    num_classes : classes of the model (background included for multi-class).
    multilabel : targets are (K, ...) uint8 0/1/255 instead of int64 class indices.
    mode : ``"2d"`` (2D images or slices of volumes) or ``"3d"`` (3D patches; every item a volume).

    Raises
    ------
    TrainingDataError
        With the item's index and name when anything does not fit.
    """
    if mode not in ("2d", "3d"):
        raise TrainingDataError(f"spatial mode must be '2d' or '3d', got {mode!r}")
    if not isinstance(items, Sequence) or len(items) == 0:
        raise TrainingDataError("no training items were given")
    channels: int | None = None
    out: list[TrainingItem] = []
    for i, item in enumerate(items):
        name = _name(item, i)
        image = getattr(item, "image", None)
        if not isinstance(image, np.ndarray):
            raise TrainingDataError(f"{name}: image must be a numpy array, got {type(image).__name__}")
        if image.ndim not in (3, 4):
            raise TrainingDataError(
                f"{name}: image must be (C, Y, X) or (C, Z, Y, X), got shape {image.shape}"
            )
        if mode == "3d" and image.ndim != 4:
            raise TrainingDataError(f"{name}: 3D patch training needs volumes (C, Z, Y, X), got {image.shape}")
        if not (np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer)):
            raise TrainingDataError(f"{name}: image dtype {image.dtype} is not numeric")
        image = np.asarray(image, dtype=np.float32)
        if not np.isfinite(image).all():
            raise TrainingDataError(f"{name}: image contains NaN or infinite values")
        if channels is None:
            channels = image.shape[0]
        elif image.shape[0] != channels:
            raise TrainingDataError(
                f"{name}: has {image.shape[0]} channels but the first item has {channels}; "
                "all images of one training run need the same channels"
            )
        spatial = image.shape[1:]
        target = _check_target(item.target, spatial, num_classes, multilabel, name)
        instances = item.instances
        if instances is not None:
            instances = np.asarray(instances)
            if instances.shape != spatial or not np.issubdtype(instances.dtype, np.integer):
                raise TrainingDataError(
                    f"{name}: instances must be an integer array of shape {spatial}, "
                    f"got {instances.dtype} {instances.shape}"
                )
            instances = instances.astype(np.int32, copy=False)
        tags = item.tags
        if tags is not None:
            tags = np.asarray(tags, dtype=np.float32)
            if tags.shape != (num_classes,):
                raise TrainingDataError(f"{name}: tags must have shape ({num_classes},), got {tags.shape}")
        out.append(replace(item, image=image, target=target, instances=instances, tags=tags))
    return out


def _check_target(
    target: np.ndarray | None, spatial: tuple[int, ...], num_classes: int, multilabel: bool, name: str
) -> np.ndarray | None:
    if target is None:
        return None
    target = np.asarray(target)
    if not np.issubdtype(target.dtype, np.integer):
        raise TrainingDataError(f"{name}: target must hold integers, got {target.dtype}")
    if multilabel:
        if target.shape != (num_classes, *spatial):
            raise TrainingDataError(
                f"{name}: multi-label target must have shape {(num_classes, *spatial)}, got {target.shape}"
            )
        bad = np.setdiff1d(np.unique(target), [0, 1, MULTILABEL_IGNORE])
        if bad.size:
            raise TrainingDataError(
                f"{name}: multi-label target values must be 0, 1 or {MULTILABEL_IGNORE}; found {bad[:10].tolist()}"
            )
        return target.astype(np.uint8, copy=False)
    if target.shape != spatial:
        raise TrainingDataError(f"{name}: target shape {target.shape} differs from the image's {spatial}")
    lo, hi = int(target.min()), int(target.max())
    if lo < IGNORE_INDEX or hi >= num_classes:
        raise TrainingDataError(
            f"{name}: target values must be {IGNORE_INDEX} (unknown) or class indices 0..{num_classes - 1}; "
            f"found values from {lo} to {hi}"
        )
    return target.astype(np.int64, copy=False)
