"""Segmentation metrics: per-class Dice/IoU and COCO-style instance AP/AR.

Semantic metrics (:class:`SemanticEvaluator`) are **pooled over the whole test set per class**:
true positives, false positives and false negatives are summed over all images first, then
``Dice = 2TP / (2TP + FP + FN)`` and ``IoU = TP / (TP + FP + FN)``. Pooling weighs every pixel the
same, so a class that is tiny in one image does not swing the result. For reference the evaluator
also reports the per-image mean, where a class absent from both the prediction and the truth of an
image is skipped for that image (it would otherwise count as a perfect 1 or an undefined 0/0).

Instance metrics (:class:`InstanceEvaluator`) follow the COCO protocol (``pycocotools`` ``COCOeval``):
predictions are sorted by score per image and at most ``max_dets`` are kept; each prediction in score
order is matched to the unmatched true instance of highest IoU that reaches the threshold (IoU >= t);
over the dataset, detections are sorted by score, precision is made monotone and sampled at 101 recall
points (0, 0.01, ..., 1). AP is the mean over IoU thresholds 0.50:0.05:0.95, AP50/AP75 single
thresholds, AR the final recall averaged over the same thresholds. Crowd regions and area ranges are not
used. ``max_dets`` defaults to 1000 because microscopy images hold far more than COCO's 100 objects; the
value used is reported with the results.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

#: COCO IoU thresholds 0.50:0.05:0.95 (rounded so that 0.75 really is 0.75).
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.linspace(0.5, 0.95, 10), 2).tolist())
#: COCO recall sampling points for interpolated precision.
COCO_RECALL_POINTS: np.ndarray = np.linspace(0.0, 1.0, 101)


class MetricsInputError(ValueError):
    """Inputs of a metric have the wrong shape or type."""


# ----------------------------------------------------------------------------------------------
# label bookkeeping


def _compact_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map the non-zero ids of ``labels`` to 1..n (0 stays 0) in O(pixels).

    Returns the compact label image (int64, flattened) and the original ids (length n, ascending).
    A lookup table indexed by id avoids the sort inside ``np.unique`` on large images.
    """
    flat = np.asarray(labels).ravel()
    if flat.size and flat.min() < 0:
        raise MetricsInputError("instance labels must be non-negative integers")
    flat = flat.astype(np.int64, copy=False)
    if flat.size == 0:
        return flat, np.zeros(0, np.int64)
    present = np.bincount(flat)
    present[0] = 0
    ids = np.flatnonzero(present)
    lut = np.zeros(present.size, np.int64)
    lut[ids] = np.arange(1, ids.size + 1)
    return lut[flat], ids


def overlap_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every (id in ``a``, id in ``b``) pair, by one ``np.bincount`` on pair codes.

    Parameters
    ----------
    a, b : int arrays of the same shape; 0 is background.

    Returns
    -------
    counts : int64 array (n_a + 1, n_b + 1); row/column 0 is background.
    ids_a, ids_b : original ids for rows/columns 1..n.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise MetricsInputError(f"label images differ in shape: {a.shape} vs {b.shape}")
    ca, ids_a = _compact_ids(a)
    cb, ids_b = _compact_ids(b)
    na, nb = ids_a.size + 1, ids_b.size + 1
    counts = np.bincount(ca * nb + cb, minlength=na * nb).reshape(na, nb)
    return counts, ids_a, ids_b


def mask_iou_matrix(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every true instance with every predicted instance (vectorised, sparse counting).

    Returns ``(iou (n_true, n_pred) float64, true_ids, pred_ids)``.
    """
    counts, ids_t, ids_p = overlap_counts(true, pred)
    inter = counts[1:, 1:].astype(np.float64)
    area_t = counts[1:, :].sum(axis=1).astype(np.float64)
    area_p = counts[:, 1:].sum(axis=0).astype(np.float64)
    union = area_t[:, None] + area_p[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou, ids_t, ids_p


def boxes_from_instances(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes of the instances of a label image (any dimensionality).

    Returns ``(boxes, ids)``: boxes is int64 ``(n, 2 * ndim)`` as ``(min_0, ..., min_d, max_0, ...,
    max_d)`` with exclusive maxima (half-open pixel boxes, so the area is the product of extents).
    """
    labels = np.asarray(labels)
    compact, ids = _compact_ids(labels)
    compact = compact.reshape(labels.shape)
    slices = ndi.find_objects(compact)
    boxes = np.zeros((ids.size, 2 * labels.ndim), np.int64)
    for i, sl in enumerate(slices):
        if sl is None:  # cannot happen for compacted ids, kept for safety
            continue
        boxes[i, : labels.ndim] = [s.start for s in sl]
        boxes[i, labels.ndim :] = [s.stop for s in sl]
    return boxes, ids


def box_iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU between two sets of half-open boxes ``(n, 2 * ndim)`` (vectorised)."""
    boxes_a = np.asarray(boxes_a, np.float64).reshape(-1, np.shape(boxes_a)[-1] if np.size(boxes_a) else 4)
    boxes_b = np.asarray(boxes_b, np.float64).reshape(-1, np.shape(boxes_b)[-1] if np.size(boxes_b) else 4)
    if boxes_a.shape[1] != boxes_b.shape[1] or boxes_a.shape[1] % 2:
        raise MetricsInputError("boxes must both be (n, 2 * ndim) with the same ndim")
    d = boxes_a.shape[1] // 2
    lo = np.maximum(boxes_a[:, None, :d], boxes_b[None, :, :d])
    hi = np.minimum(boxes_a[:, None, d:], boxes_b[None, :, d:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    vol_a = np.prod(boxes_a[:, d:] - boxes_a[:, :d], axis=-1)
    vol_b = np.prod(boxes_b[:, d:] - boxes_b[:, :d], axis=-1)
    union = vol_a[:, None] + vol_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def instance_scores(labels: np.ndarray, conf: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Score of each instance = mean confidence inside it (1.0 for all when ``conf`` is None).

    Returns ``(scores float64 (n,), ids)`` in ascending id order.
    """
    compact, ids = _compact_ids(labels)
    if conf is None:
        return np.ones(ids.size), ids
    conf = np.asarray(conf, np.float64)
    if conf.shape != np.shape(labels):
        raise MetricsInputError(f"confidence shape {conf.shape} differs from labels {np.shape(labels)}")
    sums = np.bincount(compact, weights=conf.ravel(), minlength=ids.size + 1)[1:]
    areas = np.bincount(compact, minlength=ids.size + 1)[1:]
    return sums / np.maximum(areas, 1), ids


# ----------------------------------------------------------------------------------------------
# instances from a semantic prediction


class InstanceSet(NamedTuple):
    """Instances derived from a semantic label image."""

    labels: np.ndarray  # int32 instance ids, 0 = background
    scores: np.ndarray  # float64 (n,), score of instance id i + 1
    classes: np.ndarray  # int64 (n,), class index of instance id i + 1


def instances_from_semantic(
    labels: np.ndarray,
    conf: np.ndarray | None = None,
    min_size: int = 10,
    split: str = "none",
    min_distance: int = 5,
    smooth_sigma: float = 1.0,
    background: int = 0,
) -> InstanceSet:
    """Split a semantic (class-index) label image into instances.

    Parameters
    ----------
    labels : int array (2D or 3D) of class indices; ``background`` is not an object.
    conf : optional per-pixel confidence of the same shape; an instance's score is its mean.
    min_size : instances with fewer pixels are dropped (prediction specks).
    split : ``"none"`` for plain connected components (full connectivity), ``"watershed"`` to split
        touching objects by a watershed on the distance transform from its local maxima.
    min_distance : minimum distance between watershed seeds (pixels); larger = fewer splits.
    smooth_sigma : Gaussian sigma applied to the distance transform before seed detection, so one
        ragged object does not get several seeds.
    background : the class index that is background.

    Returns
    -------
    InstanceSet (labels int32, scores, classes), ids 1..n in raster order of first pixel per class.
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise MetricsInputError(f"instances_from_semantic expects a 2D or 3D label image, got {labels.shape}")
    if split not in ("none", "watershed"):
        raise MetricsInputError(f"unknown split {split!r}: use 'none' or 'watershed'")
    out = np.zeros(labels.shape, np.int32)
    classes: list[int] = []
    structure = np.ones((3,) * labels.ndim, bool)  # full connectivity, as painters think of blobs
    next_id = 1
    for c in np.unique(labels):
        if c == background:
            continue
        mask = labels == c
        if split == "watershed":
            comp = _watershed_split(mask, min_distance, smooth_sigma)
        else:
            comp, _ = ndi.label(mask, structure=structure)
        if comp.max() == 0:
            continue
        areas = np.bincount(comp.ravel())
        keep = np.flatnonzero(areas >= max(int(min_size), 1))
        keep = keep[keep > 0]
        lut = np.zeros(areas.size, np.int64)
        lut[keep] = np.arange(next_id, next_id + keep.size)
        relabelled = lut[comp]
        out[mask] = relabelled[mask]
        classes.extend([int(c)] * keep.size)
        next_id += keep.size
    scores, _ = instance_scores(out, conf)
    if scores.size != len(classes):  # ids are consecutive by construction; guard against misuse
        raise RuntimeError("instance ids are not consecutive")
    return InstanceSet(out, scores, np.asarray(classes, np.int64))


def _watershed_split(mask: np.ndarray, min_distance: int, smooth_sigma: float) -> np.ndarray:
    """Watershed split of a binary mask on its distance transform (markers: smoothed maxima)."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    structure = np.ones((3,) * mask.ndim, bool)
    comp, n = ndi.label(mask, structure=structure)
    if n == 0:
        return comp
    dist = ndi.distance_transform_edt(mask)
    if smooth_sigma > 0:
        dist = ndi.gaussian_filter(dist, smooth_sigma) * mask
    peaks = peak_local_max(dist, min_distance=max(int(min_distance), 1), labels=comp, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    split = watershed(-dist, markers, mask=mask)
    # a component without a seed (flat or tiny) would vanish: keep it whole under a new id
    lost = mask & (split == 0)
    if lost.any():
        extra, _ = ndi.label(lost, structure=structure)
        split = np.where(lost, extra + split.max(), split)
    return split


# ----------------------------------------------------------------------------------------------
# semantic metrics


def _prf_counts(true: np.ndarray, pred: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """(k, 3) TP, FP, FN per class for class-index images (pixels where ``valid``)."""
    t = true[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    return np.stack([tp, fp, fn], axis=1)


def _dice_iou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp, fp, fn = (np.asarray(x, np.float64) for x in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
    return dice, iou


def _nanmean(x: Sequence[float]) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


@dataclass
class SemanticEvaluator:
    """Accumulates per-class Dice and IoU over images (pooled; per-image mean as a secondary view).

    Parameters
    ----------
    class_names : names of the classes. Multi-class: index 0 is background and is not part of the
        foreground means. Multi-label: one name per channel, all foreground.
    multilabel : inputs are (K, ...) 0/1 arrays instead of class-index images.
    ignore_value : truth pixels with this value are not scored (e.g. IGNORE_INDEX or 255).
    background_index : the class left out of the reports and means; default 0 for multi-class and
        none for multi-label (pass 0 when channel 0 is a derived background channel).
    """

    class_names: Sequence[str]
    multilabel: bool = False
    ignore_value: int | None = None
    background_index: int | None = -1  # -1: the default of the mode (see above)
    _counts: np.ndarray = field(init=False, repr=False)
    _per_image: list[tuple[np.ndarray, np.ndarray]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.class_names = [str(n) for n in self.class_names]
        k = len(self.class_names)
        if k < (1 if self.multilabel else 2):
            raise MetricsInputError("need at least 2 classes (background + 1) or 1 multi-label channel")
        if self.background_index == -1:
            self.background_index = None if self.multilabel else 0
        if self.background_index is not None and not 0 <= self.background_index < k:
            raise MetricsInputError(f"background_index {self.background_index} is not a class index")
        self._counts = np.zeros((k, 3), np.int64)
        self._per_image = []

    @property
    def foreground(self) -> list[int]:
        """Indices of the classes that enter the means."""
        return [c for c in range(len(self.class_names)) if c != self.background_index]

    def add(self, true: np.ndarray, pred: np.ndarray) -> None:
        """Add one image: class-index arrays, or (K, ...) 0/1 arrays when multi-label."""
        true = np.asarray(true)
        pred = np.asarray(pred)
        if true.shape != pred.shape:
            raise MetricsInputError(f"prediction shape {pred.shape} differs from truth {true.shape}")
        k = len(self.class_names)
        if self.multilabel:
            if true.shape[0] != k:
                raise MetricsInputError(f"multi-label arrays need {k} channels, got {true.shape[0]}")
            counts = np.zeros((k, 3), np.int64)
            for c in range(k):
                valid = np.ones(true.shape[1:], bool) if self.ignore_value is None else true[c] != self.ignore_value
                t = true[c][valid] > 0
                p = pred[c][valid] > 0
                counts[c] = [np.count_nonzero(t & p), np.count_nonzero(~t & p), np.count_nonzero(t & ~p)]
        else:
            valid = np.ones(true.shape, bool) if self.ignore_value is None else true != self.ignore_value
            if valid.any() and (true[valid].min() < 0 or true[valid].max() >= k):
                raise MetricsInputError(f"truth holds class indices outside 0..{k - 1}")
            if pred.size and (pred.min() < 0 or pred.max() >= k):
                raise MetricsInputError(f"prediction holds class indices outside 0..{k - 1}")
            counts = _prf_counts(true, pred, valid, k)
        self._counts += counts
        self._per_image.append(_dice_iou(counts[:, 0], counts[:, 1], counts[:, 2]))

    def summary(self) -> dict:
        """Metrics as plain data: per-class and foreground-mean Dice and IoU."""
        dice, iou = _dice_iou(self._counts[:, 0], self._counts[:, 1], self._counts[:, 2])
        fg = self.foreground
        names = self.class_names
        # per-image view: NaN marks "absent from both", skipped by the nan-mean
        if self._per_image:
            img_dice = np.stack([d for d, _ in self._per_image])
            img_iou = np.stack([i for _, i in self._per_image])
            pi_dice = [_nanmean(img_dice[:, c]) for c in range(len(names))]
            pi_iou = [_nanmean(img_iou[:, c]) for c in range(len(names))]
        else:
            pi_dice = pi_iou = [float("nan")] * len(names)
        return {
            "aggregation": "pooled over images per class",
            "n_images": len(self._per_image),
            "dice": {names[c]: float(dice[c]) for c in fg},
            "iou": {names[c]: float(iou[c]) for c in fg},
            "mean_dice": _nanmean(dice[fg]),
            "mean_iou": _nanmean(iou[fg]),
            "per_image_mean": {
                "dice": {names[c]: pi_dice[c] for c in fg},
                "iou": {names[c]: pi_iou[c] for c in fg},
                "mean_dice": _nanmean([pi_dice[c] for c in fg]),
                "mean_iou": _nanmean([pi_iou[c] for c in fg]),
            },
        }


def semantic_metrics(
    trues: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    class_names: Sequence[str],
    multilabel: bool = False,
    ignore_value: int | None = None,
    background_index: int | None = -1,
) -> dict:
    """Dice and IoU per class over a set of images (see :class:`SemanticEvaluator`)."""
    ev = SemanticEvaluator(class_names, multilabel=multilabel, ignore_value=ignore_value,
                           background_index=background_index)
    if len(trues) != len(preds):
        raise MetricsInputError(f"{len(trues)} truths but {len(preds)} predictions")
    for t, p in zip(trues, preds):
        ev.add(t, p)
    return ev.summary()


# ----------------------------------------------------------------------------------------------
# instance metrics (COCO protocol)


def match_instances(iou: np.ndarray, order: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy COCO matching at one IoU threshold.

    Parameters
    ----------
    iou : (n_true, n_pred) IoU matrix.
    order : prediction column indices in descending score order (already cut to ``max_dets``).
    threshold : a prediction matches when its IoU with an unmatched true instance is >= threshold.

    Returns
    -------
    int64 array (len(order),): matched true index per prediction in ``order``, -1 = false positive.
    """
    matched_true = np.zeros(iou.shape[0], bool)
    result = np.full(len(order), -1, np.int64)
    for k, j in enumerate(order):
        col = np.where(matched_true, -1.0, iou[:, j])
        if col.size == 0:
            continue
        # COCO's loop over ground truth keeps the LAST of equal best IoUs; mirror it exactly
        best = col.size - 1 - int(np.argmax(col[::-1]))
        if col[best] >= min(threshold, 1 - 1e-10):
            matched_true[best] = True
            result[k] = best
    return result


@dataclass
class InstanceEvaluator:
    """Accumulates COCO-style instance matches over images; :meth:`summary` gives AP/AR.

    Parameters
    ----------
    max_dets : at most this many predictions per image (highest scores) are evaluated.
    iou_type : ``"mask"`` (pixel IoU of instance masks) or ``"box"`` (IoU of their bounding boxes).
    iou_thresholds : thresholds for AP and AR (COCO 0.50:0.05:0.95 by default).
    """

    max_dets: int = 1000
    iou_type: str = "mask"
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS
    _scores: list[np.ndarray] = field(init=False, repr=False)
    _tp: list[np.ndarray] = field(init=False, repr=False)
    _n_true: int = field(init=False, default=0)
    _n_pred: int = field(init=False, default=0)
    _n_images: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.iou_type not in ("mask", "box"):
            raise MetricsInputError(f"unknown iou_type {self.iou_type!r}: use 'mask' or 'box'")
        if int(self.max_dets) < 1:
            raise MetricsInputError("max_dets must be >= 1")
        self.iou_thresholds = tuple(float(t) for t in self.iou_thresholds)
        self._scores = []
        self._tp = []

    def add(
        self,
        true: np.ndarray,
        pred: np.ndarray,
        scores: np.ndarray | None = None,
        conf: np.ndarray | None = None,
    ) -> None:
        """Add one image.

        Parameters
        ----------
        true, pred : instance label images of the same shape (0 = background).
        scores : optional score per predicted instance in ascending id order.
        conf : optional confidence map; scores are the mean confidence inside each instance.
            With neither, all scores are 1 and ties keep ascending id order.
        """
        true = np.asarray(true)
        pred = np.asarray(pred)
        if self.iou_type == "mask":
            iou, _, pred_ids = mask_iou_matrix(true, pred)
        else:
            if true.shape != pred.shape:
                raise MetricsInputError(f"label images differ in shape: {true.shape} vs {pred.shape}")
            bt, _ = boxes_from_instances(true)
            bp, pred_ids = boxes_from_instances(pred)
            iou = box_iou_matrix(bt, bp)
        if scores is None:
            s, _ = instance_scores(pred, conf)
        else:
            s = np.asarray(scores, np.float64).ravel()
            if s.size != pred_ids.size:
                raise MetricsInputError(f"{s.size} scores for {pred_ids.size} predicted instances")
        order = np.argsort(-s, kind="mergesort")[: int(self.max_dets)]
        tp = np.stack([match_instances(iou, order, t) >= 0 for t in self.iou_thresholds]) if order.size else (
            np.zeros((len(self.iou_thresholds), 0), bool)
        )
        self._scores.append(s[order])
        self._tp.append(tp)
        self._n_true += iou.shape[0]
        self._n_pred += pred_ids.size
        self._n_images += 1

    def summary(self) -> dict:
        """AP50, AP75, AP (0.50:0.95), AR, per-threshold AP and recall, counts and ``max_dets``.

        With no true instance in the whole set, AP and AR are NaN (undefined), as COCO's -1.
        """
        thresholds = self.iou_thresholds
        ap = np.full(len(thresholds), np.nan)
        rec = np.full(len(thresholds), np.nan)
        if self._n_true > 0:
            scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
            tps = np.concatenate(self._tp, axis=1) if self._tp else np.zeros((len(thresholds), 0), bool)
            order = np.argsort(-scores, kind="mergesort")
            tps = tps[:, order]
            for i in range(len(thresholds)):
                if tps.shape[1] == 0:  # no prediction at all: nothing found
                    ap[i], rec[i] = 0.0, 0.0
                    continue
                tp_cum = np.cumsum(tps[i]).astype(np.float64)
                fp_cum = np.cumsum(~tps[i]).astype(np.float64)
                recall = tp_cum / self._n_true
                precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
                rec[i] = recall[-1]
                # monotone envelope from the right, then sample at the 101 recall points
                precision = np.maximum.accumulate(precision[::-1])[::-1]
                idx = np.searchsorted(recall, COCO_RECALL_POINTS, side="left")
                q = np.where(idx < recall.size, precision[np.minimum(idx, recall.size - 1)], 0.0)
                ap[i] = q.mean()
        per_t = {f"{t:.2f}": float(a) for t, a in zip(thresholds, ap)}
        per_r = {f"{t:.2f}": float(r) for t, r in zip(thresholds, rec)}
        return {
            "AP50": _at(ap, thresholds, 0.5),
            "AP75": _at(ap, thresholds, 0.75),
            "AP": float(np.mean(ap)) if self._n_true else float("nan"),
            "AR": float(np.mean(rec)) if self._n_true else float("nan"),
            "max_dets": int(self.max_dets),
            "iou_type": self.iou_type,
            "iou_thresholds": list(thresholds),
            "ap_per_threshold": per_t,
            "recall_per_threshold": per_r,
            "n_images": self._n_images,
            "n_true": self._n_true,
            "n_pred": self._n_pred,
        }


def _at(values: np.ndarray, thresholds: Sequence[float], t: float) -> float:
    for v, th in zip(values, thresholds):
        if abs(th - t) < 1e-9:
            return float(v)
    return float("nan")


def instance_metrics(
    trues: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    confs: Sequence[np.ndarray | None] | None = None,
    max_dets: int = 1000,
    iou_type: str = "mask",
) -> dict:
    """COCO-style AP50, AP75, AP and AR over a set of images (see :class:`InstanceEvaluator`).

    ``confs`` are optional confidence maps; each predicted instance is scored by its mean confidence.
    """
    if len(trues) != len(preds):
        raise MetricsInputError(f"{len(trues)} truths but {len(preds)} predictions")
    if confs is not None and len(confs) != len(preds):
        raise MetricsInputError(f"{len(confs)} confidence maps for {len(preds)} predictions")
    ev = InstanceEvaluator(max_dets=max_dets, iou_type=iou_type)
    for i, (t, p) in enumerate(zip(trues, preds)):
        ev.add(t, p, conf=None if confs is None else confs[i])
    return ev.summary()
