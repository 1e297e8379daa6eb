"""Separate objects (one id per object) from a semantic prediction, 2D or 3D.

Classes whose pixels are objects (nuclei, cells) come out of the network as one semantic mask in
which touching objects merge. :func:`objects_from_labels` splits them with the same function the
evaluation scores instances with (:func:`napari_labelfx.tools.metrics.instances_from_semantic`),
by default a watershed on the distance transform, with its seed spacing and smallest object taken
from the typical object size in the prediction itself.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_labelfx.inference.errors import InferenceError

#: Smallest object kept when the caller names none (pixels/voxels); the typical size may raise it.
MIN_OBJECT_SIZE = 10


def typical_diameter(mask: np.ndarray) -> float | None:
    """Equivalent diameter of the median connected component of a binary mask (None when empty).

    The median is robust to the few merged clusters the split is meant to separate.
    """
    comp, n = ndi.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if n == 0:
        return None
    areas = np.bincount(comp.ravel())[1:]
    area = float(np.median(areas[areas > 0]))
    if mask.ndim == 3:
        return float(2.0 * (3.0 * area / (4.0 * np.pi)) ** (1.0 / 3.0))
    return float(2.0 * np.sqrt(area / np.pi))


def objects_from_labels(
    labels: np.ndarray,
    foreground: np.ndarray | None = None,
    classes: Sequence[int] | None = None,
    split: str = "watershed",
    min_size: int | None = None,
    min_distance: int | None = None,
) -> np.ndarray:
    """Object ids (int32, 0 = none) of a class-index label image (2D or 3D).

    Parameters
    ----------
    labels : class indices (*spatial), 0 = background.
    foreground : optional per-pixel foreground probability (scores; not needed for the split).
    classes : class indices whose pixels are objects; None = every foreground class. Pixels of
        other classes get no object id.
    split : ``"watershed"`` splits touching objects, ``"none"`` keeps connected components.
    min_size : smallest object kept; None = 10 % of the typical object's area, at least 10.
    min_distance : smallest distance between two object centres; None = a quarter of the typical
        object diameter, at least 2 (as the evaluation harness does).

    Returns
    -------
    np.ndarray : int32 ids 1..n, unique across classes.
    """
    from napari_labelfx.tools.metrics import instances_from_semantic

    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InferenceError(f"objects need a 2D or 3D label image, got shape {labels.shape}")
    if classes is not None:
        keep = np.isin(labels, np.asarray(list(classes), dtype=labels.dtype))
        labels = np.where(keep, labels, 0)
    fg = labels > 0
    diameter = typical_diameter(fg)
    if diameter is None:
        return np.zeros(labels.shape, np.int32)
    if min_size is None:
        volume = (np.pi / 6.0) * diameter**3 if labels.ndim == 3 else np.pi * diameter**2 / 4.0
        min_size = max(MIN_OBJECT_SIZE, int(0.1 * volume))
    if min_distance is None:
        min_distance = max(int(diameter / 4), 2)
    inst = instances_from_semantic(labels, conf=foreground, min_size=int(min_size), split=split,
                                   min_distance=int(min_distance))
    return inst.labels.astype(np.int32, copy=False)


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """Probability of "any foreground class" (K, *spatial) -> (*spatial), for object scores."""
    probs = np.asarray(probabilities)
    if probs.shape[0] < 2:
        return probs[0]
    return probs[1:].sum(axis=0)


def object_class_indices(class_names: Sequence[str] | None, names: str | Sequence[str] | None) -> list[int] | None:
    """Class indices named by ``names`` (comma-separated text or a list); None = every foreground class.

    Raises InferenceError for a name the model does not know (the message lists its classes).
    """
    if names is None:
        return None
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not wanted:
        return None
    known = list(class_names or [])
    missing = [n for n in wanted if n not in known]
    if missing:
        raise InferenceError(f"unknown object class(es) {missing}; the model's classes are {known or 'unnamed'}")
    if any(known.index(n) == 0 for n in wanted):
        raise InferenceError(f"{known[0]!r} is the background class and cannot be an object class")
    return [known.index(n) for n in wanted]


def objects_from_prediction(prediction: object, classes: Sequence[int] | None = None, **kwargs: object) -> np.ndarray:
    """Object ids of a :class:`~napari_labelfx.inference.Prediction` (multi-label: the union of classes).

    ``kwargs`` go to :func:`objects_from_labels` (``split``, ``min_size``, ``min_distance``).
    """
    labels = np.asarray(prediction.labels)  # type: ignore[attr-defined]
    probs = np.asarray(prediction.probabilities)  # type: ignore[attr-defined]
    if labels.ndim == probs.ndim:  # multi-label (K, *spatial) 0/1: first positive class per pixel
        labels = np.argmax(np.concatenate([np.zeros_like(labels[:1]), labels], 0), 0)
        fg = probs.max(axis=0)
    else:
        fg = foreground_probability(probs)
    return objects_from_labels(labels, foreground=fg, classes=classes, **kwargs)  # type: ignore[arg-type]
