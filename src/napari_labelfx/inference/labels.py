"""From class probabilities to label images and a per-pixel confidence."""
from __future__ import annotations

import numpy as np


def labels_dtype(num_classes: int) -> np.dtype:
    """Smallest unsigned type holding class indices ``0 .. num_classes-1`` (uint8 or uint16)."""
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


def probabilities_to_labels(
    probs: np.ndarray, multilabel: bool = False, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and confidence from probabilities ``(K, *spatial)``.

    Multi-class: labels = argmax class index (uint8/uint16), confidence = the winning probability.
    Multi-label: labels = ``probs >= threshold`` per class as uint8 ``(K, *spatial)``, confidence =
    the certainty of the least certain class, ``min_k max(p_k, 1 - p_k)``, in [0.5, 1].
    """
    probs = np.asarray(probs, dtype=np.float32)
    if multilabel:
        labels = (probs >= threshold).astype(np.uint8)
        confidence = np.maximum(probs, 1.0 - probs).min(axis=0)
        return labels, confidence.astype(np.float32, copy=False)
    labels = np.empty(probs.shape[1:], labels_dtype(probs.shape[0]))
    confidence = np.empty(probs.shape[1:], np.float32)
    # one row at a time: argmax returns int64, 8 bytes per pixel, a large temporary for a volume
    for i in range(probs.shape[1]) if probs.ndim > 1 else ():
        labels[i] = probs[:, i].argmax(axis=0)
        confidence[i] = probs[:, i].max(axis=0)
    return labels, confidence
